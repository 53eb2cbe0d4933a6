import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The service's own process, started by the sidecar: it inherits the sidecar's standard streams and environment,
/// gets the signals the sidecar passes on, and its exit status becomes the sidecar's.
///
/// Started with `posix_spawn`, every signal back to its default and none blocked: the sidecar itself ignores and
/// traps SIGTERM, SIGINT, SIGHUP and SIGUSR1/2 (to handle them), and a child would otherwise inherit that and never
/// see the signals passed on to it.
final class SupervisedChild: Sendable {
    let pid: Int32
    private let exit = ExitState()

    /// Starts `command` (its first element found on the PATH unless it holds a '/').
    init(command: [String]) throws(SidecarError) {
        guard let program = command.first, !program.isEmpty else { throw SidecarError("the command after -- is empty") }
        guard let path = Self.find(program) else {
            throw SidecarError("'\(program)' is not an executable file, nor one on the PATH")
        }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let arguments = ([path] + command.dropFirst()).map { strdup($0) } + [nil]
        defer { for argument in arguments { free(argument) } }
        var child: pid_t = 0
        let result = posix_spawn(&child, path, nil, &attributes, arguments, environ)
        guard result == 0 else {
            throw SidecarError("could not start '\(path)': \(String(cString: strerror(result)))")
        }
        pid = child
        // The wait blocks a Dispatch thread, not the concurrency pool, for the child's life.
        DispatchQueue.global().async { [exit, pid] in
            var status: Int32 = 0
            while waitpid(pid, &status, 0) == -1, errno == EINTR {}
            // Killed by a signal: 128 + the signal, as a shell reports it.
            let code = status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            let waiters = exit.state.withLock { state in
                state.status = code
                defer { state.waiters = [:] }
                return Array(state.waiters.values)
            }
            for waiter in waiters { waiter.resume(returning: code) }
        }
    }

    /// The exit status once the child has exited, without waiting.
    var exitStatus: Int32? { exit.state.withLock { $0.status } }

    /// Waits for the child to exit and returns its status; nil when the waiting task is cancelled first.
    func exited() async -> Int32? {
        let ticket = exit.state.withLock { state -> Int in
            state.next += 1
            return state.next
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Int32?, Never>) in
                let ready: Int32?? = exit.state.withLock { state in
                    if let status = state.status { return .some(status) }
                    if Task.isCancelled { return .some(nil) }
                    state.waiters[ticket] = continuation
                    return .none
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            exit.state.withLock { $0.waiters.removeValue(forKey: ticket) }?.resume(returning: nil)
        }
    }

    /// Sends `signal` to the child while it runs.
    func send(_ signal: Int32) {
        guard exitStatus == nil else { return }
        kill(pid, signal)
    }

    /// SIGTERM, then SIGKILL if the child has not exited within `timeout`; returns its exit status.
    func stop(timeout: Duration) async -> Int32 {
        send(SIGTERM)
        let status = await withTaskGroup(of: Int32?.self) { group in
            group.addTask { await self.exited() }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        if let status { return status }
        send(SIGKILL)
        return await exited() ?? 128 + SIGKILL
    }

    static func find(_ program: String) -> String? {
        if program.contains("/") { return FileManager.default.isExecutableFile(atPath: program) ? program : nil }
        let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin")
            .split(separator: ":")
        return directories.map { "\($0)/\(program)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

/// The child's exit status once known, and the tasks waiting for it.
private final class ExitState: Sendable {
    let state = Mutex<(status: Int32?, waiters: [Int: CheckedContinuation<Int32?, Never>], next: Int)>((nil, [:], 0))
}

/// A sidecar that cannot do its job, with a message naming what to fix.
public struct SidecarError: Error, CustomStringConvertible, Sendable {
    public var description: String

    public init(_ description: String) { self.description = description }
}

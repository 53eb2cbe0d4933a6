import Dispatch
import Foundation
import ProcessSupport
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The demo's child processes: started from this same executable, their output in log files, all ended when the
/// demo ends (and, through ``ParentWatch``, when it dies). Foundation's `Process` reaps each child; a child is
/// signalled only while it runs, so a recycled process id is never hit.
final class ChildProcesses: Sendable {
    struct Child: @unchecked Sendable {
        var name: String
        var process: Process
    }

    private let children = Mutex<[Child]>([])
    /// Variables every child started from now on gets (the shop's ACL token).
    let environment = Mutex<[String: String]>([:])
    private let executable: String
    private let logDirectory: String

    init(logDirectory: String) {
        // /proc/self/exe: the binary itself, whatever the working directory or the way it was started.
        executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        self.logDirectory = logDirectory
    }

    /// Starts `switchboard <arguments>` (or another `executable` found on the PATH, such as `etcd`); with
    /// `readsPort`, waits (up to 30 s) for its `listening PORT` line and returns the port.
    func start(
        _ name: String, _ arguments: [String], readsPort: Bool, executable other: String? = nil
    ) async throws -> (pid: Int32, port: Int?) {
        let process = Process()
        if let other {
            guard let path = Self.find(other) else {
                throw DemoError("\(other) is not on the PATH")
            }
            process.executableURL = URL(fileURLWithPath: path)
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
        }
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment.merge(ParentWatch.asChild) { $1 }
        environment.merge(self.environment.withLock { $0 }) { $1 }
        process.environment = environment
        let log = "\(logDirectory)/\(name).log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let logHandle = FileHandle(forWritingAtPath: log)
        process.standardError = logHandle
        let output = Pipe()
        process.standardOutput = readsPort ? output : logHandle
        try process.run()
        let pid = process.processIdentifier
        children.withLock { $0.append(Child(name: name, process: process)) }
        guard readsPort else { return (pid, nil) }
        let reader = output.fileHandleForReading
        // The blocking read runs on a Dispatch thread, not on the concurrency pool; a child that dies closes the
        // pipe and ends it.
        let line = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var line = Data()
                while let byte = try? reader.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8) { line += byte }
                continuation.resume(returning: String(decoding: line, as: UTF8.self))
            }
        }
        guard line.hasPrefix("listening "), let port = Int(line.dropFirst("listening ".count)) else {
            if process.isRunning { kill(pid, SIGKILL) }
            throw DemoError("\(name) did not start (see \(log)): '\(line)'")
        }
        return (pid, port)
    }

    /// `program`'s path on the PATH.
    static func find(_ program: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(program)" }.first {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    private func take(_ name: String) -> Child? {
        children.withLock { children in
            guard let index = children.firstIndex(where: { $0.name == name }) else { return nil }
            return children.remove(at: index)
        }
    }

    /// Kills the child called `name` at once, as a crash would.
    func crash(_ name: String) {
        guard let child = take(name), child.process.isRunning else { return }
        kill(child.process.processIdentifier, SIGKILL)
    }

    /// Stops the child called `name` (SIGTERM, SIGKILL after 5 s) and returns once it has exited.
    func stop(_ name: String) async {
        guard let child = take(name) else { return }
        await Self.end([child], grace: .seconds(5))
    }

    /// Ends every child: SIGTERM, a moment to drain, then SIGKILL for any still there.
    func stopAll(grace: Duration = .seconds(2)) async {
        let all = children.withLock { children in
            defer { children = [] }
            return children
        }
        await Self.end(all, grace: grace)
    }

    private static func end(_ children: [Child], grace: Duration) async {
        for child in children where child.process.isRunning { kill(child.process.processIdentifier, SIGTERM) }
        let deadline = ContinuousClock.now + grace
        while children.contains(where: { $0.process.isRunning }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        for child in children where child.process.isRunning { kill(child.process.processIdentifier, SIGKILL) }
        while children.contains(where: { $0.process.isRunning }) { try? await Task.sleep(for: .milliseconds(20)) }
    }

    /// Kills every child at once (Ctrl-C).
    func killAll() {
        for child in children.withLock({ $0 }) where child.process.isRunning {
            kill(child.process.processIdentifier, SIGKILL)
        }
    }
}

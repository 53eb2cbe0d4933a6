import Dispatch
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Ties a process started by `switchboard demo` to the demo: when the demo is gone (ended, interrupted, or
/// killed with -9), the process exits too, so no orphan is left serving.
public enum ParentWatch {
    /// The variable the demo sets on its children: its own process id.
    public static let variable = "SWITCHBOARD_DEMO_PARENT"

    /// Starts watching when this process was started by a demo: every 200 ms, a parent that is no longer the demo
    /// (the process was handed to init) ends this process.
    public static func startIfAsked() {
        guard let text = ProcessInfo.processInfo.environment[variable], let parent = Int32(text) else { return }
        guard getppid() == parent else { exit(3) }
        // A thread for the life of the process: it only sleeps and looks.
        Thread.detachNewThread {
            while getppid() == parent { usleep(200_000) }
            _exit(3)
        }
    }
}

/// The demo's child processes: started from this same executable, their output in log files, all ended when the
/// demo ends (and, through ``ParentWatch``, when it dies).
final class ChildProcesses: Sendable {
    struct Child: Sendable {
        var name: String
        var pid: Int32
    }

    private let children = Mutex<[Child]>([])
    private let executable: String
    private let logDirectory: String

    init(logDirectory: String) {
        // /proc/self/exe: the binary itself, whatever the working directory or the way it was started.
        executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        self.logDirectory = logDirectory
    }

    /// Starts `switchboard <arguments>`; with `readsPort`, waits for its `listening PORT` line and returns the port.
    func start(_ name: String, _ arguments: [String], readsPort: Bool) async throws -> (pid: Int32, port: Int?) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment[ParentWatch.variable] = String(getpid())
        process.environment = environment
        let log = "\(logDirectory)/\(name).log"
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let logHandle = FileHandle(forWritingAtPath: log)
        process.standardError = logHandle
        let output = Pipe()
        process.standardOutput = readsPort ? output : logHandle
        try process.run()
        let pid = process.processIdentifier
        children.withLock { $0.append(Child(name: name, pid: pid)) }
        guard readsPort else { return (pid, nil) }
        let reader = output.fileHandleForReading
        let line = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var line = Data()
                while let byte = try? reader.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8) { line += byte }
                continuation.resume(returning: String(decoding: line, as: UTF8.self))
            }
        }
        guard line.hasPrefix("listening "), let port = Int(line.dropFirst("listening ".count)) else {
            kill(pid, SIGKILL)
            throw DemoError("\(name) did not start (see \(log)): '\(line)'")
        }
        return (pid, port)
    }

    /// Sends `signal` to the child called `name`; it is forgotten once it is killed.
    func signal(_ name: String, _ signal: Int32) {
        let child = children.withLock { children in children.first { $0.name == name } }
        guard let child else { return }
        kill(child.pid, signal)
        if signal == SIGKILL || signal == SIGTERM {
            var status: Int32 = 0
            if signal == SIGKILL { waitpid(child.pid, &status, 0) }
            children.withLock { $0.removeAll { $0.pid == child.pid } }
        }
    }

    /// Ends every child: SIGTERM, a moment to drain, then SIGKILL for any still there.
    func stopAll(grace: Duration = .seconds(2)) {
        let all = children.withLock { children in
            defer { children = [] }
            return children
        }
        for child in all { kill(child.pid, SIGTERM) }
        let deadline = ContinuousClock.now + grace
        for child in all {
            var status: Int32 = 0
            while waitpid(child.pid, &status, WNOHANG) == 0 {
                if ContinuousClock.now >= deadline {
                    kill(child.pid, SIGKILL)
                    waitpid(child.pid, &status, 0)
                    break
                }
                usleep(20_000)
            }
        }
    }

    /// Kills every child at once (from a signal handler's queue).
    func killAll() {
        let all = children.withLock { $0 }
        for child in all { kill(child.pid, SIGKILL) }
    }
}

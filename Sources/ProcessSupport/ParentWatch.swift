import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Ties a process to the one that started it: when the starter is gone (ended, interrupted, or killed with -9),
/// this process exits too, so no orphan is left serving. `switchboard demo` sets it on its children, and the tests
/// on the agents and backends they start.
public enum ParentWatch {
    /// The variable a starter sets on its children: its own process id.
    public static let variable = "SWITCHBOARD_PARENT_PID"

    /// The environment a child gets so that it ends with this process.
    public static var asChild: [String: String] { [variable: String(getpid())] }

    /// Starts watching when the variable is set: every 200 ms, a parent that is no longer the starter (the process
    /// was handed to init) ends this process at once (`_exit`: no exit handlers racing threads still running).
    public static func startIfAsked() {
        guard let text = ProcessInfo.processInfo.environment[variable], let parent = Int32(text) else { return }
        guard getppid() == parent else { _exit(3) }
        // A thread for the life of the process: it only sleeps and looks.
        Thread.detachNewThread {
            while getppid() == parent { usleep(200_000) }
            _exit(3)
        }
    }
}

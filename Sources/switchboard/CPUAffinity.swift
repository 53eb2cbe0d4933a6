import Foundation
import NIOCore

/// How many cores this process may run on: its scheduler affinity (a `taskset` narrows it), which SwiftNIO's own
/// count does not follow. More event-loop threads than cores only makes them take turns.
enum CPUAffinity {
    /// The cores in `Cpus_allowed` of /proc/self/status (Linux); SwiftNIO's count elsewhere or when unreadable.
    static func usableCores() -> Int {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
            let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") })
        else { return System.coreCount }
        let mask = line.dropFirst("Cpus_allowed:".count).filter { $0.isHexDigit }
        let count = mask.reduce(0) { $0 + (Int(String($1), radix: 16) ?? 0).nonzeroBitCount }
        return count > 0 ? count : System.coreCount
    }

    /// Sizes SwiftNIO's shared event-loop group: `threads` when given, else one per usable core. Call it before
    /// anything creates the group: its size is fixed when it starts.
    static func sizeSharedEventLoops(_ threads: Int?) {
        NIOSingletons.groupLoopCountSuggestion = threads ?? usableCores()
    }
}

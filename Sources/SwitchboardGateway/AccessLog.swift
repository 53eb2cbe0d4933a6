import Foundation
import NIOCore
import NIOPosix
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One JSON line per request, written in batches off the event loops.
///
/// Lines gather in memory and a task writes them out every 100 ms; a destination that cannot keep up loses lines
/// (counted, and reported in the next batch) rather than slowing the proxy. No secrets: the path is logged
/// without its query, and no header values but the request id.
final class AccessLog: Sendable {
    /// What one request's line says.
    struct Line {
        var requestID: String
        var traceID: String
        var clientIP: String?
        var user: String?
        var method: String
        var target: String
        var status: Int
        var duration: TimeAmount
        /// Until the instance's response head arrived.
        var upstreamDuration: TimeAmount?
        var route: String?
        var service: String?
        var instance: String?
        /// `HIT` or `MISS` on a cached route.
        var cache: String?
        var rateLimitRemaining: Int?

        func write(to json: inout JSONText, at time: timespec) {
            json.append(#"{"time":"#)
            json.appendString(Self.timestamp(time))
            json.append(#","requestId":"#)
            json.appendString(requestID)
            json.append(#","traceId":"#)
            json.appendString(traceID)
            json.append(#","clientIp":"#)
            appendOptional(clientIP, to: &json)
            json.append(#","user":"#)
            appendOptional(user, to: &json)
            json.append(#","method":"#)
            json.appendString(method)
            json.append(#","path":"#)
            json.appendString(String(target.prefix { $0 != "?" }))
            json.append(#","status":\#(status),"durationMs":\#(Self.milliseconds(duration))"#)
            json.append(#","upstreamMs":"#)
            json.append(upstreamDuration.map(Self.milliseconds) ?? "null")
            json.append(#","route":"#)
            appendOptional(route, to: &json)
            json.append(#","service":"#)
            appendOptional(service, to: &json)
            json.append(#","upstream":"#)
            appendOptional(instance, to: &json)
            json.append(#","cache":"#)
            appendOptional(cache, to: &json)
            json.append(#","rateLimitRemaining":"#)
            json.append(rateLimitRemaining.map(String.init) ?? "null")
            json.append("}\n")
        }

        private func appendOptional(_ text: String?, to json: inout JSONText) {
            if let text { json.appendString(text) } else { json.append("null") }
        }

        private static func milliseconds(_ amount: TimeAmount) -> String {
            let micros = amount.nanoseconds / 1000
            let fraction = String(micros % 1000)
            return "\(micros / 1000)." + String(repeating: "0", count: 3 - fraction.count) + fraction
        }

        /// `2026-11-23T17:03:08.123Z`.
        static func timestamp(_ time: timespec) -> String {
            var seconds = time.tv_sec
            var parts = tm()
            gmtime_r(&seconds, &parts)
            func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
            let millis = Int(time.tv_nsec / 1_000_000)
            let fraction = millis < 10 ? "00\(millis)" : millis < 100 ? "0\(millis)" : "\(millis)"
            return "\(parts.tm_year + 1900)-\(two(parts.tm_mon + 1))-\(two(parts.tm_mday))T\(two(parts.tm_hour)):"
                + "\(two(parts.tm_min)):\(two(parts.tm_sec)).\(fraction)Z"
        }
    }

    private struct Pending {
        var bytes: [UInt8] = []
        var dropped = 0
    }

    private let pending = Mutex(Pending())
    private let handle: FileHandle
    /// Lines waiting beyond this are dropped.
    private static let pendingLimit = 8 << 20

    /// Lines to `handle` (standard output, or a file opened for appending).
    init(handle: FileHandle) {
        self.handle = handle
    }

    /// A log appending to the file at `path`, created if missing.
    static func appending(to path: String) throws -> AccessLog {
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw GatewayConfigurationError(field: "--access-log", message: "cannot create \(path)")
            }
        }
        guard let handle = FileHandle(forWritingAtPath: path) else {
            throw GatewayConfigurationError(field: "--access-log", message: "cannot open \(path) for writing")
        }
        handle.seekToEndOfFile()
        return AccessLog(handle: handle)
    }

    func record(_ line: Line) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var json = JSONText()
        line.write(to: &json, at: now)
        pending.withLock { pending in
            if pending.bytes.count + json.bytes.count > Self.pendingLimit {
                pending.dropped += 1
            } else {
                pending.bytes += json.bytes
            }
        }
    }

    /// Writes the gathered lines out until cancelled, then once more. The writes block (a slow pipe, a full disk),
    /// so they run on NIO's blocking-IO threads, never on Swift's shared pool.
    func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(100))
            try? await NIOThreadPool.singleton.runIfActive { self.flush() }
        }
        // The last lines at shutdown, here: a cancelled task gets no thread from the pool.
        flush()
    }

    func flush() {
        let (bytes, dropped) = pending.withLock { pending in
            defer { pending = Pending() }
            return (pending.bytes, pending.dropped)
        }
        var out = bytes
        if dropped > 0 {
            out += Array(#"{"accessLogDropped":\#(dropped)}"#.utf8) + [0x0A]
        }
        guard !out.isEmpty else { return }
        try? handle.write(contentsOf: out)
    }
}

import Foundation
import NIOHTTP1
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A real HTTP backend for health checks (`Tests/Fixtures/health_backend.py`), run as a child process.
///
/// `/health` answers 200 until failures are queued with `/fail?count=N&status=S`; `/stats` counts the answers. The
/// process is killed with SIGKILL when the test is done with it, whatever happened.
final class BackendProcess: @unchecked Sendable {
    let process = Process()
    let port: Int

    init() throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/health_backend.py").path
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", script]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        // The script prints its port once bound; read up to the newline.
        var line = Data()
        while let byte = try output.fileHandleForReading.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8) {
            line += byte
        }
        guard let port = Int(String(decoding: line, as: UTF8.self)) else {
            kill(process.processIdentifier, SIGKILL)
            throw TestFailure("the backend did not report its port")
        }
        self.port = port
    }

    deinit { killNow() }

    var healthURL: String { "http://127.0.0.1:\(port)/health" }

    /// SIGKILL, as a crash: no goodbye on any connection.
    func killNow() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// Queues `count` failing answers with `status` on `/health`.
    func fail(count: Int, status: Int = 500) async throws {
        _ = try await http(.GET, "http://127.0.0.1:\(port)/fail?count=\(count)&status=\(status)")
    }

    /// How many `/health` answers were failures so far.
    func failedAnswers() async throws -> Int {
        let text = try await http(.GET, "http://127.0.0.1:\(port)/stats").text
        return Int(text.split(separator: "=").last ?? "") ?? -1
    }
}

/// Polls `condition` every `interval` until it holds, and returns how long that took; throws after `timeout`.
@discardableResult
func waitUntil(
    timeout: Duration, interval: Duration = .milliseconds(5), _ what: String,
    _ condition: () async throws -> Bool
) async throws -> Duration {
    let start = ContinuousClock.now
    while ContinuousClock.now - start < timeout {
        if try await condition() { return ContinuousClock.now - start }
        try await Task.sleep(for: interval)
    }
    throw TestFailure("\(what) did not happen within \(timeout)")
}

/// The A records `dig` (a real resolver client) gets for `name` from the agent's DNS on `port`, sorted.
func digAddresses(_ port: Int, _ name: String) async throws -> [String] {
    let path = ["/usr/bin/dig", "/bin/dig"].first { FileManager.default.isExecutableFile(atPath: $0) }
    guard let path else {
        throw TestFailure("dig is not installed: `apt-get install dnsutils` (.ci/run installs it)")
    }
    let result = try await runProgram(
        path, ["@127.0.0.1", "-p", "\(port)", "+time=2", "+tries=3", "+short", name, "A"])
    return result.stdout.split(separator: "\n").map(String.init).sorted()
}

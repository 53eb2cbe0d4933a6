import AsyncHTTPClient
import Foundation
import NIOCore
import SwitchboardTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A `switchboard-example backend` child process: an HTTP backend that registers itself through the client
/// library. Killed with SIGKILL when the test is done with it, whatever happened.
final class ExampleBackend: @unchecked Sendable {
    let process = Process()
    let port: Int

    init(
        agents: [String], service: String = "order", ttlMilliseconds: Int = 1000, drainMilliseconds: Int = 800
    )
        async throws
    {
        process.executableURL = URL(fileURLWithPath: SwitchboardBinary.executable(named: "switchboard-example"))
        process.arguments =
            [
                "backend", "--service", service, "--ttl-milliseconds", "\(ttlMilliseconds)", "--drain-milliseconds",
                "\(drainMilliseconds)",
            ] + agents.flatMap { ["--agent", $0] }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        // It prints "listening PORT" once bound. The read blocks, so it runs on a Dispatch thread: on the
        // concurrency pool (two threads here) a few of them at once would starve every other test.
        let reader = output.fileHandleForReading
        let text = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var line = Data()
                while let byte = try? reader.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8) {
                    line += byte
                }
                continuation.resume(returning: String(decoding: line, as: UTF8.self))
            }
        }
        guard text.hasPrefix("listening "), let port = Int(text.dropFirst("listening ".count)) else {
            kill(process.processIdentifier, SIGKILL)
            throw TestFailure("the example backend did not report its port: '\(text)'")
        }
        self.port = port
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// The calls it has answered, by its own count.
    func answeredCalls() async throws -> Int {
        let response = try await HTTPClient.shared.execute(
            HTTPClientRequest(url: "http://127.0.0.1:\(port)/count"), timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 1024)
        return Int(String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// Sends `signal` and waits for the process to end.
    func stop(with signal: Int32) async {
        kill(process.processIdentifier, signal)
        while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
    }
}

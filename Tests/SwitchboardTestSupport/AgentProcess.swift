import Foundation
import ProcessSupport
import SwitchboardCore

#if canImport(Glibc)
import Glibc
#endif

/// The built `switchboard` executable, run as a separate process the way users run it.
///
/// Found next to the test bundle (SwiftPM puts both in the same build folder) unless `SWITCHBOARD_BINARY` names it.
public enum SwitchboardBinary {
    public static var path: String {
        if let path = ProcessInfo.processInfo.environment["SWITCHBOARD_BINARY"] { return path }
        return executable(named: "switchboard")
    }

    /// The built executable `name` of this package, found next to the test bundle.
    public static func executable(named name: String) -> String {
        let testBundle = URL(fileURLWithPath: CommandLine.arguments[0])
        var directory = testBundle.deletingLastPathComponent()
        // On some platforms the runner is inside the bundle (…/x.xctest/Contents/MacOS/x).
        while !FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent(name).path),
            directory.path != "/"
        {
            directory.deleteLastPathComponent()
        }
        return directory.appendingPathComponent(name).path
    }

    /// Runs a client command to completion and returns its exit status and output.
    /// A command still running after `timeout` is killed, so a test can fail but never hang.
    public static func run(
        _ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(60)
    )
        async throws -> (status: Int32, stdout: String, stderr: String)
    {
        try await runProgram(path, arguments, environment: environment, timeout: timeout)
    }
}

/// Runs a program to completion and returns its exit status and output; one still running after `timeout` is
/// killed, so a test can fail but never hang.
public func runProgram(
    _ executable: String, _ arguments: [String], environment: [String: String] = [:],
    timeout: Duration = .seconds(60)
) async throws -> (status: Int32, stdout: String, stderr: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    let watchdog = Task {
        try await Task.sleep(for: timeout)
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
    defer { watchdog.cancel() }
    // Read both pipes before waiting, so a chatty child never blocks on a full pipe. The blocking reads and the
    // wait run on Dispatch threads: on the concurrency pool (two threads here) two commands at once would take
    // every thread and starve the watchdog.
    async let stdout = blockingCall { out.fileHandleForReading.readDataToEndOfFile() }
    async let stderr = blockingCall { err.fileHandleForReading.readDataToEndOfFile() }
    let (outData, errData) = await (stdout, stderr)
    await blockingCall { process.waitUntilExit() }
    return (
        process.terminationStatus, String(decoding: outData, as: UTF8.self),
        String(decoding: errData, as: UTF8.self)
    )
}

/// Runs a blocking call on a Dispatch thread, off the concurrency pool.
private func blockingCall<T: Sendable>(_ call: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async { continuation.resume(returning: call()) }
    }
}

/// A `switchboard agent` child process; stopped (SIGKILL) when the test is done with it, whatever happened.
public final class AgentProcess: @unchecked Sendable {
    public let process = Process()
    public let logPath: String
    public private(set) var baseURL = ""
    /// The DNS port (UDP and TCP); nil when DNS is off.
    public private(set) var dnsPort: Int?

    /// Starts the agent on a free port with `dataDirectory` and waits until it listens.
    /// `httpAddress` with port 0 picks a free port; a fixed one lets a test restart the agent where clients expect it.
    /// DNS listens on `dnsAddress` (a free port by default; nil: off).
    public init(
        dataDirectory: String?, httpAddress: String = "127.0.0.1:0", dnsAddress: String? = "127.0.0.1:0",
        extraArguments: [String] = []
    ) async throws {
        logPath = FileManager.default.temporaryDirectory.appendingPathComponent("agent-\(UUID().uuidString).log").path
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: SwitchboardBinary.path)
        var arguments = ["agent", "--http-addr", httpAddress, "--log-format", "json"]
        arguments += dnsAddress.map { ["--dns-addr", $0] } ?? ["--dns-disable"]
        if let dataDirectory {
            arguments += ["--data-dir", dataDirectory]
        } else {
            arguments.append("--dev")
        }
        process.arguments = arguments + extraArguments
        process.environment = ProcessInfo.processInfo.environment.merging(ParentWatch.asChild) { $1 }
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: logPath)
        try process.run()
        baseURL = "http://\(try await waitForLogged("agent listening"))"
        if dnsAddress != nil {
            dnsPort = Int(try await waitForLogged("DNS listening").split(separator: ":").last ?? "")
        }
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        try? FileManager.default.removeItem(atPath: logPath)
    }

    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// The `address` of the first log entry whose message is `message` (such as "Consul API listening"), waiting
    /// up to 60 s for it.
    public func waitForLogged(_ message: String) async throws -> String {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            for line in log.split(separator: "\n") {
                guard let data = line.data(using: .utf8),
                    let entry = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                    entry["message"] as? String == message,
                    let address = entry["address"] as? String
                else { continue }
                return address
            }
            guard process.isRunning else { throw TestFailure("the agent exited early: \(log)") }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestFailure("the agent did not start listening within 60 s: \(log)")
    }

    /// Sends `signal` and waits for the process to end; returns its termination status.
    @discardableResult
    public func stop(with signal: Int32) async -> Int32 {
        kill(process.processIdentifier, signal)
        while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
        return process.terminationStatus
    }
}

/// A fresh temporary directory, removed by the caller.
public func makeTemporaryDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-test-\(UUID().uuidString)")
        .path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

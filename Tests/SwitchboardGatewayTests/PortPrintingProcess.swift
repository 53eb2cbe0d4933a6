import Foundation
import SwitchboardTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// Starts `executable` with `arguments`, its output going to `output`, and waits (up to 20 s) for the first line it
/// prints to be a port number: how the Python fixtures of these tests (a WebSocket echo server, an HTTPS backend)
/// tell which free port they took.
func startPrintingPort(_ executable: String, _ arguments: [String], output: String) async throws -> (Process, Int) {
    _ = FileManager.default.createFile(atPath: output, contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = FileHandle(forWritingAtPath: output)
    process.standardError = process.standardOutput
    try process.run()
    func printed() -> String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }
    let deadline = ContinuousClock.now + .seconds(20)
    while process.isRunning, ContinuousClock.now < deadline {
        if let port = printed().split(separator: "\n").first.flatMap({ Int($0) }) { return (process, port) }
        try await Task.sleep(for: .milliseconds(50))
    }
    if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    throw TestFailure("\(arguments.first ?? executable) never printed its port: \(printed())")
}

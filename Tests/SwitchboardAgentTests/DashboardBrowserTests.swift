import Foundation
import SwitchboardTestSupport
import Testing

/// The dashboard at `/ui/` in a real browser: headless Chromium driven by selenium (`Tests/Fixtures/dashboard_test.py`)
/// against a live agent process. Each test is one mode of the script; the script fails on the first surprise and on
/// any JavaScript error in the browser's console.
///
/// Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them). Screenshots go to a temporary directory,
/// or to `docs/screenshots` when `SWITCHBOARD_UPDATE_SCREENSHOTS=1` (how the committed ones are made).
@Suite("Dashboard in a browser", .serialized, .loadsTheMachine)
struct DashboardBrowserTests {
    @Test func theLivePagesCountFollowAKilledBackendShowHistoryAndDrainAndUndrain() async throws {
        let output = try await runScript(mode: "live", agentArguments: [])
        #expect(output.contains("figure: kill_to_page_seconds="), "\(output)")
    }

    @Test func withACLsOnAReadTokenSeesOnlyItsServicesAndCannotDrain() async throws {
        _ = try await runScript(mode: "acl", agentArguments: ["--acl-default-policy", "deny"])
    }

    @Test func aThousandServicesLoadAndStayLiveUnderAHundredChangesASecond() async throws {
        let output = try await runScript(mode: "scale", agentArguments: ["--write-rate-limit", "0"])
        print(output.split(separator: "\n").filter { $0.hasPrefix("figure:") }.joined(separator: "\n"))
    }

    /// Runs the script's `mode` against a fresh agent (in memory, `agentArguments` added) and returns what it
    /// printed; fails unless it ends with "ok".
    func runScript(mode: String, agentArguments: [String]) async throws -> String {
        for program in ["/usr/bin/chromium", "/usr/bin/chromedriver"]
        where !FileManager.default.fileExists(atPath: program) {
            throw TestFailure("\(program) is missing: apt-get install chromium chromium-driver (.ci/run does)")
        }
        let python = try await PythonClients.python()
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil, extraArguments: agentArguments)
        defer { _ = agent }
        let screenshots: String
        if ProcessInfo.processInfo.environment["SWITCHBOARD_UPDATE_SCREENSHOTS"] == "1" {
            let package = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .deletingLastPathComponent()
            screenshots = package.appendingPathComponent("docs/screenshots").path
        } else {
            screenshots = try makeTemporaryDirectory()
        }
        let result = try await runProgram(
            python, [PythonClients.fixture("dashboard_test.py"), mode, agent.baseURL, screenshots],
            environment: ["SWITCHBOARD_BINARY": SwitchboardBinary.path], timeout: .seconds(240))
        let output = result.stdout + result.stderr
        #expect(
            result.status == 0 && result.stdout.hasSuffix("ok\n"), "\(output)\nagent log:\n\(agent.log.suffix(4000))")
        await agent.stop(with: SIGTERM)
        return output
    }
}

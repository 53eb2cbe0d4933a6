import Foundation
import NIOHTTP1
import SwitchboardCore
import SwitchboardTestSupport
import Testing

/// Every command's settings come from flags, `SWITCHBOARD_*` variables and a `--config-file`, in that order of
/// precedence, with the default last; the real binary proves it.
@Suite("Command settings from flags, variables and a configuration file", .serialized, .loadsTheMachine)
struct CommandSettingsTests {
    /// Writes `yaml` to a temporary file; the caller removes it.
    func configFile(_ yaml: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("settings-\(UUID().uuidString).yaml")
            .path
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func anAgentTakesItsSettingsFromTheFileWhenNoFlagOrVariableGivesThem() async throws {
        let file = try configFile(
            """
            dns-domain: consul.
            self-preservation-share: 0
            max-query-time: 250ms
            """)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let agent = try await AgentProcess(dataDirectory: nil, extraArguments: ["--config-file", file])
        let info = try await http(.GET, "\(agent.baseURL)/v1/agent").object
        let health = try #require(info["health"] as? [String: Any])
        let selfPreservation = try #require(health["selfPreservation"] as? [String: Any])
        #expect(selfPreservation["enabled"] as? Bool == false, "self-preservation-share 0 from the file turns it off")
        // The file's 250ms maximum holds a blocking query that long, not the default five minutes.
        let index = try #require(try await http(.GET, "\(agent.baseURL)/v1/services").index)
        let start = ContinuousClock.now
        _ = try await http(.GET, "\(agent.baseURL)/v1/services?index=\(index)&wait=30s")
        #expect(ContinuousClock.now - start < .seconds(5))
        let port = try #require(agent.dnsPort)
        let answer = try await runProgram(
            "/usr/bin/dig", ["@127.0.0.1", "-p", "\(port)", "+time=5", "+tries=3", "+short", "consul.", "SOA"])
        #expect(answer.stdout.contains("consul."), "the domain came from the file: \(answer.stdout)")
        _ = await agent.stop(with: SIGTERM)
    }

    @Test func aFlagWinsOverAVariableWhichWinsOverTheFile() async throws {
        let file = try configFile("http-addr: 127.0.0.1:1\nlog-level: nonsense\nsqlite-sync: never\n")
        defer { try? FileManager.default.removeItem(atPath: file) }
        // The file's bad log level, overridden by the variable: the file's bad sqlite-sync is then the first mistake.
        let fromFile = try await SwitchboardBinary.run(
            ["agent", "--dev", "--dns-disable", "--config-file", file],
            environment: ["SWITCHBOARD_LOG_LEVEL": "warning"], timeout: .seconds(20))
        #expect(fromFile.status == 64)
        #expect(fromFile.stderr.contains("--sqlite-sync must be full or normal, got 'never'"), "\(fromFile.stderr)")
        #expect(!fromFile.stderr.contains("log-level"))
        #expect(fromFile.stderr.contains("Usage: switchboard agent"))

        // A flag overrides both: the agent starts with the flag's address, not the file's port 1.
        let agent = try await AgentProcess(
            dataDirectory: nil, dnsAddress: nil,
            extraArguments: ["--config-file", file, "--sqlite-sync", "normal", "--log-level", "info"])
        #expect(!agent.baseURL.hasSuffix(":1"))
        #expect(try await http(.GET, "\(agent.baseURL)/v1/agent").status == 200)
        _ = await agent.stop(with: SIGTERM)
    }

    @Test func aConfigurationFileWithAnUnknownOrMisspelledSettingIsRefused() async throws {
        let file = try configFile("http_addr: 127.0.0.1:7500\n")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let refused = try await SwitchboardBinary.run(["agent", "--dev", "--config-file", file], timeout: .seconds(20))
        #expect(refused.status == 64)
        #expect(refused.stderr.contains("unknown setting 'http_addr'"), "\(refused.stderr)")
        #expect(refused.stderr.contains("http-addr"), "the message lists the settings the command takes")

        let missing = try await SwitchboardBinary.run(
            ["services", "--config-file", "/nonexistent/settings.yaml"], timeout: .seconds(20))
        #expect(missing.status == 64)
        #expect(missing.stderr.contains("--config-file /nonexistent/settings.yaml cannot be read"))
    }

    @Test func clientCommandsFindTheirAgentsInTheVariableOrTheFile() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let registered = try await http(
            .PUT, "\(agent.baseURL)/v1/services/payment/instances/p1", json: #"{"address": "10.0.0.1", "port": 80}"#)
        #expect(registered.status == 201)
        // Several agents, tried in order: the first is down.
        let viaVariable = try await SwitchboardBinary.run(
            ["instances", "payment"], environment: ["SWITCHBOARD_AGENT": "http://127.0.0.1:1,\(agent.baseURL)"])
        #expect(viaVariable.status == 0, "\(viaVariable.stderr)")
        #expect(viaVariable.stdout.contains("p1"))
        let file = try configFile("agent: [\"\(agent.baseURL)\"]\n")
        defer { try? FileManager.default.removeItem(atPath: file) }
        let viaFile = try await SwitchboardBinary.run(["services", "--config-file", file])
        #expect(viaFile.status == 0, "\(viaFile.stderr)")
        #expect(viaFile.stdout.contains("payment"))
        _ = await agent.stop(with: SIGTERM)
    }

    @Test func theHelpNamesEachSettingsDefaultAndVariable() async throws {
        let help = try await SwitchboardBinary.run(["agent", "--help"])
        #expect(help.stdout.contains("(default: 127.0.0.1:7500; env: SWITCHBOARD_HTTP_ADDR)"), "\(help.stdout)")
        #expect(help.stdout.contains("SWITCHBOARD_CONFIG_FILE"))
        let gateway = try await SwitchboardBinary.run(["gateway", "--help"])
        #expect(gateway.stdout.contains("env: SWITCHBOARD_GATEWAY_LISTEN"), "\(gateway.stdout)")
    }
}

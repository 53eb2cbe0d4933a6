import Foundation
import NIOHTTP1
import SwitchboardCore
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `switchboard sidecar` as a process beside a Python service it starts (`Tests/Fixtures/sidecar_service.py`), against
/// an agent process: registered and passing once the service answers, critical on a 500, drained and deregistered
/// before the service is told to stop, deregistered at once when the service dies, and left to expire by its TTL when
/// the sidecar itself is killed.
@Suite(.serialized, .loadsTheMachine) struct SidecarTests {
    /// A sidecar process supervising the test service on a free port.
    final class SidecarProcess: @unchecked Sendable {
        let process = Process()
        let port: Int
        let marker: String
        let logPath: String

        init(agent: AgentProcess, service: String = "web", interval: String = "200ms", extra: [String] = []) throws {
            port = try freePort()
            let directory = try makeTemporaryDirectory()
            marker = directory + "/stopped"
            logPath = directory + "/sidecar.log"
            _ = FileManager.default.createFile(atPath: logPath, contents: nil)
            let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
                .appendingPathComponent("Fixtures/sidecar_service.py").path
            process.executableURL = URL(fileURLWithPath: SwitchboardBinary.path)
            process.arguments =
                [
                    "sidecar", "--service", service, "--port", "\(port)", "--health", "/health", "--interval", interval,
                    "--drain-time", "500ms", "--agent", agent.baseURL, "--log-format", "json", "--tag", "py",
                    "--meta", "language=python",
                ] + extra + ["--", "python3", script, "\(port)", marker]
            process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
            process.standardError = FileHandle(forWritingAtPath: logPath)
            try process.run()
        }

        deinit {
            if let child = try? childPID() { kill(child, SIGKILL) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }

        var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

        /// The service's pid, from the sidecar's "started the service" log line.
        func childPID() throws -> Int32 {
            for line in log.split(separator: "\n") {
                guard let entry = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                    entry["message"] as? String == "started the service", let pid = entry["pid"] as? String
                else { continue }
                return Int32(pid) ?? -1
            }
            throw TestFailure("the sidecar did not log the service's pid: \(log)")
        }

        func waitForExit(within limit: Duration) async throws -> Int32 {
            try await waitUntil(timeout: limit, "the sidecar's exit") { !process.isRunning }
            return process.terminationStatus
        }
    }

    static func instance(_ agent: AgentProcess) async throws -> [String: Any]? {
        let answer = try await http(.GET, "\(agent.baseURL)/v1/services/web?status=any")
        return (answer.object["instances"] as? [[String: Any]])?.first
    }

    static func status(_ agent: AgentProcess) async throws -> String? {
        try await instance(agent)?["status"] as? String
    }

    @Test func theServiceIsRegisteredPassingOnceItAnswersCriticalOnA500AndDrainedBeforeItIsStopped() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let sidecar = try SidecarProcess(agent: agent)
        // The service answers from some moment on; the registry says passing within a second of it.
        try await waitUntil(timeout: .seconds(20), "the service answering") {
            (try? await http(.GET, "http://127.0.0.1:\(sidecar.port)/health").status) == 200
        }
        let answering = Date()
        try await waitUntil(timeout: .seconds(5), "passing in the registry") {
            try await Self.status(agent) == "passing"
        }
        // Timed by the agent's record of the change to passing, not by this test's polling.
        let changes = try await http(.GET, "\(agent.baseURL)/v1/events?since=0").decode(EventPage.self).events
        let passing = try #require(changes.last { $0.instance.status == .passing })
        #expect(
            passing.at.timeIntervalSince(answering) < 1, "passing \(passing.at.timeIntervalSince(answering)) s after")
        let registered = try #require(try await Self.instance(agent))
        #expect(registered["tags"] as? [String] == ["py"])
        #expect((registered["meta"] as? [String: String])?["language"] == "python")

        _ = try await http(.GET, "http://127.0.0.1:\(sidecar.port)/break")
        try await waitUntil(timeout: .seconds(3), "critical on a 500") { try await Self.status(agent) == "critical" }
        let checks = try #require(try await Self.instance(agent)?["checks"] as? [[String: Any]])
        #expect((checks.first?["output"] as? String)?.contains("500") == true, "\(checks)")

        // SIGTERM: maintenance, deregistration, and only then the service's own SIGTERM; the sidecar exits with the
        // service's status (0).
        kill(sidecar.process.processIdentifier, SIGTERM)
        #expect(try await sidecar.waitForExit(within: .seconds(20)) == 0, "\(sidecar.log)")
        #expect(try await Self.instance(agent) == nil)
        let events = try await http(.GET, "\(agent.baseURL)/v1/events?since=0").decode(EventPage.self).events
        let drained = try #require(events.last { $0.kind == .status && $0.instance.maintenance != nil })
        let removed = try #require(events.last { $0.kind == .removed })
        let stopped = try String(contentsOfFile: sidecar.marker, encoding: .utf8)
        let stoppedAt = try #require(
            Double(stopped.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""))
        #expect(drained.at < removed.at, "drained \(drained.at), removed \(removed.at)")
        #expect(removed.at.timeIntervalSince1970 <= stoppedAt, "removed \(removed.at), service stopped \(stoppedAt)")
        #expect(
            removed.at.timeIntervalSince(drained.at) >= 0.4,
            "the drain lasted \(removed.at.timeIntervalSince(drained.at)) s")
        _ = await agent.stop(with: SIGTERM)
    }

    @Test func killingTheServiceDeregistersItAtOnceAndTheSidecarExitsWithItsStatus() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let sidecar = try SidecarProcess(agent: agent)
        try await waitUntil(timeout: .seconds(20), "passing") { try await Self.status(agent) == "passing" }
        let killed = Date()
        kill(try sidecar.childPID(), SIGKILL)
        _ = try await waitUntil(timeout: .seconds(5), "deregistered") { try await Self.instance(agent) == nil }
        // Timed by the agent's own record of the removal, not by this test's polling (slow on a loaded machine).
        let events = try await http(.GET, "\(agent.baseURL)/v1/events?since=0&limit=1000").decode(EventPage.self)
        let removed = try #require(events.events.last { $0.kind == .removed && $0.service.rawValue == "web" })
        let gone = removed.at.timeIntervalSince(killed)
        #expect(gone < 1, "deregistered \(gone) s after the kill")
        #expect(try await sidecar.waitForExit(within: .seconds(10)) == 128 + SIGKILL, "\(sidecar.log)")
        _ = await agent.stop(with: SIGTERM)
    }

    @Test func killingTheSidecarLeavesTheInstanceToExpireByItsTTL() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let sidecar = try SidecarProcess(agent: agent, interval: "500ms")
        try await waitUntil(timeout: .seconds(20), "passing") { try await Self.status(agent) == "passing" }
        let child = try sidecar.childPID()
        kill(sidecar.process.processIdentifier, SIGKILL)
        let killed = ContinuousClock.now
        // Still registered and passing a moment later: nobody deregistered it.
        try await Task.sleep(for: .milliseconds(300))
        #expect(try await Self.status(agent) == "passing")
        // Its TTL (three intervals: 1.5 s) runs out, and it goes critical.
        try await waitUntil(timeout: .seconds(6), "critical by TTL") { try await Self.status(agent) == "critical" }
        #expect(ContinuousClock.now - killed >= .milliseconds(1000))
        kill(child, SIGKILL)
        _ = await agent.stop(with: SIGTERM)
    }

    /// `--upstream web=127.0.0.1:PORT`: the application beside one sidecar calls another sidecar's service through a
    /// local listener, and gets a healthy instance's answer.
    @Test func anApplicationCallsAnotherServiceThroughItsUpstreamListener() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let web = try SidecarProcess(agent: agent)
        let listener = try freePort()
        let caller = try SidecarProcess(
            agent: agent, service: "caller", extra: ["--upstream", "web=127.0.0.1:\(listener)"])
        try await waitUntil(timeout: .seconds(20), "web passing") { try await Self.status(agent) == "passing" }
        try await waitUntil(timeout: .seconds(10), "an answer through the listener") {
            (try? await http(.GET, "http://127.0.0.1:\(listener)/health"))?.status == 200
        }
        #expect(try await http(.GET, "http://127.0.0.1:\(listener)/health").text == "ok")
        for sidecar in [caller, web] { kill(sidecar.process.processIdentifier, SIGTERM) }
        #expect(try await caller.waitForExit(within: .seconds(20)) == 0, "\(caller.log)")
        #expect(try await web.waitForExit(within: .seconds(20)) == 0, "\(web.log)")
        _ = await agent.stop(with: SIGTERM)
    }

    @Test func badSettingsAreRefusedNamingTheFlag() async throws {
        for (arguments, expected) in [
            (["--port", "80"], "--service is required"),
            (["--service", "web"], "--port is required"),
            (["--service", "web", "--port", "80", "--health", "health"], "--health"),
            (["--service", "Web", "--port", "80"], "--service"),
            (["--service", "web", "--port", "80", "--meta", "novalue"], "--meta must be key=value"),
            (["--service", "web", "--port", "80", "--", "/no/such/program"], "/no/such/program"),
            (
                ["--service", "web", "--port", "80", "--upstream", "pay=127.0.0.1"],
                "--upstream must be service=host:port"
            ),
            (["--service", "web", "--port", "80", "--upstream", "pay=127.0.0.1:9,udp"], "--upstream must be"),
            (["--service", "web", "--port", "80", "--threads", "0"], "a whole number from 1 to 256"),
            (["--service", "web", "--port", "80", "--otlp-endpoint", "collector:4318"], "an http:// or https:// URL"),
        ] {
            let result = try await SwitchboardBinary.run(["sidecar", "--agent", "http://127.0.0.1:1"] + arguments)
            #expect(result.status != 0)
            #expect(result.stderr.contains(expected), "\(arguments): \(result.stderr)")
        }
    }
}

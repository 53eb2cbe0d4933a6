import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardAgent
import SwitchboardCore
import SwitchboardTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Shared mutable state for the concurrent clients of a test.
final class Box<Value: Sendable>: Sendable {
    let value: Mutex<Value>
    init(_ value: Value) { self.value = Mutex(value) }
}

@Suite("The agent as a separate process", .serialized, .loadsTheMachine)
struct AgentProcessTests {
    @Test func killNineLosesNoAcknowledgedRegistration() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let agent = try await AgentProcess(dataDirectory: directory)
        let acknowledged = Box<[String]>([])
        let next = Box(0)
        let killed = Box(false)
        let total = 1000
        let killAfter = 400

        try await withThrowingTaskGroup(of: Void.self) { group in
            // 32 clients register 1,000 instances; the agent is killed once 400 have been acknowledged.
            for _ in 0..<32 {
                group.addTask {
                    while true {
                        let number = next.value.withLock { value -> Int in
                            defer { value += 1 }
                            return value
                        }
                        guard number < total, !killed.value.withLock({ $0 }) else { return }
                        let id = "i\(number)"
                        let body =
                            #"{"address": "10.1.\#(number / 256).\#(number % 256)", "port": 8080, "tags": ["t\#(number % 5)"]}"#
                        guard
                            let answer = try? await http(
                                .PUT, "\(agent.baseURL)/v1/services/durable/instances/\(id)", json: body,
                                timeout: .seconds(5)),
                            (200..<300).contains(answer.status)
                        else { continue }
                        let count = acknowledged.value.withLock { ids in
                            ids.append(id)
                            return ids.count
                        }
                        if count == killAfter {
                            killed.value.withLock { $0 = true }
                            kill(agent.process.processIdentifier, SIGKILL)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        await agent.stop(with: SIGKILL)
        let acked = acknowledged.value.withLock { $0 }
        #expect(acked.count >= killAfter)
        #expect(acked.count < total, "the kill must land in the middle of the writes")

        let restarted = try await AgentProcess(dataDirectory: directory)
        let lookup = try await http(.GET, "\(restarted.baseURL)/v1/services/durable?status=any").decode(
            ServiceLookup.self)
        let stored = Set(lookup.instances.map(\.id.rawValue))
        let lost = Set(acked).subtracting(stored)
        #expect(lost.isEmpty, "acknowledged but lost after kill -9: \(lost.sorted().prefix(20))")
        // The events and the index came back consistently too.
        let info = try await http(.GET, "\(restarted.baseURL)/v1/agent").decode(AgentInfo.self)
        #expect(info.instances == stored.count)
        #expect(info.index >= UInt64(stored.count))
        await restarted.stop(with: SIGTERM)
    }

    @Test func registrationsSurviveAGracefulRestartAndSIGTERMExitsCleanly() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let agent = try await AgentProcess(dataDirectory: directory)
        let put = try await http(
            .PUT, "\(agent.baseURL)/v1/services/web/instances/w1", json: #"{"address": "web.internal", "port": 443}"#)
        #expect(put.status == 201)
        #expect(await agent.stop(with: SIGTERM) == 0)

        let again = try await AgentProcess(dataDirectory: directory)
        let instance = try await http(.GET, "\(again.baseURL)/v1/services/web/instances/w1").decode(Instance.self)
        #expect(instance.definition.address.kind == .hostname)
        #expect(await again.stop(with: SIGINT) == 0)
    }

    @Test func afterARestartTTLChecksGetOneTTLOfGraceAndActiveChecksRunAtOnce() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let backend = try BackendProcess()
        let agent = try await AgentProcess(dataDirectory: directory)
        let cart = "\(agent.baseURL)/v1/services/cart/instances/c1"
        _ = try await http(
            .PUT, cart, json: #"{"address": "127.0.0.1", "port": 9000, "checks": [{"type": "ttl", "ttl": "3s"}]}"#)
        #expect(try await http(.PUT, "\(cart)/heartbeat").object["status"] as? String == "passing")
        // An HTTP check probed every 10 s: after the restart it must not wait 10 s to be probed again.
        _ = try await http(
            .PUT, "\(agent.baseURL)/v1/services/order/instances/o1",
            json: """
                {"address": "127.0.0.1", "port": \(backend.port), "checks": [{"type": "http",
                 "url": "\(backend.healthURL)", "interval": "10s", "timeout": "1s"}]}
                """)
        try await waitUntil(timeout: .seconds(5), "the HTTP check passing") {
            try await http(.GET, "\(agent.baseURL)/v1/services/order/instances/o1").object["status"] as? String
                == "passing"
        }
        // A last heartbeat (the wait above may have taken a while), then a crash of the agent, and of the backend
        // while the agent is down.
        #expect(try await http(.PUT, "\(cart)/heartbeat").object["status"] as? String == "passing")
        await agent.stop(with: SIGKILL)
        backend.killNow()

        let restarted = try await AgentProcess(dataDirectory: directory)
        let status = { (path: String) in
            try await http(.GET, "\(restarted.baseURL)/v1/services/\(path)").object["status"] as? String
        }
        // The statuses survived, and the TTL instance stays passing for one TTL without a heartbeat.
        #expect(try await status("cart/instances/c1") == "passing")
        try await waitUntil(timeout: .seconds(3), "the dead backend found critical right after the restart") {
            try await status("order/instances/o1") == "critical"
        }
        try await waitUntil(timeout: .seconds(10), "the TTL instance expiring after its grace") {
            try await status("cart/instances/c1") == "critical"
        }
        // Judged on the agent's own times (a starved test process sees the listening late): the check turned
        // critical no sooner than one TTL after the restarted agent began to listen.
        let parse = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        let listening = try #require(
            restarted.log.split(separator: "\n").compactMap { line -> Date? in
                guard let entry = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                    entry["message"] as? String == "agent listening", let time = entry["time"] as? String
                else { return nil }
                return try? parse.parse(time)
            }.first)
        let instance = try await http(.GET, "\(restarted.baseURL)/v1/services/cart/instances/c1").decode(Instance.self)
        let expired = try #require(instance.checks.first?.history.last)
        #expect(expired.to == .critical)
        let grace = expired.at.timeIntervalSince(listening)
        #expect(grace >= 2.5, "expired \(grace) s after the restarted agent listened, before its TTL of grace")
        await restarted.stop(with: SIGTERM)
    }

    @Test func twoAgentsCannotShareADataDirectory() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = try await AgentProcess(dataDirectory: directory)
        let second = try await SwitchboardBinary.run(["agent", "--http-addr", "127.0.0.1:0", "--data-dir", directory])
        #expect(second.status != 0)
        #expect(second.stderr.contains("in use by another switchboard agent"))
        await first.stop(with: SIGTERM)
    }
}

@Suite("The command-line clients", .serialized, .loadsTheMachine)
struct CLITests {
    @Test func registerListAndDeregisterThroughTheCLI() async throws {
        let agent = try await AgentProcess(dataDirectory: nil)
        let env = ["SWITCHBOARD_AGENT": agent.baseURL]
        let register = try await SwitchboardBinary.run(
            ["register", "payment", "--address", "10.0.0.7", "--port", "9000", "--tag", "v2", "--meta", "zone=a"],
            environment: env
        )
        #expect(register.status == 0, "\(register.stderr)")
        #expect(register.stdout.contains("registered payment/payment-10.0.0.7-9000"))

        let services = try await SwitchboardBinary.run(["services"], environment: env)
        #expect(services.stdout.split(separator: "\n").first?.hasPrefix("SERVICE") == true)
        #expect(services.stdout.contains("payment"))

        let instances = try await SwitchboardBinary.run(["instances", "payment", "--json"], environment: env)
        let lookup = try SwitchboardJSON.decoder().decode(ServiceLookup.self, from: Data(instances.stdout.utf8))
        #expect(lookup.instances.first?.definition.meta == ["zone": "a"])

        let drain = try await SwitchboardBinary.run(
            [
                "maintenance", "payment", "payment-10.0.0.7-9000", "--enable", "--reason", "deploy", "--agent",
                agent.baseURL,
            ]
        )
        #expect(drain.stdout.contains("maintenance"))

        let deregister = try await SwitchboardBinary.run(
            ["deregister", "payment", "payment-10.0.0.7-9000"], environment: env)
        #expect(deregister.status == 0)
        let missing = try await SwitchboardBinary.run(
            ["deregister", "payment", "payment-10.0.0.7-9000"], environment: env)
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("is not registered"))
        await agent.stop(with: SIGTERM)
    }

    @Test func refusalsAndAnUnreachableAgentGiveOneLineAndANonZeroExit() async throws {
        let agent = try await AgentProcess(dataDirectory: nil)
        let refused = try await SwitchboardBinary.run([
            "register", "payment", "--address", "10.0.0.1", "--port", "1", "--id", "x", "--ttl", "5x", "--agent",
            agent.baseURL,
        ])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("checks[0].ttl"))
        #expect(refused.stderr.split(separator: "\n").count == 1)
        await agent.stop(with: SIGTERM)

        let unreachable = try await SwitchboardBinary.run(["services", "--agent", agent.baseURL])
        #expect(unreachable.status == 1)
        #expect(unreachable.stderr.contains("cannot reach the agent"))
        #expect(unreachable.stderr.split(separator: "\n").count == 1)
    }

    @Test func agentFlagsFallBackToEnvironmentVariables() async throws {
        let badAddress = try await SwitchboardBinary.run(
            ["agent", "--dev"], environment: ["SWITCHBOARD_HTTP_ADDR": "nonsense"], timeout: .seconds(20))
        #expect(badAddress.status != 0)
        #expect(badAddress.stderr.contains("--http-addr must be host:port"))
        let badFormat = try await SwitchboardBinary.run(
            ["agent", "--dev", "--http-addr", "127.0.0.1:0"], environment: ["SWITCHBOARD_LOG_FORMAT": "xml"],
            timeout: .seconds(20))
        #expect(badFormat.status != 0)
        let badSync = try await SwitchboardBinary.run(
            ["agent", "--dev", "--http-addr", "127.0.0.1:0"], environment: ["SWITCHBOARD_SQLITE_SYNC": "sometimes"],
            timeout: .seconds(20))
        #expect(badSync.status != 0)
        #expect(badSync.stderr.contains("--sqlite-sync must be full or normal"))
        #expect(badFormat.stderr.contains("--log-format must be text or json"))
    }
}

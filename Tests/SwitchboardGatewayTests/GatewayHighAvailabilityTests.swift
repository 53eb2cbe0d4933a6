import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ProcessSupport
import SwitchboardClient
import SwitchboardCore
import SwitchboardGateway
import SwitchboardTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A `switchboard gateway` process that registers itself as an instance of `gateway`, with its admin address (and
/// so an HTTP check on its `/health`).
final class RegisteredGatewayProcess: Sendable {
    let process: Process
    let port: Int

    init(agent: AgentProcess) throws {
        port = try freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: SwitchboardBinary.path)
        process.arguments = [
            "gateway", "--listen", "127.0.0.1:\(port)", "--agent", agent.baseURL, "--admin",
            "127.0.0.1:\(try freePort())", "--register", "gateway", "--access-log", "off", "--log-level", "warning",
        ]
        process.environment = ProcessInfo.processInfo.environment.merging(ParentWatch.asChild) { $1 }
        process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        self.process = process
    }

    func kill() {
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    }
}

@Suite("Several gateways side by side", .serialized, .loadsTheMachine)
struct GatewayHighAvailabilityTests {
    @Test func twoRegisteredGatewaysAreFoundByDNSAndALibraryClientLosesNoCallWhenOneIsKilled() async throws {
        let agent = try await AgentProcess(dataDirectory: nil)
        var backends: [ExampleBackend] = []
        for _ in 0..<2 {
            backends.append(try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["public"]))
        }
        try await waitForHealthy(agent, "shop", count: 2)
        let gateways = [try RegisteredGatewayProcess(agent: agent), try RegisteredGatewayProcess(agent: agent)]
        // Healthy once the agent's HTTP check on each admin /health passes.
        try await waitForHealthy(agent, "gateway", count: 2)

        // DNS: both gateways, by address and port.
        let srv = try await runProgram(
            "/usr/bin/dig",
            ["@127.0.0.1", "-p", "\(try #require(agent.dnsPort))", "+short", "gateway.service.switchboard", "SRV"]
        ).stdout
        for gateway in gateways {
            #expect(srv.contains(" \(gateway.port) "), "\(srv)")
        }

        // The client library: a client of `gateway` calling a service behind them, while one gateway dies.
        let connection = AgentConnection(
            configuration: .init(agents: [agent.baseURL], connectTimeout: .seconds(10), requestTimeout: .seconds(30)))
        let discovery = ServiceDiscovery(connection: connection)
        let client = ServiceClient(
            service: try ServiceName("gateway"), discovery: discovery, balancer: RoundRobinBalancer(),
            policy: CallPolicy(attemptTimeout: .seconds(10)))
        let tally = LoadTally()
        func waitFor(_ count: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(60)
            while tally.completed.load(ordering: .relaxed) < count, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await discovery.run() }
            try await withThrowingTaskGroup(of: Void.self) { callers in
                for _ in 0..<4 {
                    callers.addTask {
                        while !tally.stop.load(ordering: .relaxed) {
                            do {
                                let answer = try await client.execute(ServiceRequest(path: "/shop/hello"))
                                if answer.status != .ok { tally.fail("status \(answer.status)") }
                            } catch {
                                tally.fail("\(error)")
                            }
                            tally.completed.add(1, ordering: .relaxed)
                        }
                    }
                }
                try await waitFor(200)
                gateways[0].kill()
                try await waitFor(tally.completed.load(ordering: .relaxed) + 600)
                tally.stop.store(true, ordering: .relaxed)
                try await callers.waitForAll()
            }
            group.cancelAll()
        }
        try await connection.shutdown()
        #expect(tally.failures == [])
        #expect(tally.completed.load(ordering: .relaxed) >= 800)
        // The registry notices the dead gateway through its admin /health check.
        try await waitForHealthy(agent, "gateway", count: 1)
        withExtendedLifetime(backends) {}
    }

    @Test func aSharedRateLimitIsSplitEvenlyAcrossTheLiveGateways() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop")
        _ = backend
        try await waitForHealthy(agent, "shop", count: 1)
        let file = try RouteFileOnDisk(
            """
            routes:
              - name: shared
                match: { prefix: /shared }
                service: shop
                rewrite: /hello
                rateLimit: { key: client-ip, rate: 0.01, burst: 4, shared: true }
              - name: own
                match: { prefix: /own }
                service: shop
                rewrite: /hello
                rateLimit: { key: client-ip, rate: 0.01, burst: 4 }
            """)
        let edge = try ServiceName("edge")
        let registered: @Sendable (inout GatewayConfiguration) -> Void = { configuration in
            configuration.routeFile = file.path
            configuration.admin = ("127.0.0.1", 0)
            configuration.registration = GatewayRegistration(service: edge)
        }
        try await withGateway(agent: agent, configure: registered) { first in
            try await withGateway(agent: agent, configure: registered) { _ in
                try await waitForHealthy(agent, "edge", count: 2)
                // The gateways learn of each other through their watch of `edge`.
                try await Task.sleep(for: .seconds(1))
                var shared: [Int] = []
                var own: [Int] = []
                for _ in 0..<5 {
                    shared.append(try await get("\(first)/shared").status)
                    own.append(try await get("\(first)/own").status)
                }
                // A burst of 4 for the two gateways together: 2 here; a limit of this gateway's own: all 4.
                #expect(shared == [200, 200, 429, 429, 429])
                #expect(own == [200, 200, 200, 200, 429])
            }
        }
    }
}

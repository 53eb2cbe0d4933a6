import Foundation
import NIOHTTP1
import SwitchboardCore
import SwitchboardTestSupport
import Synchronization
import Testing

@testable import SwitchboardClient

#if canImport(Glibc)
import Glibc
#endif

/// A steady stream of calls from a few concurrent callers, counting what the callers' users would see.
final class CallLoad: Sendable {
    let completed = Atomic(0)
    let failures = Mutex<[String]>([])
    private let stopped = Atomic(false)

    /// Calls `/hello` through `client` from `callers` tasks, each pausing `pause` between calls, until stopped.
    func run(_ client: ServiceClient<RoundRobinBalancer>, callers: Int = 4, pause: Duration = .milliseconds(2)) async {
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<callers {
                group.addTask {
                    while !self.stopped.load(ordering: .relaxed) {
                        do {
                            let response = try await client.execute(ServiceRequest(path: "/hello"))
                            if response.status.code != 200 {
                                self.failures.withLock { $0.append("status \(response.status.code)") }
                            }
                        } catch {
                            self.failures.withLock { $0.append("\(error)") }
                        }
                        self.completed.add(1, ordering: .relaxed)
                        try? await Task.sleep(for: pause)
                    }
                }
            }
        }
    }

    func stop() { stopped.store(true, ordering: .relaxed) }

    /// Waits until `count` calls have completed (or 120 s have passed).
    func waitForCompleted(_ count: Int) async {
        let deadline = ContinuousClock.now + .seconds(120)
        while completed.load(ordering: .relaxed) < count, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// Three example backends registered through the library with 1 s TTL checks, a client following them, and a
/// steady load running while `scenario` plays; the load is stopped and checked afterwards.
func withLoadedShop(
    agent: AgentProcess, scenario: @Sendable ([ExampleBackend], ServiceDiscovery, CallLoad) async throws -> Void
) async throws -> CallLoad {
    var backends: [ExampleBackend] = []
    for _ in 0..<3 { backends.append(try await ExampleBackend(agents: [agent.baseURL])) }
    let connection = AgentConnection(configuration: .init(agents: [agent.baseURL], connectTimeout: .milliseconds(250)))
    let discovery = ServiceDiscovery(connection: connection)
    let client = ServiceClient(service: try ServiceName("order"), discovery: discovery, balancer: RoundRobinBalancer())
    let load = CallLoad()
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await discovery.run() }
        let order = try ServiceName("order")
        let healthy = await eventually(.seconds(20)) {
            ((try? await discovery.snapshot(of: order))?.instances.count ?? 0) == 3
        }
        guard healthy else { throw TestFailure("the three backends never all became healthy") }
        // The load runs beside the scenario and is stopped, not cancelled: a cancelled call is not a failed one.
        try await withThrowingTaskGroup(of: Void.self) { calls in
            calls.addTask { await load.run(client) }
            defer { load.stop() }
            try await scenario(backends, discovery, load)
            load.stop()
            try await calls.waitForAll()
        }
        group.cancelAll()
    }
    try await connection.shutdown()
    return load
}

@Suite(.serialized, .loadsTheMachine) struct CallsUnderFailureTests {
    @Test func aBackendKilledMidStreamCostsTheCallersNoFailedCall() async throws {
        let agent = try await AgentProcess(dataDirectory: nil)
        let load = try await withLoadedShop(agent: agent) { backends, discovery, load in
            await load.waitForCompleted(600)
            await backends[0].stop(with: SIGKILL)
            let killed = ContinuousClock.now
            let callsAtKill = load.completed.load(ordering: .relaxed)
            let deadID = try InstanceID("order-\(backends[0].port)")
            // From 1 s after the kill on, whatever is still sent to the dead backend's address is noted there: until
            // discovery drops the instance, only the client's outlier ejection keeps calls away. For that first
            // second the port refuses connections, as a crashed process's port does.
            let deadBackendPort = backends[0].port
            async let listening = {
                try await Task.sleep(until: killed + .seconds(1))
                return try ArrivalRecorder(port: deadBackendPort)
            }()
            // The registry notices through the TTL check; the client's discovery drops it as the change streams in.
            let dropped = await eventually(.seconds(5)) {
                discovery.cachedSnapshot(of: try! ServiceName("order"))?.instances.instances.contains {
                    $0.id == deadID
                }
                    == false
            }
            let droppedAfter = ContinuousClock.now - killed
            let deadPort = try await listening
            defer { deadPort.stop() }
            #expect(dropped, "the dead instance is still listed 5 s after the kill")
            #expect(droppedAfter < .seconds(3))
            await load.waitForCompleted(2_400)
            #expect(load.completed.load(ordering: .relaxed) - callsAtKill >= 1_600)
            #expect(
                deadPort.arrived.isEmpty, "\(deadPort.arrived.count) calls reached the dead backend's address after 1 s"
            )
            // The survivors answered everything after the kill themselves.
            let survivors = try await backends[1].answeredCalls() + backends[2].answeredCalls()
            #expect(survivors >= 1_600)
        }
        #expect(load.completed.load(ordering: .relaxed) >= 2_400)
        #expect(load.failures.withLock { $0 } == [])
    }

    @Test func anAgentStoppedForTenSecondsCostsNoFailedCallAndRegistrationsComeBack() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let port = try freePort()
        let agent = try await AgentProcess(dataDirectory: directory, httpAddress: "127.0.0.1:\(port)")
        let restarted = Mutex<AgentProcess?>(nil)
        let load = try await withLoadedShop(agent: agent) { backends, discovery, load in
            await load.waitForCompleted(300)
            await agent.stop(with: SIGKILL)
            let order = try ServiceName("order")
            #expect(await eventually { discovery.cachedSnapshot(of: order)?.isLive == false })
            try await Task.sleep(for: .seconds(10))
            // Calls went on from the last known instances, which said how stale they were.
            let stale = try #require(discovery.cachedSnapshot(of: order))
            #expect(stale.instances.count == 3 && stale.staleness() >= .seconds(9))

            let again = try await AgentProcess(dataDirectory: directory, httpAddress: "127.0.0.1:\(port)")
            restarted.withLock { $0 = again }
            #expect(
                await eventually(.seconds(10)) {
                    let snapshot = discovery.cachedSnapshot(of: order)
                    return snapshot?.isLive == true && snapshot?.instances.count == 3
                })
            // Every backend is registered and passing on the restarted agent, kept there by its own heartbeats.
            let connection = AgentConnection(configuration: .loaded(again.baseURL))
            let lookup = try await AgentClient(connection: connection).lookup(try ServiceName("order"))
            #expect(Set(lookup.instances.map(\.definition.port)) == Set(backends.map(\.port)))
            try await connection.shutdown()
            await load.waitForCompleted(load.completed.load(ordering: .relaxed) + 300)
        }
        // Calls kept flowing (how many depends on the machine's load; the point is that none failed).
        #expect(load.completed.load(ordering: .relaxed) >= 500)
        #expect(load.failures.withLock { $0 } == [])
        _ = restarted
    }

    @Test func aBackendShutDownGracefullyUnderLoadDrainsWithoutAFailedCall() async throws {
        let agent = try await AgentProcess(dataDirectory: nil)
        let load = try await withLoadedShop(agent: agent) { backends, discovery, load in
            await load.waitForCompleted(600)
            await backends[0].stop(with: SIGTERM)
            let goneID = try InstanceID("order-\(backends[0].port)")
            #expect(
                discovery.cachedSnapshot(of: try ServiceName("order"))?.instances.instances.contains { $0.id == goneID }
                    == false)
            await load.waitForCompleted(load.completed.load(ordering: .relaxed) + 1_400)
        }
        #expect(load.completed.load(ordering: .relaxed) >= 2_000)
        #expect(load.failures.withLock { $0 } == [])
    }
}

import Logging
import NIOHTTP1
import ServiceLifecycle
import SwitchboardAgent
import SwitchboardCore
import SwitchboardTestSupport
import Testing

@testable import SwitchboardClient

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
func eventually(
    _ timeout: Duration = .seconds(5), _ condition: @Sendable () async throws -> Bool
) async rethrows -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return try await condition()
}

/// Registers `id` of `shop` on `port` through the agent's API.
func register(_ id: String, port: Int, with connection: AgentConnection) async throws {
    let answer = try await AgentClient(connection: connection).call(
        .register(
            RegistrationRequest(address: "127.0.0.1", port: port), service: try ServiceName("shop"),
            id: try InstanceID(id)))
    #expect((200..<300).contains(answer.status.code))
}

/// Runs `discovery` (its watch streams) while `body` runs.
func whileRunning<T: Sendable>(
    _ discovery: ServiceDiscovery, _ body: @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await discovery.run() }
        defer { group.cancelAll() }
        return try await body()
    }
}

extension AgentConnectionConfiguration {
    /// A connection to an in-process agent that tolerates a loaded full test run (the whole suite in parallel on two
    /// cores): these tests are about what the client does, not how fast the agent answers.
    static func loaded(_ agent: String) -> AgentConnectionConfiguration {
        AgentConnectionConfiguration(agents: [agent], connectTimeout: .seconds(10), requestTimeout: .seconds(30))
    }
}

@Suite(.loadsTheMachine) struct DiscoveryTests {
    @Test func lookupAnswersTheHealthyInstancesAndStreamChangesReachSubscribersAtOnce() async throws {
        try await withLiveAgent { agent in
            let connection = AgentConnection(configuration: .loaded(agent.baseURL))
            try await register("a", port: 9001, with: connection)
            try await register("b", port: 9002, with: connection)
            let discovery = ServiceDiscovery(connection: connection)
            try await whileRunning(discovery) {
                #expect(try await discovery.lookup("shop").map(\.id.rawValue) == ["a", "b"])
                var snapshots = try discovery.subscribe(to: "shop").makeAsyncIterator()
                var first = await snapshots.next()
                while first?.isLive == false { first = await snapshots.next() }
                #expect(first?.instances.count == 2)

                try await register("c", port: 9003, with: connection)
                let added = await snapshots.next()
                #expect(added?.instances.instances.map(\.id.rawValue) == ["a", "b", "c"])
                #expect(added?.isLive == true)

                // Maintenance takes an instance out of the healthy list: the change removes it from the cache.
                _ = try await AgentClient(connection: connection).setMaintenance(
                    try ServiceName("shop"), id: try InstanceID("a"), enabled: true)
                let drained = await snapshots.next()
                #expect(drained?.instances.instances.map(\.id.rawValue) == ["b", "c"])
                #expect(try await discovery.lookup("shop").map(\.id.rawValue) == ["b", "c"])
            }
            try await connection.shutdown()
        }
    }

    @Test func theLastKnownInstancesAreServedWhenNoAgentAnswers() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            let (urls, urlSink) = AsyncStream.makeStream(of: String.self)
            let (stop, stopAgent) = AsyncStream.makeStream(of: Void.self)
            group.addTask {
                try await withLiveAgent { agent in
                    urlSink.yield(agent.baseURL)
                    for await _ in stop {}
                }
            }
            var iterator = urls.makeAsyncIterator()
            let url = try #require(await iterator.next())
            let connection = AgentConnection(configuration: .init(agents: [url], connectTimeout: .milliseconds(200)))
            // Shut down however the steps end: a connection dropped unclosed stops the whole test process.
            do {
                try await register("a", port: 9001, with: connection)
                let discovery = ServiceDiscovery(connection: connection)
                group.addTask { try await discovery.run() }
                let shop = try ServiceName("shop")
                _ = try await discovery.lookup(shop)
                #expect(await eventually { discovery.cachedSnapshot(of: shop)?.isLive == true })

                stopAgent.finish()
                #expect(await eventually { discovery.cachedSnapshot(of: shop)?.isLive == false })
                try await Task.sleep(for: .milliseconds(100))
                let snapshot = try await discovery.snapshot(of: shop)
                #expect(snapshot.instances.instances.map(\.id.rawValue) == ["a"])
                #expect(!snapshot.isLive && snapshot.staleness() >= .milliseconds(100))
            } catch {
                stopAgent.finish()
                group.cancelAll()
                try? await connection.shutdown()
                throw error
            }
            group.cancelAll()
            try await connection.shutdown()
        }
    }

    @Test func anInvalidServiceNameIsRefusedWithoutAskingTheAgent() async throws {
        let discovery = ServiceDiscovery(
            connection: AgentConnection(configuration: .init(agents: ["http://127.0.0.1:9"])))
        await #expect(throws: SwitchboardClientError.self) { try await discovery.lookup("Not A Name") }
        try await discovery.connection.shutdown()
    }

    @Test func aLookupWithNoAgentAndNothingKnownSaysNoAgentAnswered() async throws {
        let connection = AgentConnection(
            configuration: .init(
                agents: ["http://127.0.0.1:9", "http://127.0.0.1:10"], connectTimeout: .milliseconds(200)))
        let discovery = ServiceDiscovery(connection: connection)
        do {
            _ = try await discovery.lookup("shop")
            Issue.record("a lookup with no agent answered")
        } catch {
            #expect(error.code == .agentUnreachable)
            #expect(error.message.contains("127.0.0.1:9") && error.message.contains("127.0.0.1:10"))
        }
        try await connection.shutdown()
    }
}

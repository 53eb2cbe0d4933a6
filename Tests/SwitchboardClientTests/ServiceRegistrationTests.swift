import Logging
import NIOHTTP1
import ServiceLifecycle
import SwitchboardCore
import SwitchboardTestSupport
import Testing

@testable import SwitchboardClient

@Suite(.loadsTheMachine) struct ServiceRegistrationTests {
    /// The registered instance as the agent has it, or nil when it is not registered.
    func registered(_ id: String, _ connection: AgentConnection) async throws -> Instance? {
        do {
            return try await AgentClient(connection: connection).instance(
                try ServiceName("shop"), id: try InstanceID(id))
        } catch let error as SwitchboardClientError where error.status == .notFound {
            return nil
        }
    }

    @Test func registersKeepsTheTTLCheckPassingComesBackWhenForgottenAndDrainsBeforeLeaving() async throws {
        try await withLiveAgent { agent in
            let connection = AgentConnection(configuration: .loaded(agent.baseURL))
            let registration = ServiceRegistration(
                connection: connection,
                configuration: .init(
                    service: try ServiceName("shop"), id: try InstanceID("r1"), address: "127.0.0.1", port: 9100,
                    meta: ["zone": "a"], ttl: .milliseconds(600), drainTime: .milliseconds(500)))
            let group = ServiceGroup(
                configuration: .init(services: [registration], logger: Logger(label: "test.registration")))
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await group.run() }

                #expect(
                    try await eventually(.seconds(20)) { try await registered("r1", connection)?.status == .passing })
                #expect(try await registered("r1", connection)?.definition.meta == ["zone": "a"])
                // Three TTLs later heartbeats have kept it passing.
                try await Task.sleep(for: .milliseconds(1800))
                #expect(try await registered("r1", connection)?.status == .passing)

                // The agent forgets it (an operator, another agent): the next heartbeat's 404 registers it again.
                _ = try await AgentClient(connection: connection).deregister(
                    try ServiceName("shop"), id: try InstanceID("r1"))
                #expect(try await eventually(.seconds(2)) { try await registered("r1", connection) != nil })

                // Shutdown: maintenance first (callers stop picking it), deregistration after the drain time.
                let shutdownStarted = ContinuousClock.now
                await group.triggerGracefulShutdown()
                #expect(try await eventually { try await registered("r1", connection)?.status == .maintenance })
                #expect(try await eventually { try await registered("r1", connection) == nil })
                #expect(ContinuousClock.now - shutdownStarted >= .milliseconds(500))
                try await tasks.waitForAll()
            }
            try await connection.shutdown()
        }
    }

    @Test func keepsTryingToRegisterUntilAnAgentAnswers() async throws {
        // The first agent is down; the connection moves on to the live one.
        try await withLiveAgent { agent in
            let connection = AgentConnection(
                configuration: .init(agents: ["http://127.0.0.1:9", agent.baseURL], connectTimeout: .milliseconds(200)))
            let registration = ServiceRegistration(
                connection: connection,
                configuration: .init(
                    service: try ServiceName("shop"), id: try InstanceID("r2"), address: "127.0.0.1", port: 9101))
            try await registration.register()
            #expect(try await registered("r2", connection) != nil)
            #expect(connection.currentAgent == agent.baseURL)
            try await connection.shutdown()
        }
    }

    @Test func aRegistrationTheAgentRefusesIsAnErrorNotARetryLoop() async throws {
        try await withLiveAgent { agent in
            let connection = AgentConnection(configuration: .loaded(agent.baseURL))
            let registration = ServiceRegistration(
                connection: connection,
                configuration: .init(
                    service: try ServiceName("shop"), id: try InstanceID("r3"), address: "127.0.0.1", port: 70_000))
            do {
                try await registration.register()
                Issue.record("port 70000 was accepted")
            } catch let error as SwitchboardClientError {
                #expect(error.code == .refused && error.status == .unprocessableEntity)
                #expect(error.message.contains("port"))
            }
            try await connection.shutdown()
        }
    }
}

import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardTestSupport
import Testing

@testable import SwitchboardClient

@Suite(.loadsTheMachine) struct ServiceClientTests {
    @Test func aFallbackAnswersWhenNoInstanceCanBeCalled() async throws {
        let discovery = ServiceDiscovery(fixed: [try ServiceName("shop"): []])
        let client = ServiceClient(
            service: try ServiceName("shop"), discovery: discovery, balancer: RoundRobinBalancer())
        let response = try await client.execute(ServiceRequest(path: "/")) { error in
            #expect(error.code == .noInstance)
            return ServiceResponse(status: .ok, body: ByteBuffer(string: "cached"))
        }
        #expect(response.instance == nil && String(buffer: response.body) == "cached")
        try await discovery.connection.shutdown()
    }

    @Test func aCallToAnInstanceThatRefusesConnectionsIsRetriedOnAnotherAndTheRateLimitRefusesTheExcess()
        async throws
    {
        // Nothing listens on port 1; the other instance is the agent's own port, which answers /v1/agent.
        try await withLiveAgent { agent in
            let port = Int(agent.baseURL.split(separator: ":").last!)!
            func instance(_ id: String, _ port: Int) throws -> Instance {
                Instance(
                    definition: InstanceDefinition(
                        service: try ServiceName("shop"), id: try InstanceID(id), address: try HostAddress("127.0.0.1"),
                        port: port),
                    createIndex: 1, modifyIndex: 1)
            }
            let discovery = ServiceDiscovery(fixed: [
                try ServiceName("shop"): [try instance("dead", 1), try instance("live", port)]
            ])
            // Shut down whatever happens: an HTTP client dropped without it traps, and takes the test run with it.
            var failure: (any Error)?
            do {
                // Attempts get time to spare: the point is where calls go, and a loaded full run is slow.
                let client = ServiceClient(
                    service: try ServiceName("shop"), discovery: discovery, balancer: RoundRobinBalancer(),
                    policy: CallPolicy(attemptTimeout: .seconds(20)))
                for _ in 0..<10 {
                    let response = try await client.execute(ServiceRequest(method: .POST, path: "/v1/agent"))
                    // A POST that never reached the dead instance is safe to send to the other one.
                    #expect(response.instance?.id.rawValue == "live")
                }
                let limited = ServiceClient(
                    service: try ServiceName("shop"), discovery: discovery, balancer: RoundRobinBalancer(),
                    policy: CallPolicy(attemptTimeout: .seconds(20), rateLimit: .init(burst: 2, perSecond: 0.01)))
                for _ in 0..<2 { _ = try await limited.execute(ServiceRequest(path: "/v1/agent")) }
                do {
                    _ = try await limited.execute(ServiceRequest(path: "/v1/agent"))
                    Issue.record("a third call within the burst of two went through")
                } catch let error as SwitchboardClientError {
                    #expect(error.code == .rejected)
                }
            } catch {
                failure = error
            }
            try await discovery.connection.shutdown()
            if let failure { throw failure }
        }
    }

    @Test func anInstanceThatStallsMidBodyTimesTheAttemptOutInsteadOfHoldingTheCall() async throws {
        try await withLiveAgent { agent in
            let backends = [
                try await ExampleBackend(agents: [agent.baseURL], service: "stalls"),
                try await ExampleBackend(agents: [agent.baseURL], service: "stalls"),
            ]
            let instances = try backends.enumerated().map { index, backend in
                Instance(
                    definition: InstanceDefinition(
                        service: try ServiceName("stalls"), id: try InstanceID("s\(index)"),
                        address: try HostAddress("127.0.0.1"), port: backend.port),
                    createIndex: 1, modifyIndex: 1)
            }
            let discovery = ServiceDiscovery(fixed: [try ServiceName("stalls"): instances])
            // Shut down whatever happens: an HTTP client dropped without it traps.
            var failure: (any Error)?
            do {
                let client = ServiceClient(
                    service: try ServiceName("stalls"), discovery: discovery, balancer: RoundRobinBalancer(),
                    policy: CallPolicy(attemptTimeout: .seconds(1), maximumRetries: 1, circuitBreaker: nil))
                // A body that comes whole within the attempt's time is read whole.
                let quick = try await client.execute(ServiceRequest(path: "/stall?ms=50"))
                #expect(String(buffer: quick.body) == "stalled for 50 ms\n")
                // Heads at once, bodies stalled for 30 s: each attempt ends after 1 s, and the call with them.
                let started = ContinuousClock.now
                do {
                    let response = try await client.execute(ServiceRequest(path: "/stall?ms=30000"))
                    Issue.record("a stalled body was answered: \(String(buffer: response.body))")
                } catch let error as SwitchboardClientError {
                    #expect(error.code == .timedOut, "\(error)")
                }
                #expect(ContinuousClock.now - started < .seconds(15))
            } catch {
                failure = error
            }
            try await discovery.connection.shutdown()
            if let failure { throw failure }
        }
    }
}

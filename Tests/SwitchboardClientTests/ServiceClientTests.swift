import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardTestSupport
import Testing

@testable import SwitchboardClient

@Suite struct ServiceClientTests {
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
            let client = ServiceClient(
                service: try ServiceName("shop"), discovery: discovery, balancer: RoundRobinBalancer())
            for _ in 0..<10 {
                let response = try await client.execute(ServiceRequest(method: .POST, path: "/v1/agent"))
                // A POST that never reached the dead instance is safe to send to the other one.
                #expect(response.instance?.id.rawValue == "live")
            }
            let limited = ServiceClient(
                service: try ServiceName("shop"), discovery: discovery, balancer: RoundRobinBalancer(),
                policy: CallPolicy(rateLimit: .init(burst: 2, perSecond: 0.01)))
            for _ in 0..<2 { _ = try await limited.execute(ServiceRequest(path: "/v1/agent")) }
            do {
                _ = try await limited.execute(ServiceRequest(path: "/v1/agent"))
                Issue.record("a third call within the burst of two went through")
            } catch let error as SwitchboardClientError {
                #expect(error.code == .rejected)
            }
            try await discovery.connection.shutdown()
        }
    }
}

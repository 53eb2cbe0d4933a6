import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOHTTP1
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardTestSupport
import Testing

@testable import SwitchboardAgent

extension ConsulAPITests {
    /// The token a Consul client sends, wherever Consul takes it from, becomes the request's identity (what ACLs
    /// will check); the native API's identity is untouched by Consul's conventions.
    @Test func theTokenAConsulClientPresentsBecomesTheRequestsIdentity() async throws {
        let router = Router(context: AgentRequestContext.self)
        router.group("/v1/agent").add(middleware: ConsulResponseMiddleware(viewAge: nil))
            .get("/token") { _, context in context.caller.presentedToken ?? "none" }
        router.get("/v1/native") { _, context in context.caller.presentedToken ?? "none" }
        let app = Application(router: router)
        try await app.test(.router) { client in
            let cases: [(String, HTTPFields, String)] = [
                ("/v1/agent/token", [HTTPField.Name("X-Consul-Token")!: "s3cret"], "s3cret"),
                ("/v1/agent/token", [.authorization: "Bearer b-token"], "b-token"),
                ("/v1/agent/token?token=q%2Bx+y", [:], "q+x y"),
                ("/v1/agent/token?token=from-query", [HTTPField.Name("X-Consul-Token")!: "header-wins"], "header-wins"),
                ("/v1/agent/token", [:], "none"),
                ("/v1/native", [HTTPField.Name("X-Consul-Token")!: "s3cret"], "none"),
            ]
            for (uri, headers, expected) in cases {
                try await client.execute(uri: uri, method: .get, headers: headers) { response in
                    #expect(String(buffer: response.body) == expected, "\(uri) \(headers)")
                }
            }
        }
    }
}

extension ConsulAPITests {
    /// Consul updates one check by its id: of an instance with two TTL checks, only the one named changes; the
    /// native heartbeat can name one check the same way.
    @Test func aTTLUpdateChangesOnlyTheCheckItNames() async throws {
        try await withLiveAgent { agent in
            let registered = try await http(
                .PUT, "\(agent.baseURL)/v1/agent/service/register",
                json: #"{"Name": "web", "ID": "w1", "Port": 80, "Checks": [{"TTL": "30s"}, {"TTL": "30s"}]}"#)
            #expect(registered.status == 200)
            #expect(try await http(.PUT, "\(agent.baseURL)/v1/agent/check/pass/service:w1:2").status == 200)
            func statuses() throws -> [HealthStatus] {
                try #require(agent.catalog.instance(service: try ServiceName("web"), id: try InstanceID("w1")).instance)
                    .checks.map(\.status)
            }
            #expect(try statuses() == [.critical, .passing])
            let native = try await http(
                .PUT, "\(agent.baseURL)/v1/services/web/instances/w1/heartbeat", json: #"{"check": "w1:ttl"}"#)
            #expect(native.status == 200, "\(native.text)")
            #expect(try statuses() == [.passing, .passing])
            let unknown = try await http(
                .PUT, "\(agent.baseURL)/v1/services/web/instances/w1/heartbeat", json: #"{"check": "w1:http"}"#)
            #expect(unknown.status == 409 && unknown.errorField == "check", "\(unknown.text)")
        }
    }
}

extension ConsulAPITests {
    @Test func aServiceIDRegisteredUnderAnotherNameMovesThere() async throws {
        try await withLiveAgent { agent in
            let register = "\(agent.baseURL)/v1/agent/service/register"
            _ = try await http(.PUT, register, json: #"{"Name": "alpha", "ID": "m1", "Port": 80}"#)
            _ = try await http(.PUT, register, json: #"{"Name": "beta", "ID": "m1", "Port": 81}"#)
            let services = try #require(
                try JSONSerialization.jsonObject(with: try await http(.GET, "\(agent.baseURL)/v1/agent/services").body)
                    as? [String: [String: Any]])
            #expect(services["m1"]?["Service"] as? String == "beta" && services["m1"]?["Port"] as? Int == 81)
            #expect(agent.catalog.summary().instances == 1, "one instance per Consul service id")
        }
    }
}

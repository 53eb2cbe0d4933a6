import HTTPTypes
import Hummingbird
import HummingbirdTesting
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

import HTTPTypes
import SwitchboardAgent
import SwitchboardCore
import Testing

/// The paths clients build (``APIPath``) and the routes the agent serves are one contract: each path a client can
/// build is served, under the method it is meant for.
@Suite("Client paths and served routes")
struct APIPathTests {
    /// Whether `path` is an instance of the route template `template` (`{name}` matches one segment).
    func matches(_ path: String, _ template: String) -> Bool {
        let segments = path.split(separator: "?").first!.split(separator: "/", omittingEmptySubsequences: false)
        let pattern = template.split(separator: "/", omittingEmptySubsequences: false)
        return segments.count == pattern.count
            && zip(pattern, segments).allSatisfy { expected, actual in
                expected.hasPrefix("{") ? !actual.isEmpty : expected == actual
            }
    }

    @Test func everyPathAClientBuildsIsServedWithItsMethod() throws {
        let service = try ServiceName("payment")
        let id = try InstanceID("p1.a_b:c")
        let built: [(HTTPRequest.Method, String)] = [
            (.get, APIPath.agent), (.get, APIPath.services), (.get, APIPath.catalogWatch), (.get, APIPath.events),
            (.get, APIPath.openAPIDocument), (.get, APIPath.metrics), (.get, APIPath.service(service)),
            (.get, APIPath.serviceWatch(service)), (.get, APIPath.instance(service, id: id)),
            (.put, APIPath.instance(service, id: id)), (.delete, APIPath.instance(service, id: id)),
            (.put, APIPath.heartbeat(service, id: id)), (.put, APIPath.maintenance(service, id: id)),
            (.post, APIPath.observations(service, id: id)),
            (.put, APIPath.aclBootstrap), (.get, APIPath.aclTokenSelf), (.get, APIPath.aclRights),
            (.get, APIPath.aclTokens),
            (.post, APIPath.aclTokens), (.get, APIPath.aclToken(accessorID: "a-1")),
            (.put, APIPath.aclToken(accessorID: "a-1")), (.delete, APIPath.aclToken(accessorID: "a-1")),
            (.get, APIPath.aclPolicies), (.post, APIPath.aclPolicies), (.get, APIPath.aclPolicy(name: "p")),
            (.put, APIPath.aclPolicy(name: "p")), (.delete, APIPath.aclPolicy(name: "p")),
        ]
        for (method, path) in built {
            #expect(
                AgentHTTPAPI.routes.contains { $0.method == method && matches(path, $0.path) },
                "\(method) \(path) is not served")
        }
        #expect(
            Set(AgentHTTPAPI.routes.map { "\($0.method) \($0.path)" }).count == built.count,
            "every served route has a path builder")
        #expect(APIPath.instance(service, id: id) == "/v1/services/payment/instances/p1.a_b:c")
    }
}

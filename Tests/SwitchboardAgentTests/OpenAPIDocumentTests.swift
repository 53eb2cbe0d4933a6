import Foundation
import HTTPTypes
import NIOHTTP1
import SwitchboardAgent
import SwitchboardCore
import SwitchboardTestSupport
import Testing
import Yams

@Suite("The OpenAPI document matches the server", .loadsTheMachine)
struct OpenAPIDocumentTests {
    /// The (method, path) pairs the served document declares.
    func documentedOperations(_ yaml: String) throws -> Set<String> {
        let document = try #require(try Yams.load(yaml: yaml) as? [String: Any])
        #expect(document["openapi"] as? String == "3.1.0")
        let paths = try #require(document["paths"] as? [String: Any])
        var operations = Set<String>()
        for (path, item) in paths {
            let item = try #require(item as? [String: Any])
            for method in ["get", "put", "post", "delete", "patch", "head", "options"] where item[method] != nil {
                operations.insert("\(method.uppercased()) \(path)")
            }
        }
        return operations
    }

    /// With ACLs on (and the bootstrap token), so that the ACL routes reach their handlers too.
    @Test func everyRouteIsDocumentedAndEveryDocumentedPathIsServed() async throws {
        let configuration = AgentConfiguration(
            httpPort: 0, storage: .memory, dns: nil, acl: ACLConfiguration(defaultPolicy: .deny))
        try await withLiveAgent(configuration: configuration) { agent in
            let served = try await http(.GET, "\(agent.baseURL)/v1/openapi.yaml")
            #expect(served.status == 200)
            #expect(served.headers.first(name: "Content-Type") == "application/yaml")
            let documented = try documentedOperations(served.text)
            let routes = Set(AgentHTTPAPI.routes.map { "\($0.method.rawValue) \($0.path)" })
            #expect(
                documented == routes,
                "documented but not routed: \(documented.subtracting(routes)); routed but not documented: \(routes.subtracting(documented))"
            )

            // Every documented operation reaches a handler: whatever it answers, it is not the unknown-route 404.
            let bootstrap = try await http(.PUT, "\(agent.baseURL)/v1/acl/bootstrap")
            let token = try #require(try bootstrap.decode(ACLToken.self).secretID)
            let headers = [("X-Switchboard-Token", token)]
            let registration = #"{"address": "10.0.0.1", "port": 1, "checks": [{"type": "ttl", "ttl": "10s"}]}"#
            _ = try await http(
                .PUT, "\(agent.baseURL)/v1/services/payment/instances/p1", json: registration, headers: headers)
            _ = try await http(
                .POST, "\(agent.baseURL)/v1/acl/policies", json: #"{"name": "docs"}"#, headers: headers)
            let spare = try await http(
                .POST, "\(agent.baseURL)/v1/acl/tokens", json: #"{"policies": []}"#, headers: headers)
            let accessor = try spare.decode(ACLToken.self).accessorID
            // Deletion last, so the instance the other operations read is still there.
            let ordered = documented.sorted {
                ($0.hasPrefix("DELETE") ? "1" : "0") + $0 < ($1.hasPrefix("DELETE") ? "1" : "0") + $1
            }
            for operation in ordered {
                let parts = operation.split(separator: " ", maxSplits: 1)
                let path = parts[1].replacingOccurrences(of: "{service}", with: "payment").replacingOccurrences(
                    of: "{id}", with: "p1"
                ).replacingOccurrences(of: "{accessor}", with: accessor).replacingOccurrences(
                    of: "{name}", with: "docs")
                let body: String? =
                    switch (parts[0], path.split(separator: "/").last ?? "") {
                    case ("PUT", "maintenance"): #"{"enabled": false}"#
                    case ("PUT", "heartbeat"): #"{"status": "passing"}"#
                    case ("POST", "observations"): #"{"kind": "ejected", "reporter": "test"}"#
                    case ("PUT", "bootstrap"): nil
                    case ("PUT", "docs"): #"{"name": "docs", "services": {"pay": "read"}}"#
                    case ("POST", "policies"): #"{"name": "more"}"#
                    case ("PUT", Substring(accessor)), ("POST", "tokens"): #"{"policies": ["docs"]}"#
                    case ("PUT", _): registration
                    default: nil
                    }
                if path.hasSuffix("/watch") {
                    // A stream never ends: its first event is the proof.
                    let stream = try await EventStreamClient(agent.baseURL + path, headers: headers)
                    #expect(stream.status == 200, "\(operation) answered \(stream.status ?? 0)")
                    #expect(try await stream.next().event == "snapshot", "\(operation)")
                    stream.close()
                    continue
                }
                let answer = try await http(
                    .init(rawValue: String(parts[0])), agent.baseURL + path, json: body, headers: headers)
                if operation == "PUT /v1/acl/bootstrap" {
                    // Once only: the second time is the handler's refusal.
                    #expect(answer.status == 409 && answer.text.contains("bootstrapped already"), "\(answer.text)")
                    continue
                }
                if operation == "DELETE /v1/acl/policies/{name}" {
                    // The spare token holds it by then: the handler's refusal names the holders.
                    #expect(answer.status == 409 && answer.text.contains("held by"), "\(answer.text)")
                    continue
                }
                #expect((200..<300).contains(answer.status), "\(operation) answered \(answer.status): \(answer.text)")
            }
        }
    }

    @Test func theDocumentInTheRepositoryIsTheOneServed() async throws {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/SwitchboardAgent/Resources/openapi.yaml")
        let onDisk = try String(contentsOf: source, encoding: .utf8)
        let served = try await withLiveAgent { agent in
            try await http(.GET, "\(agent.baseURL)/v1/openapi.yaml").text
        }
        #expect(served == onDisk)
    }
}

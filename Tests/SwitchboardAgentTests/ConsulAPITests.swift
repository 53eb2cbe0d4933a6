import Foundation
import NIOHTTP1
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardTestSupport
import Testing

/// Consul's HTTP API on the agent, driven by the real py-consul and checked against what Consul answers.
@Suite("Consul's HTTP API", .loadsTheMachine)
struct ConsulAPITests {
    @Test func pyConsulRegistersReportsHealthFindsBlocksDrainsAndDeregisters() async throws {
        let python = try await PythonClients.python()
        try await withLiveAgent { agent in
            let port = try #require(URL(string: agent.baseURL)?.port)
            let run = try await runProgram(
                python, [PythonClients.fixture("consul_client.py"), String(port)], timeout: .seconds(90))
            #expect(run.status == 0, "py-consul's run failed:\n\(run.stdout)\n\(run.stderr)")
            #expect(run.stdout.hasSuffix("ok\n"), "\(run.stdout)")
            // What py-consul registered is the native API's too.
            let lookup = try await http(.GET, "\(agent.baseURL)/v1/services/web?status=any").decode(ServiceLookup.self)
            #expect(lookup.instances.map(\.id.rawValue) == ["web-1"])
            #expect(lookup.instances.first?.definition.tags == ["blue", "v1"])
        }
    }

    @Test func aNativeRegistrationIsFoundThroughConsulsHealthAndCatalogEndpoints() async throws {
        try await withLiveAgent { agent in
            _ = try await http(
                .PUT, "\(agent.baseURL)/v1/services/payment/instances/p1",
                json: #"{"address": "10.0.0.7", "port": 9000, "tags": ["v2"], "weight": 5}"#)
            let health = try await http(.GET, "\(agent.baseURL)/v1/health/service/payment")
            #expect(health.status == 200)
            #expect(health.headers.first(name: "X-Consul-Index").flatMap(UInt64.init) == health.index)
            #expect(health.headers.first(name: "X-Consul-KnownLeader") == "true")
            let entries = try #require(try JSONSerialization.jsonObject(with: health.body) as? [[String: Any]])
            let service = try #require(entries.first?["Service"] as? [String: Any])
            #expect(service["ID"] as? String == "p1" && service["Address"] as? String == "10.0.0.7")
            #expect((service["Weights"] as? [String: Int])?["Passing"] == 5)
            let services = try await http(.GET, "\(agent.baseURL)/v1/catalog/services")
            #expect(try JSONSerialization.jsonObject(with: services.body) as? [String: [String]] == ["payment": ["v2"]])
            let unknown = try await http(.GET, "\(agent.baseURL)/v1/health/service/nothing-here")
            #expect(unknown.status == 200 && unknown.text == "[]", "an unknown service has no entries, as in Consul")
        }
    }

    @Test func badInputGetsConsulsStatusAndMessageAndTheAgentKeepsServing() async throws {
        try await withLiveAgent { agent in
            let base = "\(agent.baseURL)/v1/agent"
            let cases: [(HTTPMethod, String, String?, Int, String)] = [
                (.PUT, "/service/register", #"{"Port": 80}"#, 400, "Missing service name"),
                (.PUT, "/service/register", "{not json", 400, "Request decode failed"),
                (.PUT, "/service/register", #"{"Name": "web", "Port": "80"}"#, 400, "Port must be a whole number"),
                (
                    .PUT, "/service/register", #"{"Name": "web", "Port": 80, "Check": {"Args": ["x"]}}"#, 400,
                    "not supported"
                ),
                (.PUT, "/service/register", #"{"Name": "web", "Port": 70000}"#, 400, "Port"),
                (.PUT, "/service/deregister/ghost", nil, 404, #"Unknown service ID "ghost""#),
                (.PUT, "/check/pass/service:ghost", nil, 404, #"Unknown check ID "service:ghost""#),
                (.PUT, "/service/maintenance/ghost?enable=true", nil, 404, "Unknown service ID"),
            ]
            for (method, path, body, status, message) in cases {
                let answer = try await http(method, base + path, json: body)
                #expect(answer.status == status, "\(path) \(body ?? ""): \(answer.text)")
                #expect(answer.text.contains(message), "\(path) \(body ?? ""): \(answer.text)")
                #expect(answer.headers.first(name: "Content-Type")?.hasPrefix("text/plain") == true)
            }
            // A check that is not a TTL check cannot be set by hand.
            _ = try await http(
                .PUT, base + "/service/register",
                json: #"{"Name": "web", "ID": "w1", "Port": 80, "Check": {"TCP": "127.0.0.1:1", "Interval": "10s"}}"#)
            let notTTL = try await http(.PUT, base + "/check/pass/service:w1")
            #expect(notTTL.status == 500 && notTTL.text == #"CheckID "service:w1" does not have associated TTL"#)
            #expect(try await http(.GET, "\(agent.baseURL)/v1/agent/services").status == 200, "still serving")
            #expect(agent.catalog.summary().instances == 1, "nothing half-written by the refused requests")
            // Output longer than a check keeps is cut, as Consul does, not refused.
            _ = try await http(
                .PUT, base + "/service/register",
                json: #"{"Name": "web", "ID": "w2", "Port": 81, "Check": {"TTL": "30s"}}"#)
            let long = String(repeating: "x", count: 20_000)
            #expect(try await http(.PUT, base + "/check/fail/service:w2?note=\(long)").status == 200)
            let checks = try #require(
                try JSONSerialization.jsonObject(with: try await http(.GET, base + "/checks").body)
                    as? [String: [String: Any]])
            let output = try #require(checks["service:w2"]?["Output"] as? String)
            #expect(checks["service:w2"]?["Status"] as? String == "critical")
            #expect(output.hasPrefix("xxx") && output.utf8.count < 20_000, "\(output.utf8.count)")
        }
    }
}

extension ConsulAPITests {
    @Test func consulAddrServesConsulsAPIOnAListenerOfItsOwn() async throws {
        let agent = try await AgentProcess(
            dataDirectory: nil, dnsAddress: nil, extraArguments: ["--consul-addr", "127.0.0.1:0"])
        let consul = "http://" + (try await agent.waitForLogged("Consul API listening"))
        #expect(consul != agent.baseURL)
        let registered = try await http(
            .PUT, "\(consul)/v1/agent/service/register", json: #"{"Name": "cart", "ID": "c1", "Port": 9000}"#)
        #expect(registered.status == 200, "\(registered.text)")
        let lookup = try await http(.GET, "\(agent.baseURL)/v1/services/cart?status=any").decode(ServiceLookup.self)
        #expect(lookup.instances.map(\.id.rawValue) == ["c1"], "one catalog behind both listeners")
        let self_ = try await http(.GET, "\(consul)/v1/agent/self")
        #expect(self_.status == 200 && self_.text.contains(#""Datacenter":"dc1""#), "\(self_.text)")
        #expect(await agent.stop(with: SIGTERM) == 0, "both listeners stop cleanly: \(agent.log)")
    }
}

extension ConsulAPITests {
    @Test func consulsDNSNamesAnswerUnderTheConsulDomainNodesIncluded() async throws {
        let agent = try await AgentProcess(
            dataDirectory: nil, httpAddress: "127.0.0.1:0", extraArguments: ["--dns-domain", "consul."])
        let dnsPort = try #require(agent.dnsPort)
        let registered = try await http(
            .PUT, "\(agent.baseURL)/v1/agent/service/register",
            json: #"{"Name": "web", "ID": "w1", "Address": "10.0.0.9", "Port": 80, "Tags": ["primary"]}"#)
        #expect(registered.status == 200)
        #expect(try await digAddresses(dnsPort, "web.service.consul") == ["10.0.0.9"])
        #expect(try await digAddresses(dnsPort, "primary.web.service.consul") == ["10.0.0.9"])
        let agentSelf = try #require(
            try JSONSerialization.jsonObject(with: try await http(.GET, "\(agent.baseURL)/v1/agent/self").body)
                as? [String: [String: Any]])
        let node = try #require(agentSelf["Config"]?["NodeName"] as? String)
        #expect(try await digAddresses(dnsPort, "\(node).node.consul") == ["127.0.0.1"], "the agent's own node")
        #expect(try await digAddresses(dnsPort, "no-such-node.node.consul") == [])
    }
}

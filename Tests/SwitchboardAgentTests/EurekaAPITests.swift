import Foundation
import NIOHTTP1
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Eureka's REST API on the agent: its JSON and XML forms, leases as TTL checks, status overrides, the delta, and one
/// catalog with the native API and Consul's.
@Suite("Eureka's REST API", .loadsTheMachine)
struct EurekaAPITests {
    static let registration = #"""
        {"instance": {"instanceId": "h1:order:8080", "hostName": "h1", "app": "ORDER", "ipAddr": "127.0.0.1",
         "status": "UP", "port": {"$": 8080, "@enabled": "true"}, "securePort": {"$": 443, "@enabled": "false"},
         "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
         "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90}, "metadata": {"zone": "a"},
         "vipAddress": "order", "lastDirtyTimestamp": "1700000000000"}}
        """#

    @Test func aJSONRegistrationIsListedInXMLAndJSONAndFoundThroughTheNativeAndConsulAPIs() async throws {
        try await withLiveAgent { agent in
            let eureka = "\(agent.baseURL)/eureka"
            #expect(try await http(.POST, "\(eureka)/apps/ORDER", json: Self.registration).status == 204)
            let xml = try await http(.GET, "\(eureka)/apps/")
            #expect(xml.headers.first(name: "Content-Type") == "application/xml")
            #expect(xml.text.contains("<name>ORDER</name>") && xml.text.contains(#"<port enabled="true">8080</port>"#))
            #expect(xml.text.contains("<apps__hashcode>UP_1_</apps__hashcode>"), "\(xml.text)")
            let json = try await http(.GET, "\(eureka)/v2/apps", headers: [("Accept", "application/json")])
            let applications = try #require(
                (try JSONSerialization.jsonObject(with: json.body) as? [String: Any])?["applications"] as? [String: Any]
            )
            #expect(applications["apps__hashcode"] as? String == "UP_1_")
            let native = try await http(.GET, "\(agent.baseURL)/v1/services/order").decode(ServiceLookup.self)
            #expect(native.instances.map(\.id.rawValue) == ["h1:order:8080"])
            #expect(native.instances.first?.definition.meta["zone"] == "a")
            #expect(native.instances.first?.checks.first?.definition.ttl == .seconds(90), "the lease is a TTL check")
            let consul = try await http(.GET, "\(agent.baseURL)/v1/health/service/order?passing")
            #expect(consul.text.contains(#""ID":"h1:order:8080""#), "\(consul.text)")
            let dnsPort = try #require(agent.dnsPort)
            #expect(try await digAddresses(dnsPort, "order.service.switchboard") == ["127.0.0.1"])
            // And the other way: registered through Consul, listed by Eureka.
            _ = try await http(
                .PUT, "\(agent.baseURL)/v1/agent/service/register",
                json: #"{"Name": "cart", "ID": "cart-1", "Address": "10.0.0.3", "Port": 7000}"#)
            let cart = try await http(.GET, "\(eureka)/apps/CART")
            #expect(cart.status == 200 && cart.text.contains("<instanceId>cart-1</instanceId>"), "\(cart.text)")
            #expect(cart.text.contains("<ipAddr>10.0.0.3</ipAddr>"), "\(cart.text)")
        }
    }

    @Test func renewalsCountAndAnUnknownInstanceAnswers404SoTheClientRegistersAgain() async throws {
        try await withLiveAgent { agent in
            let eureka = "\(agent.baseURL)/eureka"
            _ = try await http(.POST, "\(eureka)/apps/ORDER", json: Self.registration)
            let renewed = try await http(.PUT, "\(eureka)/apps/ORDER/h1:order:8080?status=UP&lastDirtyTimestamp=1")
            #expect(renewed.status == 200)
            #expect(try await http(.PUT, "\(eureka)/apps/ORDER/ghost?status=UP").status == 404)
            let down = try await http(.PUT, "\(eureka)/apps/ORDER/h1:order:8080?status=DOWN")
            #expect(down.status == 200)
            let delta = try await http(.GET, "\(eureka)/apps/delta")
            #expect(delta.text.contains("<status>DOWN</status>"), "\(delta.text)")
            #expect(delta.text.contains("<apps__hashcode>DOWN_1_</apps__hashcode>"), "\(delta.text)")
            #expect(try await http(.DELETE, "\(eureka)/apps/ORDER/h1:order:8080").status == 200)
            #expect(try await http(.GET, "\(eureka)/apps/ORDER").status == 404)
            let afterCancel = try await http(.GET, "\(eureka)/apps/delta")
            #expect(afterCancel.text.contains("<actionType>DELETED</actionType>"), "\(afterCancel.text)")
        }
    }

    @Test func anXMLRegistrationAndStatusOverridesWork() async throws {
        try await withLiveAgent { agent in
            let eureka = "\(agent.baseURL)/eureka"
            let xml = """
                <instance><instanceId>p1</instanceId><app>PAYMENT</app><ipAddr>10.0.0.2</ipAddr>
                <status>UP</status><port enabled="true">9000</port>
                <leaseInfo><durationInSecs>30</durationInSecs></leaseInfo></instance>
                """
            let registered = try await http(
                .POST, "\(eureka)/apps/PAYMENT", body: Data(xml.utf8), contentType: "application/xml")
            #expect(registered.status == 204, "\(registered.text)")
            #expect(try await http(.PUT, "\(eureka)/apps/PAYMENT/p1/status?value=OUT_OF_SERVICE").status == 200)
            let drained = try await http(.GET, "\(eureka)/apps/PAYMENT/p1")
            #expect(drained.text.contains("<status>OUT_OF_SERVICE</status>"), "\(drained.text)")
            let native = try await http(.GET, "\(agent.baseURL)/v1/services/payment?status=any")
            #expect(try native.decode(ServiceLookup.self).instances.first?.status == .maintenance)
            #expect(try await http(.DELETE, "\(eureka)/apps/PAYMENT/p1/status").status == 200)
            let back = try await http(.GET, "\(eureka)/instances/p1")
            #expect(back.text.contains("<status>UP</status>"), "\(back.text)")
        }
    }

    @Test func badRegistrationsGet400AndLeaveNothingBehind() async throws {
        try await withLiveAgent { agent in
            let eureka = "\(agent.baseURL)/eureka"
            let cases = [
                #"{"instance": {"app": "ORDER", "ipAddr": "10.0.0.1", "port": {"$": 80}}}"#,
                #"{"instance": {"instanceId": "o1", "app": "OTHER", "ipAddr": "10.0.0.1", "port": {"$": 80}}}"#,
                #"{"instance": {"instanceId": "o1", "app": "ORDER", "port": {"$": 80}}}"#,
                "not json",
            ]
            for body in cases {
                let answer = try await http(.POST, "\(eureka)/apps/ORDER", json: body)
                #expect(answer.status == 400, "\(body): \(answer.text)")
            }
            let badName = try await http(.POST, "\(eureka)/apps/BAD_NAME", json: Self.registration)
            #expect(badName.status == 400, "\(badName.text)")
            #expect(agent.catalog.summary().instances == 0)
        }
    }
}

extension EurekaAPITests {
    /// py-eureka-client 0.13 against agent processes: registers, renews, fetches the registry and its deltas (no hash
    /// mismatch, no re-fetch loop), calls another app through its own balancer, registers again by itself after the
    /// agent restarts empty, and cancels.
    @Test func pyEurekaClientRegistersRenewsFetchesCallsSurvivesARestartAndCancels() async throws {
        let python = try await PythonClients.python()
        let port = try freePort()
        let address = "127.0.0.1:\(port)"
        var agent = try await AgentProcess(dataDirectory: nil, httpAddress: address, dnsAddress: nil)
        let work = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: work) }
        let signal = work + "/restarted"
        let output = work + "/client.out"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let client = Process()
        client.executableURL = URL(fileURLWithPath: python)
        client.arguments = [PythonClients.fixture("eureka_client.py"), "http://\(address)", signal]
        client.standardOutput = FileHandle(forWritingAtPath: output)
        client.standardError = client.standardOutput
        try client.run()
        defer { if client.isRunning { client.terminate() } }
        func printed() -> String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }
        let deadline = ContinuousClock.now + .seconds(90)
        while !printed().contains("restart me"), client.isRunning, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(printed().contains("restart me"), "\(printed())")
        // The agent dies and comes back empty where the client expects it.
        await agent.stop(with: SIGKILL)
        agent = try await AgentProcess(dataDirectory: nil, httpAddress: address, dnsAddress: nil)
        _ = FileManager.default.createFile(atPath: signal, contents: nil)
        while client.isRunning, ContinuousClock.now < deadline + .seconds(60) {
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(!client.isRunning && client.terminationStatus == 0, "\(printed())")
        // The client's heartbeat threads may log after the last step: "ok" is a line of its own, not the last.
        #expect(printed().split(separator: "\n").contains("ok"), "\(printed())")
        _ = await agent.stop(with: SIGTERM)
    }
}

extension EurekaAPITests {
    static func shortLease(_ id: String) -> String {
        #"{"instance": {"instanceId": "\#(id)", "app": "ORDER", "ipAddr": "10.0.0.1", "status": "UP", "port": {"$": 80, "@enabled": "true"}, "leaseInfo": {"renewalIntervalInSecs": 1, "durationInSecs": 3}}}"#
    }

    static func status(_ agent: LiveAgent, _ id: String) async throws -> String? {
        let answer = try await http(.GET, "\(agent.baseURL)/eureka/apps/ORDER/\(id)")
        guard answer.status == 200 else { return nil }
        return answer.text.firstMatch(of: /<status>(\w+)<\/status>/).map { String($0.1) }
    }

    @Test func anInstanceRenewingWhileDownStaysRegisteredAndAnExpiredLeaseIsEvicted() async throws {
        try await withLiveAgent { agent in
            let eureka = "\(agent.baseURL)/eureka"
            #expect(try await http(.POST, "\(eureka)/apps/ORDER", json: Self.shortLease("o1")).status == 204)
            // More than a lease duration (3 s) of renewals reporting DOWN: critical, but alive and registered.
            for _ in 0..<16 {
                #expect(try await http(.PUT, "\(eureka)/apps/ORDER/o1?status=DOWN").status == 200)
                try await Task.sleep(for: .milliseconds(250))
            }
            #expect(try await Self.status(agent, "o1") == "DOWN")
            let instance = try #require(
                agent.catalog.instance(service: try ServiceName("order"), id: try InstanceID("o1")).instance)
            #expect(instance.checks.map(\.status) == [.passing, .critical], "the lease lives, the status is DOWN")
            #expect(try await http(.PUT, "\(eureka)/apps/ORDER/o1?status=UP").status == 200)
            #expect(try await Self.status(agent, "o1") == "UP")
            // No more renewals: critical after one duration, removed after another.
            let deadline = ContinuousClock.now + .seconds(20)
            while try await Self.status(agent, "o1") != nil, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(100))
            }
            #expect(try await Self.status(agent, "o1") == nil, "evicted once the lease expired")
        }
    }

    @Test func aDownOverrideOutlivesRenewalsUntilItIsRemoved() async throws {
        try await withLiveAgent { agent in
            let eureka = "\(agent.baseURL)/eureka"
            _ = try await http(.POST, "\(eureka)/apps/ORDER", json: Self.registration)
            let id = "h1:order:8080"
            #expect(try await http(.PUT, "\(eureka)/apps/ORDER/\(id)/status?value=DOWN").status == 200)
            #expect(try await http(.PUT, "\(eureka)/apps/ORDER/\(id)?status=UP").status == 200)
            #expect(try await Self.status(agent, id) == "DOWN", "the client's UP does not undo the override")
            let listed = try await http(.GET, "\(eureka)/apps/ORDER/\(id)")
            #expect(listed.text.contains("<overriddenstatus>DOWN</overriddenstatus>"), "\(listed.text)")
            // Registering again keeps it too.
            _ = try await http(.POST, "\(eureka)/apps/ORDER", json: Self.registration)
            #expect(try await Self.status(agent, id) == "DOWN")
            #expect(try await http(.DELETE, "\(eureka)/apps/ORDER/\(id)/status").status == 200)
            #expect(try await http(.PUT, "\(eureka)/apps/ORDER/\(id)?status=UP").status == 200)
            #expect(try await Self.status(agent, id) == "UP")
            #expect(try await http(.PUT, "\(eureka)/apps/ORDER/\(id)/status?value=SIDEWAYS").status == 400)
        }
    }
}

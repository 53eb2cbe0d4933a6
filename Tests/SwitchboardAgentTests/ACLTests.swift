import Foundation
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// ACL tokens and policies on a live agent process: deny by default, scoped writes, filtered reads, bootstrap once,
/// tokens durable and hashed, the Consul layer's token, and the audit trail of every write.
@Suite(.serialized) struct ACLTests {
    /// An agent with ACLs on (deny by default) and its bootstrap (management) token.
    struct SecuredAgent {
        let process: AgentProcess
        let management: String
        var url: String { process.baseURL }

        /// A token holding a new policy `name` made of `policy` (JSON without the name); returns its secret.
        func token(policy name: String, _ policy: String) async throws -> (secret: String, accessor: String) {
            let created = try await http(
                .POST, "\(url)/v1/acl/policies", json: #"{"name": "\#(name)", \#(policy)}"#,
                headers: [("X-Switchboard-Token", management)])
            #expect(created.status == 201, "\(created.text)")
            let token = try await http(
                .POST, "\(url)/v1/acl/tokens", json: #"{"policies": ["\#(name)"], "description": "\#(name)"}"#,
                headers: [("X-Switchboard-Token", management)])
            #expect(token.status == 201, "\(token.text)")
            let decoded = try token.decode(ACLToken.self)
            return (try #require(decoded.secretID), decoded.accessorID)
        }

        func register(_ service: String, _ id: String, token: String, port: Int = 80) async throws -> HTTPAnswer {
            try await http(
                .PUT, "\(url)/v1/services/\(service)/instances/\(id)",
                json: #"{"address": "127.0.0.7", "port": \#(port)}"#,
                headers: [("X-Switchboard-Token", token)])
        }
    }

    static func withSecuredAgent<T>(
        dataDirectory: String? = nil, extraArguments: [String] = [], _ body: (SecuredAgent) async throws -> T
    ) async throws -> T {
        let process = try await AgentProcess(
            dataDirectory: dataDirectory, extraArguments: ["--acl-default-policy", "deny"] + extraArguments)
        let bootstrap = try await http(.PUT, "\(process.baseURL)/v1/acl/bootstrap")
        #expect(bootstrap.status == 200, "\(bootstrap.text)")
        let secret = try #require(try bootstrap.decode(ACLToken.self).secretID)
        return try await body(SecuredAgent(process: process, management: secret))
    }

    /// Deny by default: no token is 401, a token scoped to `order` writing `payment` is 403 naming the permission,
    /// and the same token writes `order`.
    @Test func denyByDefaultRefusesAnonymousWritesAndWritesOutsideTheTokensScope() async throws {
        try await Self.withSecuredAgent { agent in
            let anonymous = try await http(
                .PUT, "\(agent.url)/v1/services/payment/instances/p1", json: #"{"address": "127.0.0.7", "port": 80}"#)
            #expect(anonymous.status == 401)
            #expect(anonymous.errorCode == "unauthorized")
            let unknown = try await agent.register("payment", "p1", token: "not-a-token")
            #expect(unknown.status == 401)
            let order = try await agent.token(policy: "order-writer", #""services": {"order": "write"}"#)
            let refused = try await agent.register("payment", "p1", token: order.secret)
            #expect(refused.status == 403)
            #expect(refused.errorCode == "permission_denied")
            #expect(refused.errorMessage?.contains("service:payment:write") == true, "\(refused.text)")
            #expect(try await agent.register("order", "o1", token: order.secret).status == 201)
            // Bearer works as well as the header; reads of the agent need agent:read.
            let bearer = try await http(
                .DELETE, "\(agent.url)/v1/services/order/instances/o1",
                headers: [("Authorization", "Bearer \(order.secret)")])
            #expect(bearer.status == 200, "\(bearer.text)")
            let info = try await http(.GET, "\(agent.url)/v1/agent", headers: [("X-Switchboard-Token", order.secret)])
            #expect(info.status == 403)
        }
    }

    /// The bootstrap token manages everything, and a second bootstrap is refused.
    @Test func theBootstrapTokenWorksAndASecondBootstrapIsRefused() async throws {
        try await Self.withSecuredAgent { agent in
            let again = try await http(.PUT, "\(agent.url)/v1/acl/bootstrap")
            #expect(again.status == 409)
            #expect(again.errorMessage?.contains("bootstrapped already") == true)
            #expect(try await agent.register("payment", "p1", token: agent.management).status == 201)
            let me = try await http(
                .GET, "\(agent.url)/v1/acl/token/self", headers: [("X-Switchboard-Token", agent.management)])
            let token = try me.decode(ACLToken.self)
            #expect(token.policies == ["global-management"])
            #expect(token.secretID == nil)
            let list = try await http(
                .GET, "\(agent.url)/v1/acl/tokens", headers: [("X-Switchboard-Token", agent.management)])
            #expect(!list.text.contains(agent.management))
        }
    }

    /// A read token sees only its services: in the service list, lookups, the catalog's watch stream and the event
    /// log; everything else is left out or refused.
    @Test func aReadTokenSeesOnlyItsServicesInListsLookupsStreamsAndEvents() async throws {
        try await Self.withSecuredAgent { agent in
            for service in ["order", "payment", "cart"] {
                #expect(try await agent.register(service, "\(service)-1", token: agent.management).status == 201)
            }
            let reader = try await agent.token(
                policy: "order-reader", #""services": {"order": "read", "pay": "read"}, "events": "read""#)
            let headers = [("X-Switchboard-Token", reader.secret)]
            let list = try await http(.GET, "\(agent.url)/v1/services", headers: headers).decode(ServiceList.self)
            #expect(list.services.map(\.name.rawValue).sorted() == ["order", "payment"])
            #expect(try await http(.GET, "\(agent.url)/v1/services/order", headers: headers).status == 200)
            #expect(try await http(.GET, "\(agent.url)/v1/services/cart", headers: headers).status == 403)
            #expect(try await http(.GET, "\(agent.url)/v1/services/cart/watch", headers: headers).status == 403)
            #expect(try await agent.register("order", "o9", token: reader.secret).status == 403)

            let stream = try await EventStreamClient("\(agent.url)/v1/watch", headers: headers)
            defer { stream.close() }
            let snapshot = try await stream.next()
            #expect(snapshot.event == "snapshot")
            #expect(snapshot.data.contains("order-1") && snapshot.data.contains("payment-1"))
            #expect(!snapshot.data.contains("cart-1"))
            #expect(try await agent.register("cart", "cart-2", token: agent.management).status == 201)
            #expect(try await agent.register("order", "order-2", token: agent.management).status == 201)
            let change = try await stream.next()
            #expect(change.data.contains("order-2"), "\(change.data)")

            let events = try await http(.GET, "\(agent.url)/v1/events", headers: headers).decode(EventPage.self)
            #expect(Set(events.events.map(\.service.rawValue)) == ["order", "payment"])
            #expect(events.acl == nil)
        }
    }

    /// Tokens and policies survive a `kill -9` and a restart; the store holds only the secret's hash.
    @Test func tokensSurviveARestartAndAreNotStoredInClear() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (management, order) = try await Self.withSecuredAgent(dataDirectory: directory) { agent in
            let order = try await agent.token(policy: "order-writer", #""services": {"order": "write"}"#)
            await agent.process.stop(with: SIGKILL)
            return (agent.management, order.secret)
        }
        let restarted = try await AgentProcess(
            dataDirectory: directory, extraArguments: ["--acl-default-policy", "deny"])
        let url = restarted.baseURL
        let written = try await http(
            .PUT, "\(url)/v1/services/order/instances/o1", json: #"{"address": "127.0.0.7", "port": 80}"#,
            headers: [("X-Switchboard-Token", order)])
        #expect(written.status == 201, "\(written.text)")
        #expect(try await http(.PUT, "\(url)/v1/acl/bootstrap").status == 409)
        let tokens = try await http(.GET, "\(url)/v1/acl/tokens", headers: [("X-Switchboard-Token", management)])
        #expect(tokens.status == 200)
        for file in try FileManager.default.contentsOfDirectory(atPath: directory) {
            let bytes = try Data(contentsOf: URL(fileURLWithPath: directory).appendingPathComponent(file))
            for secret in [management, order] {
                #expect(bytes.range(of: Data(secret.utf8)) == nil, "\(file) holds a token's secret in clear")
            }
        }
        let hash = Data(StoredACLHash.sha256Hex(order).utf8)
        let database = try Data(contentsOf: URL(fileURLWithPath: directory).appendingPathComponent("catalog.sqlite"))
        let wal = (try? Data(contentsOf: URL(fileURLWithPath: directory).appendingPathComponent("catalog.sqlite-wal")))
        #expect(database.range(of: hash) != nil || wal?.range(of: hash) != nil, "the token's hash is stored")
    }

    /// Every write appears in the event log with the token's accessor id, the client's address and the request id;
    /// ACL changes too; no secret appears in the agent's log, in an event or in `switchboard events`.
    @Test func everyWriteIsAuditedWithItsAccessorAndAddressAndNoSecretIsLogged() async throws {
        try await Self.withSecuredAgent(extraArguments: ["--log-level", "debug"]) { agent in
            let writer = try await agent.token(
                policy: "order-all", #""services": {"order": "write"}, "events": "read", "acl": "read""#)
            let headers = [("X-Switchboard-Token", writer.secret), ("X-Request-ID", "audit-1")]
            let registered = try await http(
                .PUT, "\(agent.url)/v1/services/order/instances/o1",
                json: #"{"address": "127.0.0.7", "port": 80, "checks": [{"type": "ttl", "ttl": "30s"}]}"#,
                headers: headers)
            #expect(registered.status == 201)
            _ = try await http(
                .PUT, "\(agent.url)/v1/services/order/instances/o1/maintenance", json: #"{"enabled": true}"#,
                headers: headers)
            _ = try await http(
                .PUT, "\(agent.url)/v1/services/order/instances/o1/heartbeat", json: #"{"status": "warning"}"#,
                headers: headers)
            _ = try await http(.DELETE, "\(agent.url)/v1/services/order/instances/o1", headers: headers)
            let page = try await http(.GET, "\(agent.url)/v1/events", headers: headers).decode(EventPage.self)
            let kinds = page.events.map(\.kind)
            #expect(kinds == [.added, .status, .status, .removed], "\(kinds)")
            for event in page.events {
                #expect(event.by?.accessorID == writer.accessor)
                #expect(event.by?.address?.hasPrefix("127.0.0.1:") == true)
                #expect(event.by?.requestID == "audit-1")
            }
            let acl = try #require(page.acl)
            #expect(acl.map(\.action) == [.bootstrapped, .policyCreated, .tokenCreated])
            #expect(acl[2].target == writer.accessor)

            let printed = try await SwitchboardBinary.run(
                ["events", "--agent", agent.url], environment: ["SWITCHBOARD_TOKEN": agent.management])
            #expect(printed.status == 0, "\(printed.stderr)")
            #expect(printed.stdout.contains(writer.accessor) && printed.stdout.contains("tokenCreated"))
            let everything = agent.process.log + page.events.map { "\($0)" }.joined() + printed.stdout
            #expect(!everything.contains(writer.secret), "a token's secret was logged")
            #expect(!everything.contains(agent.management), "the bootstrap secret was logged")
        }
    }

    /// The Consul layer takes Consul's token (`X-Consul-Token`, `?token=`) and refuses the way Consul does.
    @Test func theConsulLayerHonoursConsulsToken() async throws {
        try await Self.withSecuredAgent { agent in
            let order = try await agent.token(policy: "order-writer", #""services": {"order": "write", "": "read"}"#)
            let body = #"{"Name": "order", "ID": "o1", "Port": 80}"#
            let anonymous = try await http(.PUT, "\(agent.url)/v1/agent/service/register", json: body)
            #expect(anonymous.status == 401)
            let withHeader = try await http(
                .PUT, "\(agent.url)/v1/agent/service/register", json: body, headers: [("X-Consul-Token", order.secret)])
            #expect(withHeader.status == 200, "\(withHeader.text)")
            let payment = try await http(
                .PUT, "\(agent.url)/v1/agent/service/register?token=\(order.secret)",
                json: #"{"Name": "payment", "ID": "p1", "Port": 80}"#)
            #expect(payment.status == 403)
            #expect(payment.text.contains("service:payment:write"))
            let health = try await http(
                .GET, "\(agent.url)/v1/health/service/order", headers: [("X-Consul-Token", order.secret)])
            #expect(health.status == 200)
            #expect(health.text.contains("\"o1\""))
        }
    }

    /// DNS answers with the anonymous token's rights: nothing under deny until the anonymous token is given a
    /// policy that reads the service.
    @Test func dnsAnswersOnlyWhatTheAnonymousTokenMayRead() async throws {
        try await Self.withSecuredAgent { agent in
            #expect(try await agent.register("payment", "p1", token: agent.management).status == 201)
            let port = try #require(agent.process.dnsPort)
            #expect(try await digAddresses(port, "payment.service.switchboard") == [])
            _ = try await http(
                .POST, "\(agent.url)/v1/acl/policies", json: #"{"name": "dns", "services": {"": "read"}}"#,
                headers: [("X-Switchboard-Token", agent.management)])
            let anonymous = try await http(
                .PUT, "\(agent.url)/v1/acl/tokens/anonymous", json: #"{"policies": ["dns"]}"#,
                headers: [("X-Switchboard-Token", agent.management)])
            #expect(anonymous.status == 200, "\(anonymous.text)")
            #expect(try await digAddresses(port, "payment.service.switchboard") == ["127.0.0.7"])
            // And anonymous callers of the API may now read, still not write.
            #expect(try await http(.GET, "\(agent.url)/v1/services/payment").status == 200)
            let write = try await http(
                .PUT, "\(agent.url)/v1/services/payment/instances/p2", json: #"{"address": "127.0.0.7", "port": 81}"#)
            #expect(write.status == 401)
        }
    }

    /// The client library registers, heartbeats and discovers through an agent with ACLs on, with its token;
    /// without one the agent refuses it.
    @Test func theClientLibraryRegistersAndDiscoversWithAToken() async throws {
        try await Self.withSecuredAgent { agent in
            let token = try await agent.token(policy: "shop", #""services": {"order": "write", "payment": "read"}"#)
            #expect(try await agent.register("payment", "p1", token: agent.management).status == 201)
            let connection = AgentConnection(
                configuration: AgentConnectionConfiguration(agents: [agent.url], token: token.secret))
            let registration = ServiceRegistration(
                connection: connection,
                configuration: .init(
                    service: try ServiceName("order"), id: try InstanceID("o1"), address: "127.0.0.9", port: 8080,
                    ttl: .seconds(2)))
            let discovery = ServiceDiscovery(connection: connection)
            let management = [("X-Switchboard-Token", agent.management)]
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await registration.run() }
                group.addTask { try await discovery.run() }
                // Registered, and kept passing by heartbeats past its 2 s TTL.
                try await Task.sleep(for: .seconds(3))
                let order = try await http(.GET, "\(agent.url)/v1/services/order", headers: management)
                    .decode(ServiceLookup.self)
                #expect(order.instances.map(\.id.rawValue) == ["o1"])
                #expect(order.instances.first?.status == .passing)
                let payment = try await discovery.lookup("payment", deadline: .now + .seconds(10))
                #expect(payment.map(\.id.rawValue) == ["p1"])
                group.cancelAll()
            }
            let client = AgentClient(connection: connection)
            let refused = await #expect(throws: SwitchboardClientError.self) {
                _ = try await client.register(
                    RegistrationRequest(address: "127.0.0.9", port: 8080), service: try ServiceName("payment"),
                    id: try InstanceID("p9"))
            }
            #expect(refused?.status?.code == 403)
            let anonymous = AgentConnection(configuration: AgentConnectionConfiguration(agents: [agent.url]))
            let unauthorized = await #expect(throws: SwitchboardClientError.self) {
                _ = try await AgentClient(connection: anonymous).lookup(try ServiceName("payment"))
            }
            #expect(unauthorized?.status?.code == 401)
            try? await anonymous.shutdown()
            try? await connection.shutdown()
        }
    }

    /// Odd tokens and oversize headers get clear refusals, never a crash: the agent keeps answering.
    @Test func oddTokensAndOversizeHeadersGetClearErrors() async throws {
        try await Self.withSecuredAgent { agent in
            for header in [
                ("Authorization", "Bearer "), ("Authorization", "Basic abc"), ("X-Switchboard-Token", "\u{1F600}"),
            ] {
                let answer = try await http(
                    .PUT, "\(agent.url)/v1/services/payment/instances/p1",
                    json: #"{"address": "127.0.0.7", "port": 80}"#,
                    headers: [header])
                #expect(answer.status == 401, "\(header): \(answer.status) \(answer.text)")
            }
            let long = try await http(
                .GET, "\(agent.url)/v1/services/payment",
                headers: [("X-Switchboard-Token", String(repeating: "x", count: 50_000))])
            #expect(long.status == 401)
            let oversize = try await http(
                .GET, "\(agent.url)/v1/services/payment",
                headers: [("X-Switchboard-Token", String(repeating: "x", count: 2_000_000))])
            #expect(oversize.status == 400 || oversize.status == 431, "\(oversize.status)")
            #expect(try await http(.GET, "\(agent.url)/v1/openapi.yaml").status == 200)
        }
    }
}

/// SHA-256 in hex, computed here with `sha256sum`'s algorithm through Foundation-free code would be long: the test
/// asks the system's `sha256sum`, an implementation independent of the agent's.
enum StoredACLHash {
    static func sha256Hex(_ text: String) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try? process.run()
        input.fileHandleForWriting.write(Data(text.utf8))
        try? input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).split(separator: " ").first.map(String.init) ?? ""
    }
}

extension ClusterModeTests {
    /// Cluster mode keeps the ACLs in etcd: one bootstrap for the whole cluster, a token made through one agent works
    /// at once through another, a deleted one stops working everywhere, and etcd holds no secret.
    @Suite(.serialized) struct ClusterACLTests {
        @Test func tokensAreSharedByEveryAgentOfTheClusterAndStoredHashed() async throws {
            try await withEtcdCluster(size: 3) { etcd in
                let acl = ["--acl-default-policy", "deny"]
                let a = try await ClusterTests.clusterAgent(etcd, extra: acl)
                let b = try await ClusterTests.clusterAgent(etcd, extra: acl)
                let bootstrap = try await http(.PUT, "\(a.baseURL)/v1/acl/bootstrap")
                #expect(bootstrap.status == 200)
                let management = try #require(try bootstrap.decode(ACLToken.self).secretID)
                #expect(try await http(.PUT, "\(b.baseURL)/v1/acl/bootstrap").status == 409)

                let headers = [("X-Switchboard-Token", management)]
                _ = try await http(
                    .POST, "\(a.baseURL)/v1/acl/policies", json: #"{"name": "order", "services": {"order": "write"}}"#,
                    headers: headers)
                let created = try await http(
                    .POST, "\(a.baseURL)/v1/acl/tokens", json: #"{"policies": ["order"]}"#, headers: headers)
                let token = try created.decode(ACLToken.self)
                let secret = try #require(token.secretID)
                // Through the other agent at once: an unknown token makes it read the ACLs again.
                let written = try await http(
                    .PUT, "\(b.baseURL)/v1/services/order/instances/o1", json: #"{"address": "127.0.0.7", "port": 80}"#,
                    headers: [("X-Switchboard-Token", secret)])
                #expect(written.status == 201, "\(written.text)")
                let deleted = try await http(
                    .DELETE, "\(a.baseURL)/v1/acl/tokens/\(token.accessorID)", headers: headers)
                #expect(deleted.status == 200)
                try await waitUntil(timeout: .seconds(6), interval: .milliseconds(100), "the token refused on b") {
                    try await http(.GET, "\(b.baseURL)/v1/services/order", headers: [("X-Switchboard-Token", secret)])
                        .status == 401
                }
                let keys = try await http(
                    .POST, "\(etcd.endpoints[0])/v3/kv/range",
                    json:
                        #"{"key": "\#(Data("/switchboard/acl/".utf8).base64EncodedString())", "range_end": "\#(Data("/switchboard/acl0".utf8).base64EncodedString())"}"#
                )
                #expect(keys.status == 200)
                let kvs = try #require(keys.object["kvs"] as? [[String: Any]], "etcd holds the ACLs: \(keys.text)")
                let stored = kvs.compactMap { ($0["value"] as? String).flatMap { Data(base64Encoded: $0) } }
                    .map { String(decoding: $0, as: UTF8.self) }.joined(separator: "\n")
                #expect(stored.contains(StoredACLHash.sha256Hex(management)), "the management token's hash is stored")
                for secret in [management, secret] {
                    #expect(!stored.contains(secret), "etcd holds a token's secret in clear")
                }
            }
        }
    }
}

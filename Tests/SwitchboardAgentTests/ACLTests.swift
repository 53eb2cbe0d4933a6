import Foundation
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore
import SwitchboardTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// ACL tokens and policies on a live agent process: deny by default, scoped writes, filtered reads, bootstrap once,
/// tokens durable and hashed, the Consul layer's token, and the audit trail of every write.
@Suite(.serialized, .loadsTheMachine) struct ACLTests {
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

    /// `GET /v1/acl/rights` answers what the caller's own token may do, so the dashboard can say why a button is off:
    /// per named service (exact and prefix rules), on the agent's areas, for the anonymous token, and for everyone
    /// with ACLs off; a bad service name is a 422 naming the field.
    @Test func aTokenLearnsItsOwnRightsOnServicesAndAreas() async throws {
        try await Self.withSecuredAgent { agent in
            let reader = try await agent.token(
                policy: "pay-reader", #""services": {"pay*": "read", "order": "write"}, "events": "read""#)
            let answer = try await http(
                .GET, "\(agent.url)/v1/acl/rights?service=payment&service=order&service=cart",
                headers: [("X-Switchboard-Token", reader.secret)])
            #expect(answer.status == 200, "\(answer.text)")
            let rights = try answer.decode(ACLRights.self)
            #expect(rights.enforced && rights.accessorID == reader.accessor)
            #expect(rights.services == ["payment": .read, "order": .write, "cart": .deny])
            #expect(rights.agent == .deny && rights.acl == .deny && rights.events == .read)
            let management = try await http(
                .GET, "\(agent.url)/v1/acl/rights?service=cart", headers: [("X-Switchboard-Token", agent.management)]
            ).decode(ACLRights.self)
            #expect(management.services == ["cart": .write] && management.acl == .write)
            let anonymous = try await http(.GET, "\(agent.url)/v1/acl/rights?service=cart").decode(ACLRights.self)
            #expect(anonymous.accessorID == ACLToken.anonymousAccessorID && anonymous.services == ["cart": .deny])
            let bad = try await http(.GET, "\(agent.url)/v1/acl/rights?service=Not_A_Name")
            #expect(bad.status == 422 && bad.text.contains(#""field":"service""#), "\(bad.text)")
        }
        try await withLiveAgent { agent in
            let open = try await http(.GET, "\(agent.baseURL)/v1/acl/rights?service=cart").decode(ACLRights.self)
            #expect(!open.enforced && open.accessorID == nil && open.services == ["cart": .write] && open.acl == .write)
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
                policy: "order-reader", #""services": {"order": "read", "pay*": "read"}, "events": "read""#)
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
            let order = try await agent.token(policy: "order-writer", #""services": {"order": "write", "*": "read"}"#)
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
                .POST, "\(agent.url)/v1/acl/policies", json: #"{"name": "dns", "services": {"*": "read"}}"#,
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

    /// A name is that service exactly (`order` does not grant `orders-admin`), a name with `*` a prefix; a path
    /// with capitals (Consul's layer lowercases names) is checked as the service it reaches.
    @Test func servicesAreMatchedExactlyOrByPrefixAndCapitalsDoNotSlipPast() async throws {
        try await Self.withSecuredAgent { agent in
            #expect(try await agent.register("payment", "p1", token: agent.management).status == 201)
            let order = try await agent.token(
                policy: "order-only", #""services": {"order": "write", "ship*": "write", "payment": "deny"}"#)
            #expect(try await agent.register("order", "o1", token: order.secret).status == 201)
            #expect(try await agent.register("orders-admin", "a1", token: order.secret).status == 403)
            #expect(try await agent.register("shipping", "s1", token: order.secret).status == 201)
            let headers = [("X-Consul-Token", order.secret)]
            for path in ["/v1/health/service/PAYMENT", "/v1/catalog/service/Payment", "/v1/health/service/payment"] {
                let answer = try await http(.GET, "\(agent.url)\(path)", headers: headers)
                #expect(answer.status == 403, "\(path): \(answer.status) \(answer.text)")
            }
            let eureka = try await http(
                .GET, "\(agent.url)/eureka/apps/PAYMENT", headers: [("Authorization", "Bearer \(order.secret)")])
            #expect(eureka.status == 403)
            // A name no service can have reaches nothing: Consul's answer is an empty list, the native API's a 400.
            let invalid = try await http(.GET, "\(agent.url)/v1/health/service/no_such", headers: headers)
            #expect(invalid.status == 200 && invalid.text.trimmingCharacters(in: .whitespacesAndNewlines) == "[]")
            let native = try await http(
                .GET, "\(agent.url)/v1/services/no_such", headers: [("X-Switchboard-Token", order.secret)])
            #expect(native.status == 400)
        }
    }

    /// Under `allow`, callers without a token may do what no policy denies, but never manage the ACLs.
    @Test func theAllowPolicyNeverOpensTheACLsToCallersWithoutAToken() async throws {
        let process = try await AgentProcess(dataDirectory: nil, extraArguments: ["--acl-default-policy", "allow"])
        let url = process.baseURL
        let bootstrap = try await http(.PUT, "\(url)/v1/acl/bootstrap")
        let management = try #require(try bootstrap.decode(ACLToken.self).secretID)
        let written = try await http(
            .PUT, "\(url)/v1/services/payment/instances/p1", json: #"{"address": "127.0.0.7", "port": 80}"#)
        #expect(written.status == 201)
        let grab = try await http(.POST, "\(url)/v1/acl/tokens", json: #"{"policies": ["global-management"]}"#)
        #expect(grab.status == 401, "\(grab.text)")
        #expect(try await http(.GET, "\(url)/v1/acl/tokens").status == 401)
        let listed = try await http(.GET, "\(url)/v1/acl/tokens", headers: [("X-Switchboard-Token", management)])
        #expect(listed.status == 200)
    }

    /// A stream shows changes, not who made them (that is the event log's, for `events:read`); a deleted token's
    /// stream ends by the next change instead of carrying it.
    @Test func streamsLeaveOutTheAuditTrailAndEndWhenTheirTokenIsDeleted() async throws {
        try await Self.withSecuredAgent { agent in
            let reader = try await agent.token(policy: "order-reader", #""services": {"order": "read"}"#)
            let stream = try await EventStreamClient(
                "\(agent.url)/v1/services/order/watch", headers: [("X-Switchboard-Token", reader.secret)])
            defer { stream.close() }
            #expect(try await stream.next().event == "snapshot")
            #expect(try await agent.register("order", "o1", token: agent.management).status == 201)
            let change = try await stream.next()
            #expect(change.data.contains("o1"))
            #expect(!change.data.contains("\"by\"") && !change.data.contains("127.0.0.1:"), "\(change.data)")

            let deleted = try await http(
                .DELETE, "\(agent.url)/v1/acl/tokens/\(reader.accessor)",
                headers: [("X-Switchboard-Token", agent.management)])
            #expect(deleted.status == 200)
            #expect(try await agent.register("order", "o2", token: agent.management).status == 201)
            try await waitUntil(timeout: .seconds(5), "the stream of a deleted token ends") { stream.isFinished }
            let rest = try? await stream.next(within: .milliseconds(10))
            #expect(rest == nil || rest?.data.contains("o2") == false, "no change after the token was deleted")
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

        /// Cluster mode with TLS and ACLs: a heartbeat reaching the agent that does not run the instance's check is
        /// relayed over https (trusting `--ca-file`, presenting the agent's certificate) with the caller's token, so
        /// every instance stays passing past its TTL whichever agent its heartbeats reach.
        @Test func heartbeatsAreRelayedOverTLSWithTheCallersToken() async throws {
            let certificates = try await AgentTLSTests.Certificates()
            defer { try? FileManager.default.removeItem(atPath: certificates.directory) }
            try await withEtcdCluster(size: 3) { etcd in
                let secured = [
                    "--acl-default-policy", "deny", "--tls-cert", certificates.serverCertificate, "--tls-key",
                    certificates.serverKey, "--tls-client-ca", certificates.ca, "--ca-file", certificates.ca,
                ]
                let a = try await ClusterTests.clusterAgent(etcd, id: "a", extra: secured)
                let b = try await ClusterTests.clusterAgent(etcd, id: "b", extra: secured)
                let https = [a, b].map { $0.baseURL.replacingOccurrences(of: "http://", with: "https://") }
                let tls = try AgentTLSConfiguration(
                    caFile: certificates.ca, clientCertificateFile: certificates.clientCertificate,
                    clientKeyFile: certificates.clientKey)
                // Every connection made is shut down however the test ends (a client left open would abort the run).
                let opened = Mutex<[AgentConnection]>([])
                func client(_ url: String, token: String?) -> AgentClient {
                    let connection = AgentConnection(
                        configuration: AgentConnectionConfiguration(agents: [url], tls: tls, token: token))
                    opened.withLock { $0.append(connection) }
                    return AgentClient(connection: connection)
                }
                func closeAll() async {
                    for connection in opened.withLock({ $0 }) { try? await connection.shutdown() }
                }
                let token: String
                do {
                    let anonymous = client(https[0], token: nil)
                    let management = try #require(try await anonymous.bootstrapACLs().secretID)
                    let admin = client(https[0], token: management)
                    _ = try await admin.createACLPolicy(ACLPolicy(name: "beating", services: ["beating": .write]))
                    token = try #require(
                        try await admin.createACLToken(ACLTokenRequest(policies: ["beating"])).secretID)
                    let writer = client(https[0], token: token)
                    let count = 12
                    var ttl = CheckRequest(type: "ttl")
                    ttl.ttl = "3s"
                    for number in 0..<count {
                        _ = try await writer.register(
                            RegistrationRequest(address: "127.0.0.1", port: 1, checks: [ttl]),
                            service: try ServiceName("beating"), id: try InstanceID("t\(number)"))
                    }
                    let beater = client(https[1], token: token)
                    let heartbeats = Task {
                        while !Task.isCancelled {
                            for number in 0..<count {
                                _ = try? await beater.heartbeat(
                                    try ServiceName("beating"), id: try InstanceID("t\(number)"))
                            }
                            try? await Task.sleep(for: .milliseconds(500))
                        }
                    }
                    defer { heartbeats.cancel() }
                    let reader = client(https[1], token: management)
                    try await waitUntil(timeout: .seconds(15), interval: .milliseconds(200), "every instance passing") {
                        let lookup = try await reader.lookup(
                            try ServiceName("beating"), matching: InstanceQuery(status: .any))
                        return lookup.instances.count == count && lookup.instances.allSatisfy { $0.status == .passing }
                    }
                    let (countA, countB) = (
                        try await admin.agentInfo().health.checks.ttl, try await reader.agentInfo().health.checks.ttl
                    )
                    #expect(
                        countA > 0 && countB > 0 && countA + countB == count,
                        "both agents run checks: \(countA), \(countB)"
                    )
                    // Two TTLs later, still passing: b's heartbeats reached a's checks through the relay.
                    try await Task.sleep(for: .seconds(6))
                    let lookup = try await reader.lookup(
                        try ServiceName("beating"), matching: InstanceQuery(status: .any))
                    #expect(lookup.instances.allSatisfy { $0.status == .passing }, "\(lookup.instances.map(\.status))")
                } catch {
                    await closeAll()
                    throw error
                }
                await closeAll()
                #expect(!a.log.contains(token) && !b.log.contains(token), "the relayed token is never logged")
            }
        }
    }
}

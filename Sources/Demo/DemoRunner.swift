import AsyncHTTPClient
import Foundation
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import ProcessSupport
import SwitchboardClient
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How `switchboard demo` runs.
public struct DemoConfiguration: Sendable {
    /// How long traffic runs; the chaos script's events are spread over it.
    public var duration: Duration
    /// Whether the chaos script plays (kill, scale up, slow down, drain, agent restart).
    public var chaos: Bool
    /// Print the summary as JSON on standard output, and no live view.
    public var json: Bool
    /// Concurrent shoppers checking out through the gateway.
    public var shoppers: Int
    /// Cluster mode: three etcd members and two agents sharing the catalog; the script kills one agent and one
    /// etcd member with -9 instead of restarting the agent.
    public var cluster: Bool
    /// ACLs on: the agents deny by default; the demo bootstraps them and runs the shop and the gateway with a token
    /// scoped to the shop's services.
    public var acl: Bool
    /// The collector the agents, the gateway and the shop's processes export their spans to (its OTLP/HTTP base
    /// address, such as `http://127.0.0.1:4318`); nil: nothing is traced.
    public var otlpEndpoint: String?

    /// The defaults are the command line's.
    public init(
        duration: Duration = .seconds(60), chaos: Bool = true, json: Bool = false, shoppers: Int = 6,
        cluster: Bool = false, acl: Bool = false, otlpEndpoint: String? = nil
    ) {
        self.acl = acl
        self.otlpEndpoint = otlpEndpoint
        self.duration = duration
        self.chaos = chaos
        self.json = json
        self.shoppers = shoppers
        self.cluster = cluster
    }
}

/// What the demo saw, for the summary table and `--json`.
public struct DemoSummary: Codable, Sendable {
    /// One instance's share of the traffic.
    public struct InstanceReport: Codable, Sendable {
        /// Its service.
        public var service: String
        /// Its instance id.
        public var id: String
        /// Requests it served, by its own count.
        public var requests: Int
        /// Whether the script killed it with -9.
        public var killed: Bool
    }

    /// One thing that happened, when.
    public struct Event: Codable, Sendable {
        /// Seconds since the demo started.
        public var atSeconds: Double
        /// What happened, in words.
        public var event: String
    }

    /// How long the shoppers shopped.
    public var durationSeconds: Double
    /// Checkouts the shoppers sent through the gateway.
    public var userRequests: Int
    /// Checkouts that failed, or came back with an outcome their amount does not explain: should be 0.
    public var failedUserRequests: Int
    /// Checkouts that ended in a confirmed order.
    public var ordered: Int
    /// Checkouts whose payment was declined (the order cancelled, the cart told).
    public var paymentFailed: Int
    /// Every instance that ran, with its traffic.
    public var instances: [InstanceReport]
    /// The script's events.
    public var events: [Event]
    /// Seconds from the kill -9 until the agent no longer listed the instance as healthy.
    public var killDetectionSeconds: Double?
    /// Connections that still reached the killed instance's address after detection.
    public var trafficToKilledAfterDetection: Int?
    /// Seconds from the new instance's start until it served its first request.
    public var newInstanceFirstTrafficSeconds: Double?
    /// Notifications the Python service's instances took (by their own counts): order sends one per confirmed order.
    public var notificationsSent: Int
    /// Calls the Python service made to payment through its sidecar's `--upstream` listener, and how many of them
    /// failed (by the instances' own counts; best-effort pings, so a failure is counted, not retried by the script).
    public var notificationCallsToPayment: Int
    public var notificationCallsToPaymentFailed: Int
    /// Carts charged more than once; nil when the stores could not be read.
    public var doubleCharges: Int?
    /// The order and payment stores checked against each other (see ``ShopAudit``); nil when they could not be read.
    public var audit: ShopAudit?
    /// Every live instance served requests.
    public var everyLiveInstanceServed: Bool
}

/// Runs the shop: an agent (or, in cluster mode, three etcd members and two agents), the gateway, 1 cart, 3 order and
/// 2 payment processes, and 2 notification processes (Python, each under `switchboard sidecar`); shoppers checking
/// out through the gateway; and the chaos script. Every process it starts ends with it.
public final class DemoRunner: Sendable {
    let configuration: DemoConfiguration
    private let directory: String
    let children: ChildProcesses
    private let started = ContinuousClock.now
    private let state = Mutex(RunState())
    let findings = Mutex(ScriptFindings())
    private let http = HTTPClient.shared
    /// The agent's API, through the client library (the agent keeps its port across the restart the script plays);
    /// with ACLs on, it presents the bootstrap token once the demo has made it.
    var agent: AgentClient { agentClient.withLock { $0 } }
    private let agentClient: Mutex<AgentClient>

    struct RunState {
        var instances: [String: (service: String, port: Int, requests: Int, rate: Int, status: String)] = [:]
        var killed: Set<String> = []
        var events: [DemoSummary.Event] = []
        var userRequests = 0
        var failed = 0
        var ordered = 0
        var paymentFailed = 0
        /// Each notification instance's outbound calls to payment through its sidecar: (answered, failed).
        var upstreamCalls: [String: (answered: Int, failed: Int)] = [:]
        var lastFailure: String?
        var agentPorts: [Int] = []
        var gatewayPort = 0
        /// Cluster mode: each etcd member's client and peer port.
        var etcdPorts: [(client: Int, peer: Int)] = []
    }

    /// A runner with its own temporary directory (removed when it ends).
    public init(configuration: DemoConfiguration) throws {
        self.configuration = configuration
        var template = Array("\(FileManager.default.temporaryDirectory.path)/switchboard-demo-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw DemoError("cannot make a temporary directory") }
        directory = String(cString: made)
        try FileManager.default.createDirectory(atPath: "\(directory)/logs", withIntermediateDirectories: true)
        children = ChildProcesses(logDirectory: "\(directory)/logs")
        // The Python service travels inside the binary; its instances run it from here.
        try Data(PackageResources.notification_py).write(to: URL(fileURLWithPath: "\(directory)/notification.py"))
        let agentCount = configuration.cluster ? 2 : 1
        let ports = try freeLocalPorts(1 + agentCount + (configuration.cluster ? 6 : 0))
        let agentPorts = Array(ports[1...agentCount])
        state.withLock { state in
            state.gatewayPort = ports[0]
            state.agentPorts = agentPorts
            if configuration.cluster {
                let etcd = Array(ports[(1 + agentCount)...])
                state.etcdPorts = (0..<3).map { (etcd[2 * $0], etcd[2 * $0 + 1]) }
            }
        }
        agentClient = Mutex(Self.client(of: agentPorts.map { "http://127.0.0.1:\($0)" }, token: nil))
    }

    /// Ends every child process now (Ctrl-C).
    public func interrupt() {
        children.killAll()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs the whole demo and returns its summary; the children are stopped however it ends.
    public func run() async throws -> DemoSummary {
        do {
            let summary = try await play()
            await children.stopAll()
            try? await agent.connection.shutdown()
            try? FileManager.default.removeItem(atPath: directory)
            return summary
        } catch {
            await children.stopAll()
            try? await agent.connection.shutdown()
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    private func play() async throws -> DemoSummary {
        let gatewayPort = state.withLock { $0.gatewayPort }
        if configuration.cluster {
            try await startEtcd()
            for index in agentURLs.indices { try await startAgent(index) }
            record("cluster: 3 etcd members, 2 agents sharing the catalog")
        } else {
            try await startAgent(0)
        }
        if configuration.acl { try await secureTheShop() }
        try """
        routes:
          - { name: cart, match: { prefix: /api/cart }, service: cart, stripPrefix: true }
          - { name: orders, match: { prefix: /api/orders }, service: order, stripPrefix: true }
          - { name: payments, match: { prefix: /api/payments }, service: payment, stripPrefix: true }
        """.write(toFile: "\(directory)/gateway.yaml", atomically: true, encoding: .utf8)
        _ = try await children.start(
            "gateway",
            [
                "gateway", "--listen", "127.0.0.1:\(gatewayPort)", "--config", "\(directory)/gateway.yaml",
                "--access-log", "off", "--admin", "off", "--log-level", "warning",
            ] + agentArguments + tracingArguments, readsPort: false)
        try await waitForHTTP("http://127.0.0.1:\(gatewayPort)/api/none")
        for (role, count) in [("payment", 2), ("order", 3), ("cart", 1)] {
            for index in 1...count { try await startInstance(role, index) }
        }
        for index in 1...2 { try await startNotification(index) }
        try await waitUntilHealthy([.cart: 1, .order: 3, .payment: 2], notifications: 2, within: .seconds(15))
        record(
            "the shop is up: 1 cart, 3 order, 2 payment instances behind the gateway; 2 notification instances "
                + "(Python) under sidecars")

        let deadline = ContinuousClock.now + configuration.duration
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<configuration.shoppers {
                group.addTask { await self.shop(until: deadline) }
            }
            group.addTask { await self.watch(until: deadline) }
            if configuration.chaos {
                group.addTask { try await self.playScript(from: ContinuousClock.now, until: deadline) }
            }
            try await group.waitForAll()
        }
        return try await summarise()
    }

    // MARK: Processes

    /// The agents' URLs, in the order clients prefer them.
    var agentURLs: [String] { state.withLock { $0.agentPorts }.map { "http://127.0.0.1:\($0)" } }

    /// `--agent URL` for each agent: what the gateway and the services are started with.
    var agentArguments: [String] { agentURLs.flatMap { ["--agent", $0] } }

    /// `--otlp-endpoint URL` when the demo traces: every process of the shop exports its spans there.
    var tracingArguments: [String] { configuration.otlpEndpoint.map { ["--otlp-endpoint", $0] } ?? [] }

    /// The name of agent `index`'s process (`agent`, or `agent-1` and `agent-2` in cluster mode).
    func agentName(_ index: Int) -> String {
        configuration.cluster ? "agent-\(index + 1)" : "agent"
    }

    func startAgent(_ index: Int) async throws {
        let port = state.withLock { $0.agentPorts[index] }
        var arguments = [
            "agent", "--http-addr", "127.0.0.1:\(port)", "--dns-disable", "--log-level", "warning",
        ]
        if configuration.cluster {
            arguments += [
                "--store", "etcd", "--etcd-endpoints", etcdEndpoints.joined(separator: ","), "--agent-id",
                agentName(index),
            ]
        } else {
            arguments += ["--data-dir", "\(directory)/agent"]
        }
        if configuration.acl { arguments += ["--acl-default-policy", "deny"] }
        _ = try await children.start(agentName(index), arguments + tracingArguments, readsPort: false)
        let url = agentURLs[index]
        let deadline = ContinuousClock.now + .seconds(20)
        while (try? await getJSON(url + APIPath.agent, timeout: .seconds(1))) == nil {
            guard ContinuousClock.now < deadline else {
                throw DemoError("the agent does not answer at \(url) (logs in \(directory)/logs)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// The runner's client of the agents.
    private static func client(of agents: [String], token: String?) -> AgentClient {
        AgentClient(
            connection: AgentConnection(
                configuration: AgentConnectionConfiguration(
                    agents: agents, connectTimeout: .seconds(1), requestTimeout: .seconds(2), token: token)))
    }

    /// ACLs on: bootstraps them, keeps the bootstrap token for the runner's own calls, and gives every process
    /// started from now on (the gateway, the shop's services) a token that writes only the shop's services.
    func secureTheShop() async throws {
        let bootstrap = try await agent.bootstrapACLs()
        guard let management = bootstrap.secretID else { throw DemoError("the bootstrap answer has no secret") }
        let previous = agentClient.withLock { client in
            defer { client = Self.client(of: agentURLs, token: management) }
            return client
        }
        try? await previous.connection.shutdown()
        _ = try await agent.createACLPolicy(
            ACLPolicy(
                name: "shop", description: "The demo shop's services and its gateway",
                services: ["cart": .write, "order": .write, "payment": .write, "notification": .write]))
        let shop = try await agent.createACLToken(ACLTokenRequest(description: "demo shop", policies: ["shop"]))
        guard let secret = shop.secretID else { throw DemoError("the token answer has no secret") }
        children.environment.withLock { $0["SWITCHBOARD_TOKEN"] = secret }
        record("ACLs on: bootstrapped, the shop runs with a token scoped to cart, order, payment and notification")
    }

    /// Cluster mode: the etcd members' client URLs.
    var etcdEndpoints: [String] { state.withLock { $0.etcdPorts }.map { "http://127.0.0.1:\($0.client)" } }

    /// Cluster mode: starts three etcd members (Debian's `etcd`) on loopback and waits for a leader.
    func startEtcd() async throws {
        let ports = state.withLock { $0.etcdPorts }
        let cluster = ports.enumerated().map { "n\($0.offset + 1)=http://127.0.0.1:\($0.element.peer)" }
            .joined(separator: ",")
        guard ChildProcesses.find("etcd") != nil else {
            throw DemoError("the cluster demo needs etcd: on Debian, apt-get install etcd-server")
        }
        for (position, port) in ports.enumerated() {
            let name = "n\(position + 1)"
            let arguments = [
                "--name", name, "--data-dir", "\(directory)/etcd-\(name)",
                "--listen-client-urls", "http://127.0.0.1:\(port.client)",
                "--advertise-client-urls", "http://127.0.0.1:\(port.client)",
                "--listen-peer-urls", "http://127.0.0.1:\(port.peer)",
                "--initial-advertise-peer-urls", "http://127.0.0.1:\(port.peer)",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "error",
            ].map { "'\($0)'" }.joined(separator: " ")
            // etcd knows nothing of the demo: a watcher beside it ends it when the demo is gone, however the demo
            // ends. `exec` makes the shell etcd itself, so a kill -9 of the child is a kill -9 of etcd.
            // The watcher (bash: multi-digit descriptors) first closes every one it inherited: one held open would keep the demo from seeing
            // etcd exit.
            let script = """
                (for fd in $(ls /proc/self/fd); do
                    if [ "$fd" -gt 2 ] && [ -e "/proc/self/fd/$fd" ]; then eval "exec $fd>&-"; fi
                done
                while kill -0 \(getpid()) 2>/dev/null && kill -0 $$ 2>/dev/null; do sleep 0.5; done
                kill -9 $$ 2>/dev/null) >/dev/null 2>&1 &
                exec etcd \(arguments)
                """
            _ = try await children.start("etcd-\(name)", ["-c", script], readsPort: false, executable: "bash")
        }
        let deadline = ContinuousClock.now + .seconds(30)
        for endpoint in etcdEndpoints {
            while (try? await getJSON(endpoint + "/health", timeout: .seconds(1)))?["health"] as? String != "true" {
                guard ContinuousClock.now < deadline else {
                    throw DemoError(
                        "etcd at \(endpoint) is not healthy (is etcd installed? `apt-get install etcd-server`; logs in "
                            + "\(directory)/logs)")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// Cluster mode: the position of the etcd member that leads, as the members say (nil when none answers).
    func etcdLeader() async -> Int? {
        var ids: [Int: String] = [:]
        var leader: String?
        for (position, endpoint) in etcdEndpoints.enumerated() {
            var request = HTTPClientRequest(url: endpoint + "/v3/maintenance/status")
            request.method = .POST
            request.body = .bytes(ByteBuffer(string: "{}"))
            guard let response = try? await http.execute(request, timeout: .seconds(1)),
                let body = try? await response.body.collect(upTo: 1 << 20),
                let object = try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]
            else { continue }
            ids[position] = (object["header"] as? [String: Any])?["member_id"] as? String
            leader = leader ?? object["leader"] as? String
        }
        return ids.first { $0.value == leader }?.key
    }

    func startInstance(_ role: String, _ index: Int) async throws {
        let id = "\(role)-\(index)"
        try FileManager.default.createDirectory(atPath: "\(directory)/\(role)", withIntermediateDirectories: true)
        let (_, port) = try await children.start(
            id,
            ["demo-service", "--role", role, "--id", id, "--data-dir", "\(directory)/\(role)"] + agentArguments
                + tracingArguments, readsPort: true)
        state.withLock { $0.instances[id] = (role, port ?? 0, 0, 0, "starting") }
    }

    /// Starts notification instance `index`: the Python script under `switchboard sidecar`, which registers it,
    /// heartbeats its `/health`, and gives it a local listener for payment (its best-effort call after each
    /// notification goes out through its sidecar).
    func startNotification(_ index: Int) async throws {
        let id = "notification-\(index)"
        let ports = try freeLocalPorts(2)
        _ = try await children.start(
            id,
            [
                "sidecar", "--service", "notification", "--id", id, "--port", "\(ports[0])", "--health", "/health",
                "--interval", "500ms", "--drain-time", "500ms", "--upstream", "payment=127.0.0.1:\(ports[1])",
                "--log-level", "warning",
            ] + agentArguments + tracingArguments
                + ["--", "python3", "\(directory)/notification.py", "\(ports[0])", "\(ports[1])"],
            readsPort: false)
        state.withLock { $0.instances[id] = ("notification", ports[0], 0, 0, "starting") }
    }

    // MARK: Traffic

    /// One shopper: checks out a cart through the gateway, again and again, about ten times a second.
    private func shop(until deadline: ContinuousClock.Instant) async {
        let gateway = "http://127.0.0.1:\(state.withLock { $0.gatewayPort })"
        while ContinuousClock.now < deadline {
            var request = HTTPClientRequest(url: "\(gateway)/api/cart/checkout")
            request.method = .POST
            request.headers.add(name: "Content-Type", value: "application/json")
            let amount = Int.random(in: 1...200) * 100 + (Int.random(in: 0..<20) == 0 ? 13 : 0)
            let body = #"{"cartId": "cart-\#(UUID().uuidString.lowercased())", "amountCents": \#(amount)}"#
            request.body = .bytes(ByteBuffer(string: body))
            var outcome: String?
            var failure: String?
            do {
                let response = try await http.execute(request, timeout: .seconds(10))
                let data = try await response.body.collect(upTo: 1 << 20)
                if response.status == .ok {
                    let object = try? JSONSerialization.jsonObject(with: Data(buffer: data)) as? [String: Any]
                    outcome = object?["status"] as? String
                    // The shopper knows its card: only amounts ending in 13 cents are declined. Any other
                    // "payment_failed" is an outage passed off as an answer, and counts as a failure.
                    let declined = amount % 100 == 13
                    let expected = declined ? "payment_failed" : "ordered"
                    if outcome != expected || (declined && object?["reason"] as? String != "payment declined") {
                        failure = "expected \(expected) for \(amount) cents, got \(String(buffer: data).prefix(160))"
                    }
                } else {
                    failure = "\(response.status.code) \(String(buffer: data).prefix(160))"
                }
            } catch {
                failure = "\(error)"
            }
            state.withLock { state in
                state.userRequests += 1
                if let failure {
                    state.failed += 1
                    state.lastFailure = failure
                } else if outcome == "ordered" {
                    state.ordered += 1
                } else {
                    state.paymentFailed += 1
                }
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    // MARK: Watching

    /// Every second: each instance's requests (from its own counter) and status (from the agent); the live view.
    private func watch(until deadline: ContinuousClock.Instant) async {
        while ContinuousClock.now < deadline {
            try? await Task.sleep(for: .seconds(1))
            await refreshInstances()
            if !configuration.json { draw() }
        }
    }

    func refreshInstances() async {
        // A killed instance is not asked: the demo's own polling would count as traffic to the dead.
        let instances = state.withLock { state in state.instances.filter { !state.killed.contains($0.key) } }
        var statuses: [String: String] = [:]
        for service in ShopRole.allCases.map(\.serviceName) + [try! ServiceName("notification")] {
            if let lookup = try? await agent.lookup(service, matching: InstanceQuery(status: .any)) {
                for instance in lookup.instances { statuses[instance.id.rawValue] = instance.status.rawValue }
            }
        }
        state.withLock { state in
            for id in state.killed {
                state.instances[id]?.status = "killed"
                state.instances[id]?.rate = 0
            }
        }
        for (id, instance) in instances {
            var requests = instance.requests
            var upstream: (answered: Int, failed: Int)?
            if let stats = try? await getJSON("http://127.0.0.1:\(instance.port)/stats", timeout: .milliseconds(500)) {
                requests = stats["requests"] as? Int ?? requests
                if let answered = stats["upstreamCalls"] as? Int, let failed = stats["upstreamFailures"] as? Int {
                    upstream = (answered, failed)
                }
            }
            state.withLock { state in
                if let upstream { state.upstreamCalls[id] = upstream }
                guard var current = state.instances[id] else { return }
                current.rate = requests - current.requests
                current.requests = requests
                current.status = state.killed.contains(id) ? "killed" : statuses[id] ?? "unregistered"
                state.instances[id] = current
            }
        }
    }

    private func draw() {
        let snapshot = state.withLock { $0 }
        var lines = ["\u{1B}[2J\u{1B}[H", "Switchboard shop demo: \(elapsedText) of \(configuration.duration)", ""]
        lines.append("  instance        status        req/s   requests")
        for id in snapshot.instances.keys.sorted() {
            let instance = snapshot.instances[id]!
            lines.append(
                "  \(id.padding(toLength: 15, withPad: " ", startingAt: 0)) "
                    + "\(instance.status.padding(toLength: 12, withPad: " ", startingAt: 0)) \(String(instance.rate).leftPadded(6)) "
                    + String(instance.requests).leftPadded(10))
        }
        lines.append("")
        lines.append(
            "  user requests: \(snapshot.userRequests)   failed: \(snapshot.failed)   ordered: \(snapshot.ordered)"
                + "   payment failed (declined): \(snapshot.paymentFailed)")
        let upstream = Self.notificationCallsToPayment(in: snapshot)
        lines.append(
            "  notifications sent (Python, under sidecars): \(Self.notifications(in: snapshot))"
                + "   their calls to payment through the sidecars: \(upstream.answered) (failed: \(upstream.failed))")
        if let last = snapshot.lastFailure { lines.append("  last failure: \(last)") }
        lines.append("")
        for event in snapshot.events.suffix(8) {
            lines.append("  [\(String(format: "%5.1f", event.atSeconds))s] \(event.event)")
        }
        StandardStream.output.write(lines.joined(separator: "\n") + "\n")
    }

    private var elapsedText: String {
        String(format: "%.0fs", (ContinuousClock.now - started).seconds)
    }

    /// The notification instances' counts added up.
    static func notifications(in run: RunState) -> Int {
        run.instances.values.filter { $0.service == "notification" }.reduce(0) { $0 + $1.requests }
    }

    /// The notification instances' calls to payment through their sidecars, added up.
    static func notificationCallsToPayment(in run: RunState) -> (answered: Int, failed: Int) {
        run.upstreamCalls.values.reduce((0, 0)) { ($0.0 + $1.answered, $0.1 + $1.failed) }
    }

    func record(_ event: String) {
        let at = (ContinuousClock.now - started).seconds
        state.withLock { $0.events.append(.init(atSeconds: (at * 10).rounded() / 10, event: event)) }
    }

    // MARK: HTTP helpers

    /// Where the services keep their stores.
    var storeDirectory: String { directory }

    func getJSON(_ url: String, timeout: TimeAmount = .seconds(2)) async throws -> [String: Any] {
        let response = try await http.execute(HTTPClientRequest(url: url), timeout: timeout)
        let body = try await response.body.collect(upTo: 4 << 20)
        return (try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]) ?? [:]
    }

    func send(_ method: HTTPMethod, _ url: String, json: String) async throws -> Int {
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers.add(name: "Content-Type", value: "application/json")
        request.body = .bytes(ByteBuffer(string: json))
        let response = try await http.execute(request, timeout: .seconds(5))
        _ = try await response.body.collect(upTo: 1 << 20)
        return Int(response.status.code)
    }

    private func waitForHTTP(_ url: String) async throws {
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            if (try? await http.execute(HTTPClientRequest(url: url), timeout: .seconds(1))) != nil { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw DemoError("nothing answers at \(url) (logs in \(directory)/logs)")
    }

    func waitUntilHealthy(_ counts: [ShopRole: Int], notifications: Int = 0, within limit: Duration) async throws {
        let deadline = ContinuousClock.now + limit
        let wanted = counts.map { ($0.key.serviceName, $0.value) } + [(try! ServiceName("notification"), notifications)]
        while ContinuousClock.now < deadline {
            var ready = true
            for (service, count) in wanted where count > 0 {
                let lookup = try? await agent.lookup(service)
                if lookup?.instances.count ?? 0 < count { ready = false }
            }
            if ready { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw DemoError("the shop's instances did not all turn healthy within \(limit)")
    }

    var snapshot: RunState { state.withLock { $0 } }

    func markKilled(_ id: String) {
        _ = state.withLock { $0.killed.insert(id) }
    }

}

/// `count` different ports nothing listens on right now (all held until all are chosen, so none repeats).
func freeLocalPorts(_ count: Int) throws -> [Int] {
    var descriptors: [Int32] = []
    defer { descriptors.forEach { close($0) } }
    return try (0..<count).map { _ in
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        descriptors.append(descriptor)
        return try boundPort(descriptor)
    }
}

private func boundPort(_ descriptor: Int32) throws -> Int {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(descriptor, $0, length) == 0 && getsockname(descriptor, $0, &length) == 0
        }
    }
    guard bound else { throw DemoError("no free port on 127.0.0.1") }
    return Int(UInt16(bigEndian: address.sin_port))
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}

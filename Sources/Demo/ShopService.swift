import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOFoundationCompat
import NIOHTTP1
import ProcessSupport
import ServiceLifecycle
import SwitchboardClient
import SwitchboardCore
import Synchronization
import Tracing
import UnixSignals

/// The three services of the shop. Each runs as its own process, registers itself with the agent (TTL heartbeats)
/// and finds the service after it through the client library (client-side discovery).
public enum ShopRole: String, CaseIterable, Sendable {
    /// `POST /checkout`: the saga's orchestrator's caller; asks order for an order, tells the cart how it went.
    case cart
    /// `POST /orders`: creates a pending order, charges it through payment, confirms it or cancels it.
    case order
    /// `POST /charges`: charges an order once per idempotency key, and declines some.
    case payment

    /// The service the role registers as (and is found under).
    public var serviceName: ServiceName {
        // The roles' names are valid service names.
        try! ServiceName(rawValue)
    }
}

/// How one shop process runs.
public struct ShopServiceConfiguration: Sendable {
    /// Which service this process is.
    public var role: ShopRole
    /// 0 picks a free port, printed as `listening PORT`.
    public var port: Int
    /// The agents it registers with and discovers through.
    public var agents: [String]
    /// Where the service's own store lives (order and payment instances share their service's file).
    public var dataDirectory: String
    /// The instance id; default `<role>-<port>`.
    public var id: String?
    /// The ACL token it presents to agents with ACLs on.
    public var token: String?

    /// A shop process's configuration.
    public init(
        role: ShopRole, port: Int = 0, agents: [String], dataDirectory: String, id: String? = nil, token: String? = nil
    ) {
        self.token = token
        self.role = role
        self.port = port
        self.agents = agents
        self.dataDirectory = dataDirectory
        self.id = id
    }
}

/// What every shop instance counts and can be told (the demo's chaos script uses these).
final class InstanceControls: Sendable {
    private let state = Mutex((requests: 0, latency: 0))

    func served() { state.withLock { $0.requests += 1 } }
    var requests: Int { state.withLock { $0.requests } }
    var latency: Int {
        get { state.withLock { $0.latency } }
        set { state.withLock { $0.latency = newValue } }
    }
}

/// Runs one shop process until SIGTERM or SIGINT (which drain its registration first), with `services` (the span
/// exporter the executable bootstrapped, say) started before and stopped after the shop's own.
///
/// When the process has a tracer, each request is a server span continuing the caller's trace (its `traceparent`),
/// and the calls it makes to the next service are spans under it, so one checkout is one trace.
public func runShopService(_ configuration: ShopServiceConfiguration, services: [any Service] = []) async throws {
    var logger = Logger(label: "shop.\(configuration.role.rawValue)")
    logger.logLevel = .warning
    let connection = AgentConnection(
        configuration: .init(agents: configuration.agents, token: configuration.token), logger: logger)
    let discovery = ServiceDiscovery(connection: connection, logger: logger)
    let controls = InstanceControls()
    let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
    let instanceID = Mutex<String>(configuration.id ?? "")
    let router = Router()
    if !(InstrumentationSystem.tracer is NoOpTracer) { router.add(middleware: TracingMiddleware()) }
    router.get("health") { _, _ in "ok\n" }
    router.get("stats") { _, _ in
        jsonResponse(["instance": instanceID.withLock { $0 }, "requests": controls.requests])
    }
    router.post("admin/latency") { request, _ -> Response in
        let body = try await request.body.collect(upTo: 4096)
        let object = try JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]
        controls.latency = max(0, min(object?["ms"] as? Int ?? 0, 10_000))
        return jsonResponse(["latencyMs": controls.latency])
    }
    switch configuration.role {
    case .cart:
        try addCartRoutes(to: router, discovery: discovery, controls: controls)
    case .order:
        let book = try OrderBook(path: "\(configuration.dataDirectory)/orders.sqlite")
        try addOrderRoutes(to: router, book: book, discovery: discovery, controls: controls, logger: logger)
    case .payment:
        let ledger = try PaymentLedger(path: "\(configuration.dataDirectory)/payments.sqlite")
        addPaymentRoutes(to: router, ledger: ledger, controls: controls, instance: { instanceID.withLock { $0 } })
    }
    let application = Application(
        router: router,
        configuration: .init(address: .hostname("127.0.0.1", port: configuration.port)),
        onServerRunning: { channel in
            let bound = channel.localAddress?.port ?? 0
            // A starter gone before this line arrives is ParentWatch's business, not a crash.
            StandardStream.output.write("listening \(bound)\n")
            portSink.yield(bound)
        },
        logger: logger)
    let registrar = ShopRegistrar(
        ports: ports, connection: connection, logger: logger, role: configuration.role, id: configuration.id,
        instanceID: { id in instanceID.withLock { $0 = id } })
    let group = ServiceGroup(
        configuration: .init(
            // Stopped in reverse: the registration drains first, discovery goes last (calls during the drain
            // still find their instances).
            services: services + [discovery, application, registrar], gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
    try await group.run()
    try await connection.shutdown()
}

/// Registers the instance once its server has a port.
struct ShopRegistrar: Service {
    let ports: AsyncStream<Int>
    let connection: AgentConnection
    let logger: Logger
    let role: ShopRole
    let id: String?
    let instanceID: @Sendable (String) -> Void

    func run() async throws {
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { return }
        let id = self.id ?? "\(role.rawValue)-\(port)"
        instanceID(id)
        let registration = ServiceRegistration(
            connection: connection,
            configuration: .init(
                service: try ServiceName(role.rawValue), id: try InstanceID(id), address: "127.0.0.1", port: port,
                ttl: .seconds(1), drainTime: .milliseconds(600)),
            logger: logger)
        try await registration.run()
    }
}

func jsonResponse(_ object: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
    let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
    return Response(
        status: status, headers: [.contentType: "application/json"],
        body: ResponseBody(byteBuffer: ByteBuffer(bytes: data)))
}

func jsonObject(_ request: Request) async throws -> [String: Any] {
    let body = try await request.body.collect(upTo: 64 * 1024)
    return (try? JSONSerialization.jsonObject(with: Data(buffer: body)) as? [String: Any]) ?? [:]
}

/// The latency the chaos script injected, then one request counted.
func serve(_ controls: InstanceControls) async throws {
    let latency = controls.latency
    if latency > 0 { try await Task.sleep(for: .milliseconds(latency)) }
    controls.served()
}

private func addCartRoutes(
    to router: Router<BasicRequestContext>, discovery: ServiceDiscovery, controls: InstanceControls
) throws {
    let orders = ServiceClient(
        service: try ServiceName("order"), discovery: discovery, balancer: LeastRequestsBalancer(),
        // Longer than order's whole payment budget (3 attempts of 1 s): a slow saga is waited for, not raced.
        policy: CallPolicy(attemptTimeout: .seconds(5), maximumRetries: 3))
    // The cart's own store (one cart instance, in memory): each cart's checkout outcome, as the saga told it.
    let carts = Mutex<[String: [String: String]]>([:])
    router.post("checkout") { request, _ -> Response in
        try await serve(controls)
        let input = try await jsonObject(request)
        guard let cartId = input["cartId"] as? String, let amount = input["amountCents"] as? Int, amount > 0 else {
            return jsonResponse(
                ["error": "invalid_argument", "message": "cartId (string) and amountCents (> 0) are required"],
                status: .badRequest)
        }
        if let done = carts.withLock({ $0[cartId] }) { return jsonResponse(done) }
        let body = try JSONSerialization.data(withJSONObject: ["cartId": cartId, "amountCents": amount])
        var headers = HTTPHeaders()
        headers.add(name: "Idempotency-Key", value: "cart-\(cartId)")
        headers.add(name: "Content-Type", value: "application/json")
        // The key makes the call safe to send again, to another order instance if this one dies mid-call.
        let answer: ServiceResponse
        do {
            answer = try await orders.execute(
                ServiceRequest(
                    method: .POST, path: "/orders", headers: headers, body: ByteBuffer(data: body), isIdempotent: true))
        } catch {
            return jsonResponse(["error": "order_unavailable", "message": "\(error)"], status: .serviceUnavailable)
        }
        guard answer.status == .ok,
            let order = try? JSONSerialization.jsonObject(with: Data(buffer: answer.body)) as? [String: Any]
        else {
            return jsonResponse(
                ["error": "order_failed", "message": "order answered \(answer.status.code)"], status: .badGateway)
        }
        // The saga's end, told to the cart: confirmed is an order, cancelled a failed payment.
        let confirmed = order["status"] as? String == "confirmed"
        let outcome = [
            "cartId": cartId, "orderId": order["orderId"] as? String ?? "",
            "status": confirmed ? "ordered" : "payment_failed", "reason": order["reason"] as? String ?? "",
        ]
        carts.withLock { carts in
            if carts.count > 100_000 { carts.removeAll() }
            carts[cartId] = outcome
        }
        return jsonResponse(outcome)
    }
}

private func addOrderRoutes(
    to router: Router<BasicRequestContext>, book: OrderBook, discovery: ServiceDiscovery, controls: InstanceControls,
    logger: Logger
) throws {
    let payments = ServiceClient(
        service: try ServiceName("payment"), discovery: discovery, balancer: LeastRequestsBalancer(),
        policy: CallPolicy(attemptTimeout: .seconds(1), maximumRetries: 2))
    // The Python service under its sidecars; idempotent by order id, so a retry on the other instance is safe.
    let notifications = ServiceClient(
        service: try ServiceName("notification"), discovery: discovery, balancer: LeastRequestsBalancer(),
        policy: CallPolicy(attemptTimeout: .milliseconds(500), maximumRetries: 2))
    router.post("orders") { request, _ -> Response in
        try await serve(controls)
        guard let key = request.headers[.init("Idempotency-Key")!], !key.isEmpty else {
            return jsonResponse(
                ["error": "invalid_argument", "message": "an Idempotency-Key header is required"], status: .badRequest)
        }
        let input = try await jsonObject(request)
        guard let cartId = input["cartId"] as? String, let amount = input["amountCents"] as? Int else {
            return jsonResponse(
                ["error": "invalid_argument", "message": "cartId and amountCents are required"], status: .badRequest)
        }
        var order = try await book.pendingOrder(key: key, cartId: cartId, amountCents: amount)
        if order.status == "pending" {
            // The saga: charge, then confirm; a charge that fails for good cancels the order (compensation).
            var headers = HTTPHeaders()
            headers.add(name: "Idempotency-Key", value: "charge-\(order.orderId)")
            headers.add(name: "Content-Type", value: "application/json")
            let body = try JSONSerialization.data(withJSONObject: ["orderId": order.orderId, "amountCents": amount])
            do {
                let answer = try await payments.execute(
                    ServiceRequest(
                        method: .POST, path: "/charges", headers: headers, body: ByteBuffer(data: body),
                        isIdempotent: true))
                let charge = try? JSONSerialization.jsonObject(with: Data(buffer: answer.body)) as? [String: Any]
                switch (answer.status.code, charge?["status"] as? String) {
                case (200, "charged"?):
                    order = try await book.settle(order.orderId, status: "confirmed", reason: nil)
                case (200, "declined"?):
                    // Compensation: the payment failed for good, so the order is cancelled.
                    order = try await book.settle(order.orderId, status: "cancelled", reason: "payment declined")
                case (400..<500, _):
                    order = try await book.settle(
                        order.orderId, status: "cancelled", reason: "payment refused the charge: \(answer.status.code)")
                default:
                    // The charge may or may not have happened: the order stays pending, and the caller's retry
                    // (same key) carries the saga on.
                    return jsonResponse(
                        [
                            "error": "payment_unavailable", "orderId": order.orderId,
                            "message": "payment answered \(answer.status.code)",
                        ],
                        status: .serviceUnavailable)
                }
            } catch {
                return jsonResponse(
                    ["error": "payment_unavailable", "orderId": order.orderId, "message": "\(error)"],
                    status: .serviceUnavailable)
            }
        }
        if order.status == "confirmed" { await notify(order.orderId, through: notifications, logger: logger) }
        return jsonResponse([
            "orderId": order.orderId, "cartId": order.cartId, "amountCents": order.amountCents, "status": order.status,
            "reason": order.reason ?? NSNull(),
        ])
    }
}

/// Tells notification about a confirmed order. Best-effort: the client's retries try the other instance, and a
/// notification that still fails is logged, never the checkout's failure.
private func notify(
    _ orderId: String, through notifications: ServiceClient<LeastRequestsBalancer>, logger: Logger
) async {
    var headers = HTTPHeaders()
    headers.add(name: "Content-Type", value: "application/json")
    let body = (try? JSONSerialization.data(withJSONObject: ["orderId": orderId])) ?? Data()
    do {
        let answer = try await notifications.execute(
            ServiceRequest(
                method: .POST, path: "/notify", headers: headers, body: ByteBuffer(data: body), isIdempotent: true))
        if answer.status != .ok {
            logger.warning("notification answered \(answer.status.code)", metadata: ["order": "\(orderId)"])
        }
    } catch {
        logger.warning("notification failed: \(error)", metadata: ["order": "\(orderId)"])
    }
}

private func addPaymentRoutes(
    to router: Router<BasicRequestContext>, ledger: PaymentLedger, controls: InstanceControls,
    instance: @escaping @Sendable () -> String
) {
    router.post("charges") { request, _ -> Response in
        try await serve(controls)
        guard let key = request.headers[.init("Idempotency-Key")!], !key.isEmpty else {
            return jsonResponse(
                ["error": "invalid_argument", "message": "an Idempotency-Key header is required"], status: .badRequest)
        }
        let input = try await jsonObject(request)
        guard let orderId = input["orderId"] as? String, let amount = input["amountCents"] as? Int else {
            return jsonResponse(
                ["error": "invalid_argument", "message": "orderId and amountCents are required"], status: .badRequest)
        }
        // Amounts ending in 13 cents are declined: the demo's stand-in for a card that bounces.
        let charge = try await ledger.charge(key: key, orderId: orderId, amountCents: amount, instance: instance()) {
            $0 % 100 != 13
        }
        return jsonResponse([
            "chargeId": charge.chargeId, "orderId": charge.orderId, "status": charge.status,
            "instance": charge.instance,
        ])
    }
    router.get("ledger") { _, _ -> Response in
        let counts = try await ledger.counts()
        return jsonResponse(["charged": counts.charged, "declined": counts.declined])
    }
}

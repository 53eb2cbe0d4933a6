import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import SwitchboardClient
import SwitchboardCore
import SwitchboardTLS
import Tracing

/// The gateway: one address for callers that know nothing of the registry, proxying each request to a healthy
/// instance of the service it names (server-side discovery).
///
/// A swift-service-lifecycle `Service` that runs its own `ServiceDiscovery` (the instances come from the
/// agent's watch streams, as in any client) and an HTTP/1.1 reverse proxy on SwiftNIO: keep-alive on both sides,
/// pooled connections to instances per event loop, bodies streamed both ways with backpressure. It holds no state
/// that others need, so several gateways can run side by side.
public struct GatewayServer: Service {
    /// How it listens, where it learns instances and where its routes come from.
    public let configuration: GatewayConfiguration
    /// Per route and upstream; served at the admin address's `/metrics`.
    public let metrics: GatewayMetrics
    let logger: Logger
    let onListening: @Sendable (Int) async -> Void
    /// Spans each proxied request and its attempts; nil when the process traces nothing.
    let tracer: (any Tracer)?

    /// A gateway; `onListening` is told the bound port. `tracer` defaults to the one the process bootstrapped
    /// (`InstrumentationSystem`); with the no-op one, no span is made.
    public init(
        configuration: GatewayConfiguration, metrics: GatewayMetrics = GatewayMetrics(), logger: Logger,
        tracer: (any Tracer)? = nil, onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        let chosen = tracer ?? InstrumentationSystem.tracer
        self.tracer = chosen is NoOpTracer ? nil : chosen
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.onListening = onListening
    }

    /// Serves until graceful shutdown, then lets exchanges under way finish (up to the shutdown grace); throws
    /// when the route file or an address cannot be used.
    public func run() async throws {
        let configuration = self.configuration
        let logger = self.logger
        let tracer = self.tracer
        // A route file that cannot be read stops the gateway before it listens: better than serving no routes.
        var routeFile: RouteFileWatcher.Loaded?
        if let path = configuration.routeFile { routeFile = try await RouteFileWatcher.load(path) }
        // Certificates that do not load stop the gateway before it listens, naming the file.
        // ALPN offers HTTP/2 first to callers over TLS.
        let tls = try configuration.tls.map { settings in
            var settings = settings
            settings.applicationProtocols = ["h2", "http/1.1"]
            return try ReloadingTLSContext(settings: settings)
        }
        let connection = AgentConnection(
            configuration: .init(
                agents: configuration.agents, tls: configuration.agentTLS, token: configuration.agentToken),
            logger: logger)
        // With a route file, routes name the instances they want; without, only public ones are reachable.
        let query = routeFile == nil ? InstanceQuery(tags: [configuration.publicTag]) : InstanceQuery()
        let discovery = ServiceDiscovery(
            connection: connection, configuration: .init(query: query, reporter: "gateway"), logger: logger)
        let router = GatewayRouter(
            selector: UpstreamSelector(
                discovery: discovery, outlierDetection: configuration.outlierDetection,
                circuitBreaker: configuration.circuitBreaker),
            publicTag: configuration.publicTag, table: routeFile?.table,
            gatewayService: configuration.registration?.service)
        let aggregator = Aggregator(discovery: discovery)
        let accessLog: AccessLog? =
            switch configuration.accessLog {
            case .off: nil
            case .standardOutput: AccessLog(handle: .standardOutput)
            case .file(let path): try AccessLog.appending(to: path)
            }
        let listener = try await ProxyListener.bind(
            host: configuration.host, port: configuration.port, router: router, configuration: configuration,
            metrics: metrics, tls: tls, accessLog: accessLog, aggregator: aggregator, tracer: tracer, logger: logger)
        let port = listener.port
        logger.info("gateway listening", metadata: ["address": "\(configuration.host):\(port)"])
        var admin: (any Channel)?
        if let address = configuration.admin {
            admin = try await AdminServer.bind(host: address.host, port: address.port, metrics: metrics, router: router)
            logger.info(
                "gateway admin listening",
                metadata: ["address": "\(address.host):\(admin?.localAddress?.port ?? address.port)"])
        }
        let registration = try configuration.registration.map { registration in
            ServiceRegistration(
                connection: connection,
                configuration: try registration.configuration(
                    listenHost: configuration.host, port: port, adminPort: admin?.localAddress?.port,
                    tls: tls != nil),
                logger: logger)
        }
        // Ends when the registration has drained and left (at once without one): the gateway keeps serving until then.
        let (registrationEnded, registrationEnding) = AsyncStream<Never>.makeStream()
        if registration == nil { registrationEnding.finish() }
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask { try await discovery.run() }
            if let service = configuration.registration?.service {
                // Followed from the start, so shared rate limits know how many gateways split them.
                tasks.addTask { _ = try? await discovery.snapshot(of: service) }
            }
            if let registration {
                tasks.addTask {
                    defer { registrationEnding.finish() }
                    do {
                        try await registration.run()
                    } catch {
                        logger.error("the gateway could not register itself", metadata: ["error": "\(error)"])
                    }
                }
            }
            if let tls { tasks.addTask { try await TLSReloader(tls: tls, logger: logger).run() } }
            if let accessLog { tasks.addTask { await accessLog.run() } }
            if let routeFile, let path = configuration.routeFile {
                tasks.addTask {
                    var watcher = RouteFileWatcher(
                        path: path, loaded: routeFile, interval: configuration.routeReloadInterval)
                    await watcher.run(installingIn: router, logger: logger)
                }
            }
            await onListening(port)
            try? await gracefulShutdown()
            // Drained in the registry first, so callers stop picking this gateway while it still answers.
            for await _ in registrationEnded {}
            // No new callers; each connection finishes the exchange under way and closes, for at most the
            // shutdown grace; then the pooled connections to instances close.
            await listener.shutdown(grace: configuration.shutdownGrace)
            try? await admin?.close()
            tasks.cancelAll()
        }
        try await connection.shutdown()
    }
}

import Logging
import NIOCore
import ServiceLifecycle
import SwitchboardClient
import SwitchboardCore
import Tracing

/// One local listener of an ``UpstreamProxy``: the service it sends to, where it listens, and how.
public struct UpstreamProxyConfiguration: Sendable, Hashable {
    /// What the listener carries.
    public enum Mode: Sendable, Hashable {
        /// HTTP/1.1, each request sent to a healthy instance (and retried on another when it may be), as the
        /// gateway does.
        case http
        /// Plain TCP: each connection goes to one healthy instance, its bytes carried both ways untouched.
        case tcp
    }

    /// The service every request (or connection) goes to.
    public var service: ServiceName
    /// The address the listener binds, e.g. `127.0.0.1`.
    public var host: String
    /// 0 picks a free port; ``UpstreamProxy``'s `onListening` reports the one bound.
    public var port: Int
    /// HTTP/1.1 (the default) or plain TCP.
    public var mode: Mode

    /// A listener for `service` on `host:port`, in HTTP mode unless told otherwise.
    public init(service: ServiceName, host: String, port: Int, mode: Mode = .http) {
        self.service = service
        self.host = host
        self.port = port
        self.mode = mode
    }
}

/// A sidecar's outbound proxy: local listeners that send an application's calls to healthy instances of the
/// services it depends on, so the application needs no client library, only an address such as
/// `http://127.0.0.1:9101`.
///
/// A swift-service-lifecycle `Service` holding one agent connection and one discovery for all its listeners. An
/// HTTP listener is the gateway's proxy (the same ``GatewayConfiguration`` defaults) with one route sending every
/// path, unchanged, to its service's healthy instances, whatever their tags: the client library's round-robin
/// balancing, outlier ejection and circuit breakers; a connection that cannot be made, or an idempotent request
/// whose instance fails before answering, goes to another instance. A TCP listener picks an instance the same way
/// for each connection, and another when one cannot be connected to. Nothing is logged per request.
///
/// ```swift
/// let proxy = UpstreamProxy(
///     upstreams: [
///         UpstreamProxyConfiguration(service: try ServiceName("payment"), host: "127.0.0.1", port: 9101),
///         UpstreamProxyConfiguration(service: try ServiceName("db"), host: "127.0.0.1", port: 9102, mode: .tcp),
///     ],
///     agents: ["http://127.0.0.1:7500"], agentTLS: nil, agentToken: nil, logger: logger)
/// try await ServiceGroup(configuration: .init(services: [proxy], logger: logger)).run()
/// ```
public final class UpstreamProxy: Service, Sendable {
    /// The listeners, one per upstream service.
    public let upstreams: [UpstreamProxyConfiguration]
    private let agentConfiguration: AgentConnectionConfiguration
    private let logger: Logger
    private let onListening: @Sendable ([ServiceName: Int]) async -> Void
    /// Spans of the calls through the HTTP listeners; nil when tracing is off.
    private let tracer: (any Tracer)?
    /// The proxy's timeouts, retries and resilience: the gateway's defaults.
    private let settings = GatewayConfiguration()

    /// A proxy for `upstreams`, learning instances from `agents` (with `agentTLS` to trust `https://` ones, and
    /// `agentToken` for agents with ACLs on: it needs read on the upstream services). `onListening` is told each
    /// service's bound port once every listener is bound. `tracer` defaults to the one the process bootstrapped
    /// (`InstrumentationSystem`); with the no-op one, no span is made. A caller's `traceparent` is continued, as
    /// the gateway does.
    public init(
        upstreams: [UpstreamProxyConfiguration], agents: [String], agentTLS: AgentTLSConfiguration?,
        agentToken: String?, logger: Logger, tracer: (any Tracer)? = nil,
        onListening: @escaping @Sendable ([ServiceName: Int]) async -> Void = { _ in }
    ) {
        let chosen = tracer ?? InstrumentationSystem.tracer
        self.tracer = chosen is NoOpTracer ? nil : chosen
        self.upstreams = upstreams
        self.agentConfiguration = AgentConnectionConfiguration(agents: agents, tls: agentTLS, token: agentToken)
        self.logger = logger
        self.onListening = onListening
    }

    /// Serves until graceful shutdown, then lets exchanges and connections under way finish (up to the gateway's
    /// shutdown grace); throws when a listener cannot bind.
    public func run() async throws {
        let settings = self.settings
        let logger = self.logger
        let tracer = self.tracer
        let connection = AgentConnection(configuration: agentConfiguration, logger: logger)
        // Every healthy instance: the application names the service it calls, not a public face of it.
        let discovery = ServiceDiscovery(
            connection: connection, configuration: .init(query: InstanceQuery(), reporter: "sidecar"), logger: logger)
        let selector = UpstreamSelector(
            discovery: discovery, outlierDetection: settings.outlierDetection, circuitBreaker: settings.circuitBreaker)
        var listeners: [ProxyListener] = []
        var forwarders: [TCPForwarder] = []
        var ports: [ServiceName: Int] = [:]
        do {
            for upstream in upstreams {
                switch upstream.mode {
                case .http:
                    let router = GatewayRouter(
                        selector: selector, publicTag: settings.publicTag,
                        table: RouteTable.everything(to: upstream.service))
                    let listener = try await ProxyListener.bind(
                        host: upstream.host, port: upstream.port, router: router, configuration: settings,
                        metrics: GatewayMetrics(), tracer: tracer, logger: logger)
                    listeners.append(listener)
                    ports[upstream.service] = listener.port
                case .tcp:
                    let forwarder = try await TCPForwarder.bind(
                        service: upstream.service, host: upstream.host, port: upstream.port, selector: selector,
                        connectTimeout: settings.connectTimeout, connectRetries: settings.connectRetries,
                        logger: logger)
                    forwarders.append(forwarder)
                    ports[upstream.service] = forwarder.port
                }
                logger.info(
                    "upstream proxy listening",
                    metadata: [
                        "service": "\(upstream.service)", "mode": "\(upstream.mode)",
                        "address": "\(upstream.host):\(ports[upstream.service] ?? upstream.port)",
                    ])
            }
        } catch {
            // A listener that cannot bind stops the proxy: the ones bound so far are let go.
            for listener in listeners { try? await listener.channel.close() }
            for forwarder in forwarders { forwarder.stopAccepting() }
            try? await connection.shutdown()
            throw error
        }
        try await withThrowingDiscardingTaskGroup { tasks in
            tasks.addTask { try await discovery.run() }
            // Ends when every listener has stopped: discovery is needed until then.
            await withDiscardingTaskGroup { serving in
                for forwarder in forwarders {
                    serving.addTask { await forwarder.run(grace: settings.shutdownGrace) }
                }
                await onListening(ports)
                try? await gracefulShutdown()
                for forwarder in forwarders { forwarder.stopAccepting() }
                for listener in listeners {
                    serving.addTask { await listener.shutdown(grace: settings.shutdownGrace) }
                }
            }
            tasks.cancelAll()
        }
        try await connection.shutdown()
    }
}

extension RouteTable {
    /// One route sending every path, unchanged, to every healthy instance of `service`.
    static func everything(to service: ServiceName) -> RouteTable {
        RouteTable(
            routes: [
                Route(
                    name: service.rawValue, prefix: "/",
                    targets: [RouteTarget(service: service, query: InstanceQuery(), weight: 1)])
            ],
            source: "upstream \(service)")
    }
}

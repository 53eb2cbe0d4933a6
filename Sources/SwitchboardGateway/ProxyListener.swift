import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import NIOTLS
import SwitchboardTLS
import Tracing

/// A bound proxy listener: each caller's connection (or, in HTTP/2, each of its streams) served by a
/// ``ProxyHandler``, with the connections to instances pooled per event loop.
///
/// What the gateway and the sidecar's upstream proxy (``UpstreamProxy``) share: they differ in how requests are
/// routed (the router they pass) and in what runs beside the listener, not in how a request is proxied.
struct ProxyListener {
    /// The listening channel.
    let channel: any Channel
    /// The bound port (the one asked for, or the one picked for port 0).
    let port: Int
    private let quiescing: ServerQuiescingHelper
    private let loopPools: LoopPools
    private let group: MultiThreadedEventLoopGroup

    /// Binds `host:port` and serves every caller through `router`; `configuration` gives the proxy's timeouts,
    /// retries and pool sizes (its own address is not used: `host` and `port` are).
    static func bind(
        host: String, port: Int, router: GatewayRouter, configuration: GatewayConfiguration, metrics: GatewayMetrics,
        tls: ReloadingTLSContext? = nil, accessLog: AccessLog? = nil, aggregator: Aggregator? = nil,
        tracer: (any Tracer)? = nil, logger: Logger
    ) async throws -> ProxyListener {
        let group = MultiThreadedEventLoopGroup.singleton
        let upstreamTLS = try UpstreamTLS.context(caFile: configuration.upstreamCAFile)
        var pools: [ObjectIdentifier: LoopPools.Resources] = [:]
        for loop in group.makeIterator() {
            pools[ObjectIdentifier(loop)] = LoopPools.Resources(
                pool: UpstreamPool(
                    eventLoop: loop, idleLimit: configuration.idleConnectionsPerInstance,
                    connectTimeout: configuration.connectTimeout.timeAmount, tls: upstreamTLS),
                metrics: LoopMetrics(metrics: metrics))
        }
        let loopPools = LoopPools(pools)
        // Tracks callers' connections: at shutdown each is told to finish its exchange and close.
        let quiescing = ServerQuiescingHelper(group: group)
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    // The HTTP/1.1 proxy on `channel` (a caller's connection, or one HTTP/2 stream of it).
                    let proxy: @Sendable (any Channel) throws -> ProxyHandler = { channel in
                        let resources = loopPools.resources(for: channel.eventLoop)
                        return ProxyHandler(
                            router: router, pool: resources.pool, configuration: configuration, accessLog: accessLog,
                            aggregator: aggregator, metrics: resources.metrics, tracer: tracer,
                            callerUsesTLS: tls != nil, logger: logger)
                    }
                    // Until the protocol is known, and for HTTP/2 for good, a connection with nothing passing for the
                    // idle timeout is closed (a silent caller, a TLS handshake that never ends, an HTTP/2 connection
                    // without streams). HTTP/1.1 watches idleness itself: it knows when it waits for an instance.
                    let idle = IdleStateHandler(allTimeout: configuration.clientIdleTimeout.timeAmount)
                    let closer = IdleConnectionCloser()
                    try channel.pipeline.syncOperations.addHandlers(idle, closer)
                    let http1 = { (channel: any Channel) throws in
                        channel.pipeline.syncOperations.removeHandler(idle, promise: nil)
                        channel.pipeline.syncOperations.removeHandler(closer, promise: nil)
                        try channel.pipeline.syncOperations.addHandler(try proxy(channel))
                    }
                    let http2: @Sendable (any Channel) throws -> Void = { channel in
                        _ = try channel.pipeline.syncOperations.configureHTTP2Pipeline(
                            mode: .server, connectionConfiguration: HTTP2Limits.connection,
                            streamConfiguration: HTTP2Limits.stream
                        ) { stream in
                            stream.eventLoop.makeCompletedFuture {
                                try stream.pipeline.syncOperations.addHandlers(
                                    HTTP2FramePayloadToHTTP1ServerCodec(), HTTP2StreamBridge(), try proxy(stream))
                            }
                        }
                    }
                    if let tls {
                        // The context current when the caller connects: a rotated certificate reaches new callers.
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context))
                        // ALPN: h2 when the caller offers it, HTTP/1.1 otherwise.
                        try channel.pipeline.syncOperations.addHandler(
                            ApplicationProtocolNegotiationHandler { result, channel in
                                channel.eventLoop.makeCompletedFuture {
                                    if case .negotiated("h2") = result {
                                        try http2(channel)
                                    } else {
                                        try http1(channel)
                                    }
                                }
                            })
                    } else {
                        try channel.pipeline.syncOperations.addHandler(
                            CleartextProtocolSniffer(http1: http1, http2: http2))
                    }
                }
            }
            .bind(host: host, port: port).get()
        return ProxyListener(
            channel: channel, port: channel.localAddress?.port ?? port, quiescing: quiescing, loopPools: loopPools,
            group: group)
    }

    /// Takes no new callers; each connection finishes the exchange under way and closes, for at most `grace`; then
    /// the pooled connections to instances close.
    func shutdown(grace: Duration) async {
        let closed = group.next().makePromise(of: Void.self)
        quiescing.initiateShutdown(promise: closed)
        _ = try? await withThrowingTaskGroup(of: Void.self) { waits in
            waits.addTask { try await closed.futureResult.get() }
            waits.addTask { try await Task.sleep(for: grace) }
            try await waits.next()
            waits.cancelAll()
        }
        for loop in group.makeIterator() {
            try? await loop.submit { loopPools.resources(for: loop).pool.closeAll() }.get()
        }
    }
}

/// Each event loop's pool and metric handles, looked up by loop when a connection arrives; they are only ever
/// used on their loop.
final class LoopPools: @unchecked Sendable {
    struct Resources {
        var pool: UpstreamPool
        var metrics: LoopMetrics
    }

    private let pools: [ObjectIdentifier: Resources]

    init(_ pools: [ObjectIdentifier: Resources]) {
        self.pools = pools
    }

    func resources(for loop: any EventLoop) -> Resources {
        guard let resources = pools[ObjectIdentifier(loop)] else {
            preconditionFailure("a connection on an event loop the gateway did not set up")
        }
        return resources
    }
}

/// The HTTP/2 limits the gateway announces to callers (RFC 9113 section 6.5.2): streams at once per connection and
/// the largest header list, as nginx's and Envoy's defaults bound them.
enum HTTP2Limits {
    static let maximumConcurrentStreams = 128
    static let maximumHeaderListSize = 64 * 1024

    static var connection: NIOHTTP2Handler.ConnectionConfiguration {
        var configuration = NIOHTTP2Handler.ConnectionConfiguration()
        configuration.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: maximumConcurrentStreams),
            HTTP2Setting(parameter: .maxHeaderListSize, value: maximumHeaderListSize),
        ]
        return configuration
    }

    static var stream: NIOHTTP2Handler.StreamConfiguration { NIOHTTP2Handler.StreamConfiguration() }
}

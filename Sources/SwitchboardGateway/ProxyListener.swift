import Logging
import NIOCore
import NIOExtras
import NIOPosix
import NIOSSL
import SwitchboardTLS
import Tracing

/// A bound HTTP/1.1 proxy listener: each caller's connection served by a ``ProxyHandler``, with the connections to
/// instances pooled per event loop.
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
                    if let tls {
                        // The context current when the caller connects: a rotated certificate reaches new callers.
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context))
                    }
                    let resources = loopPools.resources(for: channel.eventLoop)
                    try channel.pipeline.syncOperations.addHandler(
                        ProxyHandler(
                            router: router, pool: resources.pool, configuration: configuration, accessLog: accessLog,
                            aggregator: aggregator, metrics: resources.metrics, tracer: tracer,
                            callerUsesTLS: tls != nil, logger: logger))
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

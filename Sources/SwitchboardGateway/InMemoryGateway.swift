import Logging
import NIOCore
import NIOEmbedded
import SwitchboardClient
import SwitchboardCore
import Tracing

/// The gateway's proxy with every byte in memory: a ``ProxyHandler`` on an `EmbeddedChannel` for the caller, and
/// `EmbeddedChannel`s with the pool's ``UpstreamHandler`` for the connections it opens to instances. Every step runs
/// on the calling thread when the caller or an instance sends something.
///
/// It is what the proxy handler's tests drive, and what the allocation benchmark (`Benchmarks/`) measures: the
/// handler's own work per exchange (routing, picking, rewriting heads, framing bodies, pooling), without sockets,
/// an event loop's wake-ups or another process. Not for serving: it is published to those two only, as SPI.
@_spi(Measuring)
public final class InMemoryGateway {
    /// The connections opened to instances, in order (a class: the pool's opener adds to it).
    private final class OpenedChannels {
        var channels: [EmbeddedChannel] = []
    }

    let loop: EmbeddedEventLoop
    /// The caller's connection.
    public let caller: EmbeddedChannel
    private let opened: OpenedChannels

    /// The connections to instances the gateway opened, in order.
    public var upstreams: [EmbeddedChannel] { opened.channels }

    /// A gateway in front of what `discovery` knows, without a route file: `/<service>/...` reaches the instances
    /// of `<service>` tagged `public`, as `switchboard gateway` without `--routes` does.
    public convenience init(discovery: ServiceDiscovery) throws {
        try self.init(discovery: discovery, routes: nil)
    }

    /// A gateway in front of what `discovery` knows: with a route file's `routes`, or else `/<service>/...` to
    /// instances tagged `public`; spans made with `tracer` (none without).
    init(discovery: ServiceDiscovery, routes: RouteTable?, tracer: (any Tracer)? = nil) throws {
        let loop = EmbeddedEventLoop()
        let opened = OpenedChannels()
        let pool = UpstreamPool(eventLoop: loop, idleLimit: 4) { address in
            let channel = EmbeddedChannel(loop: loop)
            do {
                try channel.connect(to: SocketAddress(ipAddress: address.host, port: address.port)).wait()
            } catch {
                return loop.makeFailedFuture(error)
            }
            opened.channels.append(channel)
            return loop.makeSucceededFuture(channel)
        }
        let router = GatewayRouter(
            selector: UpstreamSelector(
                discovery: discovery, outlierDetection: OutlierDetector.Configuration(),
                circuitBreaker: CircuitBreaker.Configuration()),
            publicTag: "public", table: routes)
        let proxy = ProxyHandler(
            router: router, pool: pool, configuration: GatewayConfiguration(), accessLog: nil,
            metrics: LoopMetrics(metrics: GatewayMetrics()), tracer: tracer,
            logger: Logger(label: "switchboard.gateway.in-memory", factory: { _ in SwiftLogNoOpLogHandler() }))
        caller = EmbeddedChannel(loop: loop)
        caller.remoteAddress = try SocketAddress(ipAddress: "192.0.2.7", port: 50_000)
        try caller.pipeline.syncOperations.addHandler(proxy)
        try caller.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 7080)).wait()
        self.loop = loop
        self.opened = opened
    }

    /// The caller sends `bytes`, in one read, and the gateway does what it leads to.
    public func send(_ bytes: ByteBuffer) throws {
        try caller.writeInbound(bytes)
        loop.run()
    }

    /// The instance behind the `index`th connection sends `bytes`, in one read.
    public func upstreamSends(_ bytes: ByteBuffer, on index: Int = 0) throws {
        try upstreams[index].writeInbound(bytes)
        loop.run()
    }

    /// How many bytes the caller got since it last looked (dropping them).
    public func dropReceived() throws -> Int {
        try Self.drop(caller)
    }

    /// How many bytes the gateway wrote on its `index`th connection to an instance since the last look (dropping
    /// them).
    public func dropUpstreamReceived(_ index: Int = 0) throws -> Int {
        try Self.drop(upstreams[index])
    }

    /// Closes the caller's connection and every connection to instances.
    public func finish() {
        _ = try? caller.finish(acceptAlreadyClosed: true)
        for channel in upstreams { _ = try? channel.finish(acceptAlreadyClosed: true) }
    }

    private static func drop(_ channel: EmbeddedChannel) throws -> Int {
        var count = 0
        while let bytes = try channel.readOutbound(as: ByteBuffer.self) { count += bytes.readableBytes }
        return count
    }
}

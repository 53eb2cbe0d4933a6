import HummingbirdCore
import Logging
import NIOCore
import Prometheus
import SwitchboardTLS
import Synchronization

/// The agent's ceiling on open connections (HTTP API and Consul listener together): a connection beyond it is
/// closed as it arrives, before any byte is read, so a flood of idle connections cannot take the file descriptors
/// the catalog, the probes and the clients already connected need.
public final class ConnectionLimiter: Sendable {
    public let maximum: Int
    private let open = Atomic<Int>(0)
    private let metrics: AgentMetrics?
    private let logger: Logger
    /// When the last refusal was logged: one line a second at most, however many arrive.
    private let lastLogged = Mutex<ContinuousClock.Instant?>(nil)

    public init(maximum: Int, metrics: AgentMetrics? = nil, logger: Logger) {
        self.maximum = maximum
        self.metrics = metrics
        self.logger = logger
    }

    /// Connections open now.
    public var openConnections: Int { open.load(ordering: .relaxed) }

    /// Takes one connection in, or refuses it (counted, and logged at most once a second).
    func admit() -> Bool {
        if open.wrappingAdd(1, ordering: .relaxed).newValue <= maximum { return true }
        open.wrappingSubtract(1, ordering: .relaxed)
        metrics?.connectionsRefused.increment()
        let now = ContinuousClock.now
        let log = lastLogged.withLock { last in
            guard last.map({ now - $0 >= .seconds(1) }) ?? true else { return false }
            last = now
            return true
        }
        if log {
            logger.warning(
                "connection refused: the agent holds its maximum of open connections",
                metadata: ["max-connections": "\(maximum)"])
        }
        return false
    }

    func release() {
        open.wrappingSubtract(1, ordering: .relaxed)
    }
}

/// Why a connection was closed as it arrived.
struct ConnectionLimitReached: Error, CustomStringConvertible {
    var description: String { "the agent holds its maximum of open connections" }
}

/// A server child channel that counts its connection against a ``ConnectionLimiter`` for as long as it is open,
/// and closes it at once when the limit is reached.
struct ConnectionLimitedChannel<Base: ServerChildChannel>: ServerChildChannel {
    typealias Value = Base.Value

    let base: Base
    let limiter: ConnectionLimiter

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        guard limiter.admit() else {
            channel.close(promise: nil)
            return channel.eventLoop.makeFailedFuture(ConnectionLimitReached())
        }
        let limiter = self.limiter
        channel.closeFuture.whenComplete { _ in limiter.release() }
        return base.setup(channel: channel, logger: logger)
    }

    func handle(value: Value, logger: Logger) async {
        await base.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1, over TLS when `tls` is given, with every connection counted against `limiter`.
    static func http1(tls: ReloadingTLSContext?, limiter: ConnectionLimiter) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in
            if let tls {
                return ConnectionLimitedChannel(
                    base: ReloadingTLSChannel(base: HTTP1Channel(responder: responder), tls: tls), limiter: limiter)
            }
            return ConnectionLimitedChannel(base: HTTP1Channel(responder: responder), limiter: limiter)
        }
    }
}

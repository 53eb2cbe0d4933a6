import NIOCore
import NIOHTTP1
import NIOPosix

/// Where a pooled connection goes.
struct UpstreamAddress: Hashable {
    var host: String
    var port: Int
}

/// What a proxied exchange is told by its upstream connection.
protocol UpstreamReceiver: AnyObject {
    func upstreamReceived(_ part: HTTPClientResponsePart)
    /// The connection failed or closed before the response ended.
    func upstreamFailed(_ error: any Error)
    func upstreamWritabilityChanged(isWritable: Bool)
}

/// One keep-alive connection to an instance, used by one exchange at a time.
final class UpstreamConnection {
    let channel: any Channel
    let address: UpstreamAddress
    /// The exchange using it now; nil while it waits in the pool.
    weak var receiver: (any UpstreamReceiver)?
    /// Whether it served an exchange before this one: such a connection may have been closed by the instance
    /// while it waited, so a failure on it says nothing about the instance.
    var isReused = false

    init(channel: any Channel, address: UpstreamAddress) {
        self.channel = channel
        self.address = address
    }
}

/// The connections to instances of one event loop: every exchange runs on its caller's loop, so its upstream
/// connection does too, and nothing here needs a lock. Idle connections are kept per instance up to a bound and
/// dropped when the instance closes them.
final class UpstreamPool {
    let eventLoop: any EventLoop
    private let idleLimit: Int
    private let connectTimeout: TimeAmount
    private var idle: [UpstreamAddress: [UpstreamConnection]] = [:]

    init(eventLoop: any EventLoop, idleLimit: Int, connectTimeout: TimeAmount) {
        self.eventLoop = eventLoop
        self.idleLimit = idleLimit
        self.connectTimeout = connectTimeout
    }

    /// An idle connection to `address`, or a new one (bound to this loop, where it is used).
    func acquire(_ address: UpstreamAddress) -> EventLoopFuture<NIOLoopBound<UpstreamConnection>> {
        eventLoop.preconditionInEventLoop()
        while let connection = idle[address]?.popLast() {
            if connection.channel.isActive {
                connection.isReused = true
                return eventLoop.makeSucceededFuture(NIOLoopBound(connection, eventLoop: eventLoop))
            }
        }
        let pool = NIOLoopBound(self, eventLoop: eventLoop)
        let loop = eventLoop
        return ClientBootstrap(group: eventLoop)
            .connectTimeout(connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                }
            }
            .connect(host: address.host, port: address.port)
            .flatMapThrowing { channel in
                let connection = UpstreamConnection(channel: channel, address: address)
                try channel.pipeline.syncOperations.addHandler(
                    UpstreamHandler(connection: connection, pool: pool.value))
                return NIOLoopBound(connection, eventLoop: loop)
            }
    }

    /// Puts a connection whose exchange ended cleanly (and which the instance keeps open) back for the next one,
    /// or closes it when the pool is full.
    func release(_ connection: UpstreamConnection) {
        eventLoop.preconditionInEventLoop()
        connection.receiver = nil
        guard connection.channel.isActive, idle[connection.address, default: []].count < idleLimit else {
            connection.channel.close(promise: nil)
            return
        }
        // Reading may have been paused for a slow caller when the response ended: the next exchange needs it.
        connection.channel.setOption(.autoRead, value: true).whenComplete { _ in }
        idle[connection.address, default: []].append(connection)
    }

    /// Forgets a connection that closed.
    func remove(_ connection: UpstreamConnection) {
        idle[connection.address]?.removeAll { $0 === connection }
    }
}

/// Hands an upstream connection's response parts and failures to the exchange using it.
final class UpstreamHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let connection: UpstreamConnection
    private let pool: UpstreamPool

    init(connection: UpstreamConnection, pool: UpstreamPool) {
        self.connection = connection
        self.pool = pool
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        connection.receiver?.upstreamReceived(part)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        connection.receiver?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        pool.remove(connection)
        let receiver = connection.receiver
        connection.receiver = nil
        receiver?.upstreamFailed(ChannelError.eof)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        let receiver = connection.receiver
        connection.receiver = nil
        receiver?.upstreamFailed(error)
        context.close(promise: nil)
    }
}

import NIOCore
import NIOPosix
import NIOSSL

/// Where a pooled connection goes.
struct UpstreamAddress: Hashable {
    var host: String
    var port: Int
    /// Reached over TLS (an instance tagged `tls` or with meta `scheme: https`).
    var tls = false
}

/// What a proxied exchange is told by its upstream connection.
protocol UpstreamReceiver: AnyObject {
    /// The response head arrived (interim 1xx answers are dropped before it); the answer says whether the body
    /// is wanted without its chunk framing.
    func upstreamResponded(_ head: ResponseHead, framing: BodyFraming) -> Bool
    func upstreamBody(_ bytes: ByteBuffer)
    /// A read from the instance is done: time to flush what it gave.
    func upstreamReadComplete()
    /// The response ended; `reusable` when the connection may serve another exchange.
    func upstreamEnded(reusable: Bool)
    /// The connection failed or closed before the response ended.
    func upstreamFailed(_ error: any Error)
    func upstreamWritabilityChanged(isWritable: Bool)
    /// The instance answered an upgrade with `101 Switching Protocols`: from here on the connection carries the
    /// upgraded protocol's bytes, both ways, untouched (``upstreamTunnelBytes(_:)``, ``upstreamTunnelClosed()``).
    func upstreamSwitchedProtocols(_ head: ResponseHead)
    /// Bytes of the upgraded protocol from the instance.
    func upstreamTunnelBytes(_ bytes: ByteBuffer)
    /// The instance closed the upgraded connection.
    func upstreamTunnelClosed()
}

/// One keep-alive connection to an instance, used by one exchange at a time.
final class UpstreamConnection {
    let channel: any Channel
    let address: UpstreamAddress
    let handler: UpstreamHandler
    /// Whether it served an exchange before this one: such a connection may have been closed by the instance
    /// while it waited, so a failure on it says nothing about the instance.
    var isReused = false
    /// False once the channel closed (its handler saw it go inactive): asking the channel is a locked read per call.
    var isOpen = true

    init(channel: any Channel, address: UpstreamAddress, handler: UpstreamHandler) {
        self.channel = channel
        self.address = address
        self.handler = handler
    }

    /// Hands the connection to an exchange whose response is read next; `upgrading` when the request asks for a
    /// protocol upgrade, so a `101` answer turns the connection into a tunnel rather than a failure.
    func begin(for receiver: any UpstreamReceiver, toHEAD: Bool, upgrading: Bool = false) {
        handler.begin(for: receiver, toHEAD: toHEAD, upgrading: upgrading)
    }

    /// Stops (or resumes) reading the response while the caller cannot take more.
    func holdReading(_ hold: Bool) {
        handler.holdReading(hold)
    }
}

/// The connections to instances of one event loop: every exchange runs on its caller's loop, so its upstream
/// connection does too, and nothing here needs a lock. Idle connections are kept per instance up to a bound and
/// dropped when the instance closes them.
final class UpstreamPool {
    /// Opens a channel to an instance, on the pool's loop; the pool installs its handler in it.
    typealias ChannelOpener = (UpstreamAddress) -> EventLoopFuture<any Channel>

    let eventLoop: any EventLoop
    private let idleLimit: Int
    private let openChannel: ChannelOpener
    private var idle: [UpstreamAddress: [UpstreamConnection]] = [:]

    /// A pool connecting over TCP, giving up on a connection after `connectTimeout`; TLS to the addresses that ask
    /// for it, with `tls` (whose trust roots verify the instance's certificate, for its host name or IP address).
    convenience init(eventLoop: any EventLoop, idleLimit: Int, connectTimeout: TimeAmount, tls: NIOSSLContext) {
        self.init(eventLoop: eventLoop, idleLimit: idleLimit) { address in
            ClientBootstrap(group: eventLoop)
                .connectTimeout(connectTimeout)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        guard address.tls else { return }
                        // An IP address is no server name: NIOSSL then checks the certificate's IP entries against
                        // the address connected to.
                        let isAddress = (try? SocketAddress(ipAddress: address.host, port: 0)) != nil
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tls, serverHostname: isAddress ? nil : address.host))
                    }
                }
                .connect(host: address.host, port: address.port)
        }
    }

    /// A pool whose connections `openChannel` opens: the seam where tests hand it channels that live in memory
    /// (`EmbeddedChannel`), since a `ClientBootstrap` cannot run on an embedded event loop.
    init(eventLoop: any EventLoop, idleLimit: Int, openChannel: @escaping ChannelOpener) {
        self.eventLoop = eventLoop
        self.idleLimit = idleLimit
        self.openChannel = openChannel
    }

    /// An idle connection to `address`, if one is pooled.
    func idleConnection(to address: UpstreamAddress) -> UpstreamConnection? {
        eventLoop.preconditionInEventLoop()
        // Through the table's index, changed in place: `idle[address]?` and `[address, default:]` allocate per call.
        guard let index = idle.index(forKey: address) else { return nil }
        while let connection = idle.values[index].popLast() {
            if connection.isOpen {
                connection.isReused = true
                return connection
            }
        }
        return nil
    }

    /// A new connection to `address`, bound to this loop, where it is used.
    func connect(_ address: UpstreamAddress) -> EventLoopFuture<NIOLoopBound<UpstreamConnection>> {
        let pool = NIOLoopBound(self, eventLoop: eventLoop)
        let loop = eventLoop
        return openChannel(address)
            .flatMapThrowing { channel in
                let handler = UpstreamHandler(pool: pool.value)
                let connection = UpstreamConnection(channel: channel, address: address, handler: handler)
                handler.connection = connection
                try channel.pipeline.syncOperations.addHandler(handler)
                return NIOLoopBound(connection, eventLoop: loop)
            }
    }

    /// Puts a connection whose exchange ended cleanly (and which the instance keeps open) back for the next one,
    /// or closes it when the pool is full.
    func release(_ connection: UpstreamConnection) {
        eventLoop.preconditionInEventLoop()
        connection.handler.finish()
        let index = idle.index(forKey: connection.address)
        guard connection.isOpen, (index.map { idle.values[$0].count } ?? 0) < idleLimit else {
            connection.channel.close(promise: nil)
            return
        }
        if let index {
            idle.values[index].append(connection)
        } else {
            idle[connection.address] = [connection]
        }
    }

    /// Closes every idle connection (at shutdown).
    func closeAll() {
        let connections = idle.values.flatMap { $0 }
        idle = [:]
        for connection in connections { connection.channel.close(promise: nil) }
    }

    /// Forgets a connection that closed.
    func remove(_ connection: UpstreamConnection) {
        idle[connection.address]?.removeAll { $0 === connection }
    }
}

/// Reads an instance's responses off its connection and hands their parts to the exchange using it; holds the
/// instance's bytes back while the caller cannot take them.
final class UpstreamHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer

    private enum State {
        /// In the pool, or between exchanges: the instance has nothing to say.
        case idle
        case head(toHEAD: Bool, upgrading: Bool)
        case body(BodyFramer, dechunking: Bool, keepAlive: Bool)
        /// After a `101`: every byte belongs to the upgraded protocol, and the connection is never pooled again.
        case tunnel
    }

    private unowned let pool: UpstreamPool
    /// Set once, right after the channel connects.
    weak var connection: UpstreamConnection?
    private weak var receiver: (any UpstreamReceiver)?
    private var state = State.idle
    private var pending: ByteBuffer?
    /// Where the search for the end of the head resumes.
    private var scanned = 0
    /// The array the last response head's fields were found into, for the next head (see
    /// ``HeaderFields/takeFieldStorage()``).
    private var spareFields: [HeaderFields.Field] = []
    private var holding = false
    private var readWaiting = false
    private var context: ChannelHandlerContext?

    init(pool: UpstreamPool) {
        self.pool = pool
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func begin(for receiver: any UpstreamReceiver, toHEAD: Bool, upgrading: Bool) {
        self.receiver = receiver
        state = .head(toHEAD: toHEAD, upgrading: upgrading)
        scanned = 0
    }

    /// The exchange is over: the connection waits in the pool, reading again.
    func finish() {
        receiver = nil
        state = .idle
        holdReading(false)
    }

    func holdReading(_ hold: Bool) {
        holding = hold
        if !hold, readWaiting, let context {
            readWaiting = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        if holding {
            readWaiting = true
        } else {
            context.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if pending == nil {
            pending = bytes
        } else {
            pending!.writeBuffer(&bytes)
        }
        process(context: context)
    }

    private func process(context: ChannelHandlerContext) {
        while var buffer = pending, buffer.readableBytes > 0 {
            switch state {
            case .idle:
                // Bytes no exchange asked for: the connection is out of step and cannot be trusted.
                pending = nil
                fail(HTTPParseError.bad("the instance sent bytes outside any exchange"), context: context)
                return
            case .tunnel:
                pending = nil
                receiver?.upstreamTunnelBytes(buffer)
                return
            case .head(let toHEAD, let upgrading):
                guard let end = HTTPHeadParser.headEnd(in: buffer, searchingFrom: scanned) else {
                    scanned = max(buffer.readableBytes - 3, 0)
                    if buffer.readableBytes > HTTPHeadParser.maximumHeadSize {
                        pending = nil
                        fail(HTTPParseError.bad("the response head is larger than 64 KiB"), context: context)
                    }
                    return
                }
                scanned = 0
                guard end <= HTTPHeadParser.maximumHeadSize else {
                    pending = nil
                    fail(HTTPParseError.bad("the response head is larger than 64 KiB"), context: context)
                    return
                }
                let bytes = buffer.readSlice(length: end)!
                pending = buffer.readableBytes > 0 ? buffer : nil
                var head: ResponseHead
                let framing: BodyFraming
                do {
                    head = try HTTPHeadParser.response(bytes, reusing: &spareFields)
                    framing = try HTTPHeadParser.framing(of: head, toHEAD: toHEAD)
                } catch {
                    pending = nil
                    fail(error, context: context)
                    return
                }
                if head.status == 101, upgrading {
                    state = .tunnel
                    receiver?.upstreamSwitchedProtocols(head)
                    // What came after the head is already the upgraded protocol's.
                    continue
                }
                if head.status < 200 {
                    guard head.status != 101 else {
                        pending = nil
                        fail(HTTPParseError.bad("the instance switched protocols unasked"), context: context)
                        return
                    }
                    // Interim answers (100 Continue, 103 Early Hints) are between the instance and the gateway.
                    spareFields = head.fields.takeFieldStorage()
                    continue
                }
                let dechunking = receiver?.upstreamResponded(head, framing: framing) ?? false
                let keepAlive = head.keepAlive
                let announcesBody =
                    head.fields.known.contains(.contentLength) || head.fields.known.contains(.transferEncoding)
                // The head is passed on: its fields' array serves the next one.
                spareFields = head.fields.takeFieldStorage()
                guard case .head = state else { return }
                if framing == .none {
                    // A head announcing a body that is not sent (HEAD, 204, 304): stray bytes may still follow in
                    // a later read, and would be taken for the next exchange's answer. The connection is not reused.
                    finishResponse(keepAlive: keepAlive && !announcesBody)
                    return
                }
                let framer = BodyFramer(framing)
                if framer.isComplete {
                    // `Content-Length: 0`: the response is whole with its head. Waiting for body bytes that never
                    // come would hold the exchange (and the caller's next request) until the instance closes.
                    finishResponse(keepAlive: keepAlive)
                    return
                }
                state = .body(framer, dechunking: dechunking, keepAlive: keepAlive)
            case .body(var framer, let dechunking, let keepAlive):
                let slice: ByteBuffer?
                do {
                    slice = try dechunking ? framer.dechunking(from: &buffer) : framer.next(from: &buffer)
                } catch {
                    pending = nil
                    fail(error, context: context)
                    return
                }
                pending = buffer
                state = .body(framer, dechunking: dechunking, keepAlive: keepAlive)
                if let slice { receiver?.upstreamBody(slice) }
                guard case .body = state else { return }
                if framer.isComplete {
                    finishResponse(keepAlive: keepAlive)
                    return
                }
                if slice == nil { return }
            }
        }
    }

    /// Ends the response. Processing stops after it: the exchange may have handed the connection on already.
    private func finishResponse(keepAlive: Bool) {
        let leftover = pending?.readableBytes ?? 0
        pending = nil
        let receiver = self.receiver
        self.receiver = nil
        state = .idle
        receiver?.upstreamEnded(reusable: keepAlive && leftover == 0)
    }

    private func fail(_ error: any Error, context: ChannelHandlerContext) {
        let receiver = self.receiver
        self.receiver = nil
        state = .idle
        receiver?.upstreamFailed(error)
        context.close(promise: nil)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        receiver?.upstreamReadComplete()
        context.fireChannelReadComplete()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        receiver?.upstreamWritabilityChanged(isWritable: context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let connection {
            connection.isOpen = false
            pool.remove(connection)
        }
        let receiver = self.receiver
        self.receiver = nil
        switch state {
        case .tunnel:
            state = .idle
            receiver?.upstreamTunnelClosed()
        case .body(let framer, _, _) where framer.endsAtClose:
            state = .idle
            receiver?.upstreamEnded(reusable: false)
        case .idle:
            break
        default:
            state = .idle
            receiver?.upstreamFailed(ChannelError.eof)
        }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(error, context: context)
    }
}

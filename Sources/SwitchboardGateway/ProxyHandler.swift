import Logging
import NIOCore
import NIOExtras
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore
import Tracing

/// Proxies one caller connection's requests, one exchange at a time, working on the bytes as they arrive.
///
/// Only the message heads are parsed (strictly: see ``HTTPHeadParser``) and rewritten; bodies go through as they
/// came, their ends found by ``BodyFramer``. That is most of what makes a proxy fast: NIO's HTTP codec turned
/// every header into strings twice per side, four times the work of passing bytes on.
///
/// An exchange: the request head picks a route and an instance; the head goes to a pooled or new connection to the
/// instance, followed by the body as it comes, with backpressure both ways (reading from one side stops while the
/// other cannot take more). A connection that cannot be made is retried on another instance; a failure before the
/// response starts becomes a 502/503/504 with a JSON body naming the service and the reason; a failure after it
/// closes the caller's connection, since half a response cannot be taken back. Pipelined requests wait in the
/// caller's buffer (reading stops when it holds 64 KiB) and are answered in order.
final class ProxyHandler: ChannelDuplexHandler, UpstreamReceiver {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum State: Equatable {
        /// Between exchanges: the next bytes are a request head.
        case idle
        /// Waiting for a connection to an instance; the body waits in the caller's buffer.
        case connecting
        /// The request is going to the instance; its response has not started.
        case forwarding
        /// The response is streaming back (the request's body may still be going up).
        case responding
        /// The connection ends once what was written is out; nothing more is read.
        case closing
        /// Upgraded (WebSocket): bytes pass both ways untouched through ``tunnel`` (see `ProxyHandler+Upgrade.swift`).
        case tunnel
    }

    let router: GatewayRouter
    let pool: UpstreamPool
    let configuration: GatewayConfiguration
    let logger: Logger
    let accessLog: AccessLog?
    let aggregator: Aggregator?
    let metrics: LoopMetrics?
    /// The process's tracer; nil when it traces nothing (see `ProxyHandler+Tracing.swift`).
    let tracer: (any Tracer)?
    var state = State.idle
    var context: ChannelHandlerContext?
    var random = FastRandom()
    /// The exchange under way, from its head to its answer; nil between exchanges.
    var exchange: Exchange?
    /// The instance's connection of an upgraded (WebSocket) connection, once it answered `101`.
    var tunnel: UpstreamConnection?

    /// The caller's bytes not yet taken: the rest of a body, or the next (pipelined) requests.
    var inbound: ByteBuffer?
    /// Where the search for the end of the next head resumes.
    var scanned = 0
    var readWaiting = false
    var unflushed = false
    /// The buffers this connection's heads are written into (to instances, to the caller), reused once the
    /// channel let go of them (see ``GatewayHeaders/reuse(_:capacity:)``).
    var upstreamHeadBuffer = ByteBuffer()
    var responseHeadBuffer = ByteBuffer()
    /// Whether ``responseHeadBuffer`` holds an instance's response head not written yet (see
    /// ``writeHeldResponseHead()``).
    var responseHeadHeld = false
    /// A first body part up to this size is written with the response head, copied after it.
    static let coalescedBodyLimit = 4 * 1024
    /// The array the last request head's fields were found into, for the next head (see
    /// ``HeaderFields/takeFieldStorage()``).
    var spareFields: [HeaderFields.Field] = []
    /// The caller's address, as `X-Forwarded-For` gives it.
    var clientAddress: String?
    /// Whether the caller's connection is TLS (the listener terminates it): `X-Forwarded-Proto: https`.
    let callerUsesTLS: Bool
    /// When the caller or the instance last sent something, for the idle check.
    var lastActivity = NIODeadline.uptimeNanoseconds(0)
    var idleCheck: RepeatedTask?
    /// Whether ``processInbound()`` is running: a nested call (an exchange ending inside it) leaves the work to it.
    var processing = false

    /// Whether the gateway is stopping: every answer from now on ends its connection.
    var quiescing = false
    /// How often the connection's timer looks at the deadline (from the routes in force when it was accepted).
    var checkPeriod = TimeAmount.seconds(1)

    /// Since when the connection is ending after its last answer, reading and dropping what still comes.
    var closingSince: NIODeadline?
    /// How long a closing connection waits for its last answer to be taken and the caller to stop sending.
    static let lingerLimit = TimeAmount.seconds(2)

    /// Request bodies up to this size are kept until the response starts, so a failed instance can be replaced.
    static let replayLimit = 64 * 1024
    /// Reading from the caller stops while this much is buffered and not yet taken.
    static let inboundLimit = 64 * 1024
    /// A request head read into a buffer larger than this is copied out rather than kept as a slice of it.
    static let largeReceiveBuffer = 8 * 1024

    init(
        router: GatewayRouter, pool: UpstreamPool, configuration: GatewayConfiguration, accessLog: AccessLog?,
        aggregator: Aggregator? = nil, metrics: LoopMetrics? = nil, tracer: (any Tracer)? = nil,
        callerUsesTLS: Bool = false, logger: Logger
    ) {
        self.callerUsesTLS = callerUsesTLS
        self.router = router
        self.tracer = tracer
        self.metrics = metrics
        self.aggregator = aggregator
        self.accessLog = accessLog
        self.pool = pool
        self.configuration = configuration
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        clientAddress = context.channel.remoteAddress?.ipAddress
        lastActivity = .now()
        // One timer per connection, not one per request: it closes a connection silent past the idle timeout, and
        // answers 504 for an instance past its time to answer.
        let idleTimeout = configuration.clientIdleTimeout.timeAmount
        let webSocketIdleTimeout = configuration.webSocketIdleTimeout.timeAmount
        let shortest = min(
            configuration.responseTimeout, router.routes?.shortestTimeout ?? configuration.responseTimeout)
        let period = min(idleTimeout, shortest.timeAmount, webSocketIdleTimeout).nanoseconds / 4
        checkPeriod = .nanoseconds(max(period, 5_000_000))
        let proxy = NIOLoopBound(self, eventLoop: context.eventLoop)
        idleCheck = context.eventLoop.scheduleRepeatedTask(
            initialDelay: .nanoseconds(max(period, 5_000_000)), delay: .nanoseconds(max(period, 5_000_000))
        ) { task in
            let handler = proxy.value
            guard let context = handler.context else {
                task.cancel()
                return
            }
            let now = NIODeadline.now()
            if handler.state == .closing {
                // The answer is out (or the caller does not read it): what the caller still sends is read and
                // dropped for a short while, so the kernel does not reset the connection before the answer is read.
                if now - (handler.closingSince ?? now) >= Self.lingerLimit || handler.closingSince == nil {
                    task.cancel()
                    context.close(promise: nil)
                }
                return
            }
            if handler.state == .tunnel {
                if now - handler.lastActivity >= webSocketIdleTimeout {
                    task.cancel()
                    handler.closeTunnel()
                }
                return
            }
            if let deadline = handler.exchange?.responseDeadline, handler.state == .forwarding, now >= deadline {
                handler.responseTimedOut()
            } else if now - handler.lastActivity >= idleTimeout {
                task.cancel()
                handler.state = .closing
                handler.abandonUpstream()
                context.close(promise: nil)
            }
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        idleCheck?.cancel()
        idleCheck = nil
        state = .closing
        abandonUpstream()
        // An exchange the caller left before its answer: its spans end here, unanswered.
        if exchange?.span != nil, let unfinished = exchange.take() { endSpans(of: unfinished) }
    }

    // MARK: The caller's side

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        guard state != .closing else { return }
        lastActivity = .now()
        if inbound == nil || inbound!.readableBytes == 0 {
            inbound = bytes
        } else {
            if inbound!.readerIndex > Self.inboundLimit { inbound!.discardReadBytes() }
            inbound!.writeBuffer(&bytes)
        }
        processInbound()
    }

    func read(context: ChannelHandlerContext) {
        if wantsCallerBytes {
            context.read()
        } else {
            readWaiting = true
        }
    }

    /// Whether more of the caller's bytes can be taken now.
    var wantsCallerBytes: Bool {
        // While closing, what comes is read and dropped.
        if state == .closing { return closingSince != nil }
        if state == .tunnel { return tunnel?.channel.isWritable ?? false }
        if let inbound, inbound.readableBytes >= Self.inboundLimit { return false }
        if let upstream = exchange?.upstream, !upstream.channel.isWritable { return false }
        return true
    }

    func resumeCallerIfWanted() {
        guard readWaiting, wantsCallerBytes, let context else { return }
        readWaiting = false
        context.read()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is ChannelShouldQuiesceEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        // The gateway is stopping: an idle connection closes now, a busy one after its exchange.
        quiescing = true
        exchange?.keepAlive = false
        if state == .tunnel {
            // An upgraded connection has no exchange to finish: it would hold the shutdown to its grace.
            closeTunnel()
            return
        }
        if state == .idle, (inbound?.readableBytes ?? 0) == 0 {
            state = .closing
            context.close(promise: nil)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // The caller cannot take more of the response: stop reading it from the instance until it can.
        let upstream = exchange?.upstream ?? tunnel
        upstream?.holdReading(!context.channel.isWritable)
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The caller left: the instance's connection may be mid-exchange, so it cannot be reused.
        state = .closing
        abandonUpstream()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        state = .closing
        abandonUpstream()
        context.close(promise: nil)
    }

    /// Starts the exchanges whose heads are in the buffer (several when answers need no instance), or sends the
    /// current exchange's body on.
    func processInbound() {
        guard !processing else { return }
        processing = true
        defer { processing = false }
        while true {
            switch state {
            case .idle:
                // Empty lines before a request are ignored (RFC 9112 section 2.2): some callers send one after a body.
                while let first = inbound?.readableBytesView.first, first == 0x0D || first == 0x0A {
                    inbound!.moveReaderIndex(forwardBy: 1)
                }
                guard let buffer = inbound, buffer.readableBytes > 0 else {
                    resumeCallerIfWanted()
                    return
                }
                guard let end = HTTPHeadParser.headEnd(in: buffer, searchingFrom: scanned) else {
                    scanned = max(buffer.readableBytes - 3, 0)
                    if buffer.readableBytes >= HTTPHeadParser.maximumHeadSize {
                        refuse(HTTPParseError(status: 431, message: "the request head is larger than 64 KiB"))
                    }
                    resumeCallerIfWanted()
                    return
                }
                scanned = 0
                guard end <= HTTPHeadParser.maximumHeadSize else {
                    refuse(HTTPParseError(status: 431, message: "the request head is larger than 64 KiB"))
                    return
                }
                var bytes = inbound!.readSlice(length: end)!
                // An empty buffer is let go: the channel reuses its receive buffer only when nothing else holds it.
                if inbound!.readableBytes == 0 { inbound = nil }
                // The head is kept for its whole exchange (a stream may last hours): a slice of a receive buffer
                // grown large by an upload would keep all of it, so such a head gets a buffer of its own.
                if bytes.storageCapacity > Self.largeReceiveBuffer {
                    bytes = ByteBuffer(bytes: bytes.readableBytesView)
                }
                do {
                    begin(try HTTPHeadParser.request(bytes, reusing: &spareFields))
                } catch {
                    refuse(error)
                    return
                }
            case .connecting:
                resumeCallerIfWanted()
                return
            case .forwarding, .responding:
                forwardRequestBody()
                resumeCallerIfWanted()
                return
            case .closing:
                inbound = nil
                return
            case .tunnel:
                forwardToTunnel()
                resumeCallerIfWanted()
                return
            }
        }
    }

    /// A head that cannot be read: its framing cannot be trusted, so nothing after it is either.
    func refuse(_ error: HTTPParseError) {
        exchange = Exchange(refusingWith: RequestID(from: HeaderFields(bytes: ByteBuffer()), random: &random))
        respondWithError(
            HTTPResponseStatus(statusCode: error.status), service: nil, reason: error.message, closing: true)
    }

    func begin(_ head: RequestHead) {
        exchange = Exchange(
            request: head, id: RequestID(from: head.fields, random: &random),
            keepAlive: head.keepAlive && !quiescing)
        guard head.method.utf8.allSatisfy({ !($0 >= 0x61 && $0 <= 0x7A) }) else {
            respondWithError(.badRequest, service: nil, reason: "methods are upper case: '\(head.method)'")
            return
        }
        guard let path = RequestPath.normalize(head.target) else {
            respondWithError(
                .badRequest, service: nil,
                reason: "the path has an escaped '/' or '\\', a control character, or '..' above the root")
            return
        }
        var head = head
        head.target = path
        exchange!.request = head
        if head.method == "TRACE" || head.method == "CONNECT" {
            respondWithError(.methodNotAllowed, service: nil, reason: "\(head.method) is not proxied")
            return
        }
        switch UpgradeRequest(head) {
        case .none:
            break
        case .webSocket:
            exchange!.webSocket = true
        case .refused(let reason):
            respondWithError(head.method == "GET" ? .notImplemented : .badRequest, service: nil, reason: reason)
            return
        }
        guard let match = router.route(head, random: &random) else {
            respondWithError(
                .notFound, service: nil,
                reason: router.usesRouteFile
                    ? "no route takes \(head.method) \(head.target)"
                    : "no route for \(head.target); services are reached at /<service>/..., tagged '\(configuration.publicTag)'"
            )
            return
        }
        exchange!.match = match
        if let sticky = match.route?.sticky { keepSticky(sticky, head) }
        if let tracer {
            startServerSpan(head, match: match, tracer: tracer)
        } else {
            exchange!.trace = TraceParent(from: head.fields, random: &random)
        }
        state = .connecting
        admit(head, match: match)
    }

    // MARK: Ending exchanges

    func respondWithError(
        _ status: HTTPResponseStatus, service: ServiceName?, reason: String, closing forced: Bool = false,
        headers: [(String, String)] = []
    ) {
        guard let context, exchange != nil else { return }
        exchange!.responseDeadline = nil
        // A request body that has fully arrived is skipped, and the connection kept; one still coming is not read
        // any further: the connection ends after the answer.
        if !forced, exchange!.upstream == nil { skipArrivedRequestBody() }
        let closing = forced || !exchange!.keepAlive || !exchange!.requestBody.isComplete
        let requestID = exchange!.requestID
        let body = GatewayHeaders.errorBody(status: status, service: service, reason: reason, requestID: requestID)
        exchange!.responseStatus = Int(status.code)
        logger.debug(
            "request not proxied",
            metadata: ["status": "\(status.code)", "reason": "\(reason)", "request-id": "\(requestID)"])
        let response = GatewayHeaders.response(
            status: status, body: body, requestID: requestID, callerMinorVersion: exchange!.request?.minorVersion ?? 1,
            closing: closing, headers: headers, extras: exchange!.downstreamExtras,
            omitBody: exchange!.request?.isHEAD ?? false, allocator: context.channel.allocator)
        context.write(wrapOutboundOut(response), promise: nil)
        finishExchange(closing: closing)
    }

    /// Logs the exchange, drops it and flushes its answer; the caller's connection closes once that is written, or
    /// the next request (perhaps already buffered) is read.
    func finishExchange(closing: Bool) {
        guard let context else { return }
        writeHeldResponseHead()
        finishPick()
        if var finished = exchange.take() {
            logExchange(finished)
            endSpans(of: finished)
            if let storage = finished.request?.fields.takeFieldStorage() { spareFields = storage }
        }
        unflushed = false
        if closing {
            state = .closing
            closingSince = .now()
            inbound = nil
            // Once the answer is written, only the sending side closes: the caller may still be sending a body,
            // and closing outright with its bytes unread would reset the connection under the answer. The timer
            // closes the rest after the linger limit, or the caller's own close does.
            let promise = context.eventLoop.makePromise(of: Void.self)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            promise.futureResult.whenComplete { result in
                let context = bound.value
                guard case .success = result else {
                    context.close(promise: nil)
                    return
                }
                let closed = context.eventLoop.makePromise(of: Void.self)
                closed.futureResult.whenFailure { _ in bound.value.close(promise: nil) }
                context.close(mode: .output, promise: closed)
            }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer()), promise: promise)
            if readWaiting {
                readWaiting = false
                context.read()
            }
        } else {
            state = .idle
            context.flush()
            processInbound()
        }
    }

    /// Drops what has arrived of a request body the gateway answers itself; the exchange's `requestBody` then says
    /// whether all of it came (the connection can serve the next request) or not (it must close after the answer).
    func skipArrivedRequestBody() {
        guard exchange != nil, var buffer = inbound else { return }
        while (try? exchange!.requestBody.next(from: &buffer)) ?? nil != nil {}
        inbound = buffer.readableBytes > 0 ? buffer : nil
    }

    /// Lets go of the instance's connection mid-exchange (the caller left, or the instance is too late): it cannot
    /// serve another exchange.
    func abandonUpstream() {
        releaseTunnel()
        exchange?.responseDeadline = nil
        finishPick()
        guard let upstream = exchange?.upstream else { return }
        exchange!.upstream = nil
        upstream.handler.finish()
        upstream.channel.close(promise: nil)
    }
}

extension Duration {
    /// The same length as a SwiftNIO `TimeAmount`.
    var timeAmount: TimeAmount { .nanoseconds(nanoseconds) }
}

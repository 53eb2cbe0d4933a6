import Logging
import NIOCore
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore

/// Proxies one caller connection's requests, one exchange at a time (NIO's pipelining handler holds the next
/// request until the current response has been written).
///
/// An exchange: the request head picks a route and an instance; the head and whatever body arrived meanwhile wait
/// (reading from the caller paused) until a pooled or new connection to the instance is ready, then everything
/// streams through in both directions with backpressure: reading from one side stops while the other cannot take
/// more. A connection that cannot be made is retried on another instance; a failure before the response starts
/// becomes a 502/503/504 with a JSON body naming the service and the reason; a failure after it closes the caller's
/// connection, since half a response cannot be taken back.
///
/// Every exchange's bookkeeping is finished before its last write: writing the end of a response lets NIO hand
/// over the next pipelined request at once, inside that write.
final class ProxyHandler: ChannelDuplexHandler, UpstreamReceiver {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = Never
    typealias OutboundOut = HTTPServerResponsePart

    private enum State: Equatable {
        /// Between exchanges.
        case idle
        /// Waiting for a connection to an instance; request parts are held.
        case connecting
        /// The request is going to the instance; its response has not started.
        case forwarding
        /// The response is streaming back.
        case responding
        /// The answer went out before the request ended (a bodyless request's end is still coming): its parts are
        /// dropped until the end, then the next request is read.
        case discarding
        /// The connection ends once the last response is written; nothing more is read.
        case closing
    }

    private let router: GatewayRouter
    private let pool: UpstreamPool
    private let configuration: GatewayConfiguration
    private let logger: Logger
    private var state = State.idle
    private var context: ChannelHandlerContext?
    private var random = FastRandom()

    // The exchange under way.
    private var request: HTTPRequestHead?
    private var target: GatewayRouter.Target?
    private var held: [HTTPServerRequestPart] = []
    private var heldBytes = 0
    /// Whether every part so far is still held, so the request can go to another instance.
    private var replayable = true
    private var requestEnded = false
    private var expectsContinue = false
    private var tried: Set<InstanceID> = []
    private var instance: Instance?
    private var knownInstances = 0
    private var upstream: UpstreamConnection?
    private var upstreamKeepsAlive = true
    private var responseTimeout: Scheduled<Void>?
    private var keepAlive = true
    private var requestID = ""
    /// Whether reading from the caller is switched off (toggling it costs system calls: only when needed).
    private var callerPaused = false

    /// Request bodies up to this size are kept until the response starts, so a failed instance can be replaced.
    private static let replayLimit = 64 * 1024

    init(router: GatewayRouter, pool: UpstreamPool, configuration: GatewayConfiguration, logger: Logger) {
        self.router = router
        self.pool = pool
        self.configuration = configuration
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        state = .closing
        abandonUpstream()
    }

    // MARK: The caller's side

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let part = unwrapInboundIn(data)
        switch (state, part) {
        case (.idle, .head(let head)):
            begin(head, context: context)
        case (.connecting, _):
            hold(part)
        case (.forwarding, .body), (.forwarding, .end), (.responding, .body), (.responding, .end):
            if case .end = part { requestEnded = true }
            send(part)
        case (.discarding, .end):
            state = .idle
        case (.discarding, _), (.closing, _):
            break
        default:
            // A new head before the exchange ended cannot happen behind NIO's pipelining handler.
            state = .closing
            context.close(promise: nil)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // The caller cannot take more of the response: stop reading it from the instance until it can.
        if let upstream, state == .responding {
            upstream.channel.setOption(.autoRead, value: context.channel.isWritable).whenComplete { _ in }
        }
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

    private func begin(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        request = head
        keepAlive = head.isKeepAlive
        held = []
        heldBytes = 0
        replayable = true
        requestEnded = false
        tried = []
        instance = nil
        requestID = GatewayHeaders.requestID(from: head.headers, random: &random)
        expectsContinue = head.headers[canonicalForm: "expect"].contains { $0.lowercased() == "100-continue" }
        if head.method == .TRACE || head.method == .CONNECT {
            respondWithError(.methodNotAllowed, service: nil, reason: "\(head.method) is not proxied")
            return
        }
        guard let target = router.route(head) else {
            respondWithError(
                .notFound, service: nil,
                reason:
                    "no route for \(head.uri); services are reached at /<service>/..., tagged '\(configuration.publicTag)'"
            )
            return
        }
        self.target = target
        state = .connecting
        connect()
        // Usually the instances are cached and a pooled connection is idle, so the request is on its way already;
        // else hold the caller until an instance can take it (what arrives meanwhile waits in `held`).
        if state == .connecting { pauseCaller() }
    }

    private func hold(_ part: HTTPServerRequestPart) {
        if case .body(let buffer) = part { heldBytes += buffer.readableBytes }
        if case .end = part { requestEnded = true }
        held.append(part)
    }

    private func pauseCaller() {
        guard !callerPaused else { return }
        callerPaused = true
        context?.channel.setOption(.autoRead, value: false).whenComplete { _ in }
    }

    private func resumeCaller() {
        guard callerPaused, let context else { return }
        callerPaused = false
        context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
        context.read()
    }

    // MARK: Choosing an instance and connecting

    private func connect() {
        guard let target, let loop = context?.eventLoop else { return }
        let proxy = NIOLoopBound(self, eventLoop: loop)
        router.snapshot(of: target.service, on: loop).whenComplete { result in
            let handler = proxy.value
            guard handler.state == .connecting else { return }
            let snapshot: DiscoverySnapshot
            switch result {
            case .success(let known):
                snapshot = known
            case .failure(is GatewayRouter.NoPublicInstance):
                handler.respondWithError(.serviceUnavailable, service: target.service, reason: "no healthy instance")
                return
            case .failure(let error):
                handler.respondWithError(
                    .serviceUnavailable, service: target.service, reason: "the registry could not be asked: \(error)")
                return
            }
            guard !snapshot.instances.isEmpty,
                let instance = handler.router.selector.pick(target.service, from: snapshot, avoiding: handler.tried)
            else {
                handler.respondWithError(.serviceUnavailable, service: target.service, reason: "no healthy instance")
                return
            }
            handler.tried.insert(instance.id)
            handler.instance = instance
            handler.knownInstances = snapshot.instances.count
            let address = UpstreamAddress(host: instance.definition.address.rawValue, port: instance.definition.port)
            handler.pool.acquire(address).whenComplete { result in
                let handler = proxy.value
                guard handler.state == .connecting else {
                    if case .success(let connection) = result { connection.value.channel.close(promise: nil) }
                    return
                }
                switch result {
                case .success(let connection):
                    handler.attach(connection.value)
                case .failure(let error):
                    handler.router.selector.record(false, on: instance, knownInstances: handler.knownInstances)
                    handler.retryOrFail(reason: "\(instance.id): \(TransportFailure(error))")
                }
            }
        }
    }

    /// Another instance when attempts remain and the request can still be sent whole; else the caller gets a 502.
    private func retryOrFail(reason: String) {
        guard let target else { return }
        if replayable, tried.count <= configuration.connectRetries {
            pauseCaller()
            state = .connecting
            connect()
        } else {
            respondWithError(.badGateway, service: target.service, reason: reason)
        }
    }

    private func attach(_ connection: UpstreamConnection) {
        guard let request, let target, let context else { return }
        upstream = connection
        upstreamKeepsAlive = true
        connection.receiver = self
        state = .forwarding
        let head = GatewayHeaders.upstreamRequest(
            request, path: target.path, clientAddress: context.channel.remoteAddress?.ipAddress,
            requestID: requestID)
        connection.channel.write(HTTPClientRequestPart.head(head), promise: nil)
        for part in held { writeUpstream(part, flush: false) }
        connection.channel.flush()
        if !replayable { held = [] }
        if expectsContinue, !requestEnded {
            // The gateway took the request on the caller's `Expect: 100-continue` (instances never see it).
            expectsContinue = false
            context.writeAndFlush(
                wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: .continue))), promise: nil)
        }
        resumeCaller()
        let loop = context.eventLoop
        let proxy = NIOLoopBound(self, eventLoop: loop)
        responseTimeout = loop.scheduleTask(in: configuration.responseTimeout.timeAmount) {
            let handler = proxy.value
            guard handler.state == .forwarding else { return }
            if let instance = handler.instance {
                handler.router.selector.record(false, on: instance, knownInstances: handler.knownInstances)
            }
            handler.abandonUpstream()
            handler.respondWithError(
                .gatewayTimeout, service: target.service,
                reason:
                    "\(handler.instance?.id.rawValue ?? "the instance") did not answer within \(handler.configuration.responseTimeout)"
            )
        }
    }

    private func send(_ part: HTTPServerRequestPart) {
        if replayable {
            if case .body(let buffer) = part { heldBytes += buffer.readableBytes }
            if heldBytes > Self.replayLimit {
                replayable = false
                held = []
            } else {
                held.append(part)
            }
        }
        writeUpstream(part, flush: true)
    }

    private func writeUpstream(_ part: HTTPServerRequestPart, flush: Bool) {
        guard let upstream else { return }
        let outgoing: HTTPClientRequestPart
        switch part {
        case .head: return
        case .body(let buffer): outgoing = .body(.byteBuffer(buffer))
        case .end(let trailers): outgoing = .end(trailers)
        }
        if flush {
            upstream.channel.writeAndFlush(outgoing, promise: nil)
            // The instance cannot take the request body as fast as it comes: stop reading from the caller.
            if !upstream.channel.isWritable { pauseCaller() }
        } else {
            upstream.channel.write(outgoing, promise: nil)
        }
    }

    // MARK: The instance's side

    func upstreamReceived(_ part: HTTPClientResponsePart) {
        guard let context else { return }
        switch (state, part) {
        case (.forwarding, .head(let head)) where head.status.code >= 100 && head.status.code < 200:
            // Interim answers (100 Continue, 103 Early Hints) are the instance's business with the gateway.
            break
        case (.forwarding, .head(let head)):
            responseTimeout?.cancel()
            responseTimeout = nil
            state = .responding
            upstreamKeepsAlive = head.isKeepAlive
            if let instance {
                router.selector.record(head.status.code < 500, on: instance, knownInstances: knownInstances)
            }
            held = []
            replayable = false
            // An HTTP/1.0 caller without a length can only learn where the body ends from the connection closing.
            if request?.version == .http1_0, !head.headers.contains(name: "content-length") { keepAlive = false }
            let response = GatewayHeaders.downstreamResponse(
                head, for: request, keepAlive: keepAlive, requestID: requestID)
            context.write(wrapOutboundOut(.head(response)), promise: nil)
        case (.responding, .body(let buffer)):
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
            if !context.channel.isWritable, let upstream {
                upstream.channel.setOption(.autoRead, value: false).whenComplete { _ in }
            }
        case (.responding, .end(let trailers)):
            let connection = upstream
            upstream = nil
            connection?.receiver = nil
            if let connection {
                // Reuse only a connection whose exchange ended cleanly on both sides and which the instance keeps.
                if requestEnded, upstreamKeepsAlive {
                    pool.release(connection)
                } else {
                    connection.channel.close(promise: nil)
                }
            }
            // A response that ended before its request did leaves body bytes unread: the connection ends with it.
            finishExchange(writing: .end(trailers), closing: !keepAlive || !requestEnded)
        default:
            break
        }
    }

    func upstreamFailed(_ error: any Error) {
        let connection = upstream
        upstream = nil
        connection?.channel.close(promise: nil)
        switch state {
        case .forwarding:
            responseTimeout?.cancel()
            responseTimeout = nil
            let reason = "\(instance?.id.rawValue ?? "the instance") failed: \(TransportFailure(error))"
            let idempotent = request.map(GatewayHeaders.isIdempotent) ?? false
            if connection?.isReused == true, replayable, idempotent {
                // A kept-alive connection the instance closed while it waited: nothing against the instance, and
                // the same instance may take the request on a new connection.
                if let instance { tried.remove(instance.id) }
                retryOrFail(reason: reason)
                return
            }
            if let instance { router.selector.record(false, on: instance, knownInstances: knownInstances) }
            // Nothing reached the caller yet: another instance may take the request if it may be sent twice and
            // can still be sent whole.
            if replayable, idempotent {
                retryOrFail(reason: reason)
            } else if let target {
                respondWithError(.badGateway, service: target.service, reason: reason)
            }
        case .responding:
            // Half a response is out: the caller must see the connection end, not a truncated success.
            state = .closing
            context?.close(promise: nil)
        default:
            break
        }
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        guard state == .forwarding || state == .responding else { return }
        if isWritable { resumeCaller() } else { pauseCaller() }
    }

    // MARK: Ending exchanges

    private func respondWithError(_ status: HTTPResponseStatus, service: ServiceName?, reason: String) {
        responseTimeout?.cancel()
        responseTimeout = nil
        let body = GatewayHeaders.errorBody(status: status, service: service, reason: reason, requestID: requestID)
        // A request whose body is still coming is not read any further: the connection ends after the answer. A
        // request without a body only has its end still to come: that is read, and the connection kept.
        let bodyless = request.map(GatewayHeaders.hasNoBody) ?? true
        let closing = !keepAlive || (!requestEnded && !bodyless)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "X-Request-ID", value: requestID)
        if closing { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: request?.version ?? .http1_1, status: status, headers: headers)
        logger.debug(
            "request not proxied",
            metadata: ["status": "\(status.code)", "reason": "\(reason)", "request-id": "\(requestID)"])
        context?.write(wrapOutboundOut(.head(head)), promise: nil)
        context?.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        finishExchange(writing: .end(nil), closing: closing, awaitingRequestEnd: !requestEnded)
    }

    /// Clears the exchange, then writes its last part; the caller's connection closes once that is written, or
    /// reading resumes for the next request.
    private func finishExchange(writing last: HTTPServerResponsePart, closing: Bool, awaitingRequestEnd: Bool = false) {
        guard let context else { return }
        request = nil
        target = nil
        held = []
        heldBytes = 0
        instance = nil
        upstream = nil
        state = closing ? .closing : awaitingRequestEnd ? .discarding : .idle
        if closing {
            let promise = context.eventLoop.makePromise(of: Void.self)
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            promise.futureResult.whenComplete { _ in bound.value.close(promise: nil) }
            context.writeAndFlush(wrapOutboundOut(last), promise: promise)
        } else {
            resumeCaller()
            // May start the next pipelined exchange at once: nothing of this one is touched after it.
            context.writeAndFlush(wrapOutboundOut(last), promise: nil)
        }
    }

    private func abandonUpstream() {
        responseTimeout?.cancel()
        responseTimeout = nil
        if let upstream {
            upstream.receiver = nil
            upstream.channel.close(promise: nil)
        }
        upstream = nil
    }
}

extension Duration {
    /// The same length as a SwiftNIO `TimeAmount`.
    var timeAmount: TimeAmount {
        let (seconds, attoseconds) = components
        return .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}

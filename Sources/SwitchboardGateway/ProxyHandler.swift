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
final class ProxyHandler: ChannelDuplexHandler, UpstreamReceiver {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundIn = Never
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        /// Between exchanges.
        case idle
        /// Waiting for a connection to an instance; request parts are held.
        case connecting
        /// The request is going to the instance; its response has not started.
        case forwarding
        /// The response is streaming back.
        case responding
        /// The response went out by other means (an error answer); the rest of the request is dropped.
        case discarding
    }

    private let router: GatewayRouter
    private let pool: UpstreamPool
    private let configuration: GatewayConfiguration
    private let logger: Logger
    private var state = State.idle
    private var context: ChannelHandlerContext?

    // The exchange under way.
    private var request: HTTPRequestHead?
    private var target: GatewayRouter.Target?
    private var held: [HTTPServerRequestPart] = []
    private var heldBytes = 0
    /// Whether every held part is still held (nothing sent yet), so the request can go to another instance.
    private var replayable = true
    private var requestEnded = false
    private var tried: Set<InstanceID> = []
    private var instance: Instance?
    private var knownInstances = 0
    private var upstream: UpstreamConnection?
    private var responseTimeout: Scheduled<Void>?
    private var keepAlive = true
    private var requestID = ""

    /// Request bodies up to this size are kept until sent, so a stale pooled connection can be replaced.
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
            requestEnded = true
            finishExchange(context: context)
        case (.discarding, _):
            break
        default:
            // A new head before the exchange ended cannot happen behind NIO's pipelining handler.
            context.close(promise: nil)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        // The caller cannot take more of the response: stop reading it from the instance until it can.
        if let upstream {
            upstream.channel.setOption(.autoRead, value: context.channel.isWritable).whenComplete { _ in }
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The caller left: the instance's connection may be mid-exchange, so it cannot be reused.
        abandonUpstream()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
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
        requestID = GatewayHeaders.requestID(from: head.headers)
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
        // Hold the caller until an instance can take the request: what already arrived waits in `held`.
        context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
        connect(context: context)
    }

    private func hold(_ part: HTTPServerRequestPart) {
        if case .body(let buffer) = part { heldBytes += buffer.readableBytes }
        if case .end = part { requestEnded = true }
        held.append(part)
    }

    // MARK: Choosing an instance and connecting

    private func connect(context: ChannelHandlerContext) {
        guard let target else { return }
        let loop = context.eventLoop
        let proxy = NIOLoopBound(self, eventLoop: loop)
        router.snapshot(of: target.service, on: loop).whenComplete { result in
            let handler = proxy.value
            guard handler.state == .connecting, handler.context != nil else { return }
            guard case .success(let snapshot) = result, !snapshot.instances.isEmpty,
                let instance = handler.router.selector.pick(target.service, from: snapshot, avoiding: handler.tried)
            else {
                let reason: String
                if case .failure(let error) = result {
                    reason = "the registry could not be asked: \(error)"
                } else {
                    reason = "no healthy instance"
                }
                handler.respondWithError(.serviceUnavailable, service: target.service, reason: reason)
                return
            }
            handler.tried.insert(instance.id)
            handler.instance = instance
            handler.knownInstances = snapshot.instances.count
            let address = UpstreamAddress(host: instance.definition.address.rawValue, port: instance.definition.port)
            handler.pool.acquire(address).whenComplete { result in
                let handler = proxy.value
                guard handler.state == .connecting, handler.context != nil else {
                    if case .success(let connection) = result { handler.pool.release(connection.value) }
                    return
                }
                switch result {
                case .success(let connection):
                    handler.attach(connection.value)
                case .failure(let error):
                    handler.router.selector.record(false, on: instance, knownInstances: handler.knownInstances)
                    handler.retryOrFail(reason: "\(instance.id) refused the connection: \(TransportFailure(error))")
                }
            }
        }
    }

    /// Another instance when attempts remain and the request can still be sent whole; else the caller gets a 502.
    private func retryOrFail(reason: String) {
        guard let target, let context else { return }
        if replayable, tried.count <= configuration.connectRetries {
            state = .connecting
            connect(context: context)
        } else {
            respondWithError(.badGateway, service: target.service, reason: reason)
        }
    }

    private func attach(_ connection: UpstreamConnection) {
        guard let request, let target, let context else { return }
        upstream = connection
        connection.receiver = self
        state = .forwarding
        let head = GatewayHeaders.upstreamRequest(
            request, path: target.path, clientAddress: context.channel.remoteAddress?.ipAddress,
            requestID: requestID)
        connection.channel.write(HTTPClientRequestPart.head(head), promise: nil)
        for part in held { writeUpstream(part, flush: false) }
        connection.channel.flush()
        // Once the parts are sent, keep them only while a replacement connection could still need them.
        if heldBytes > Self.replayLimit { replayable = false }
        context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
        context.read()
        let loop = context.eventLoop
        let proxy = NIOLoopBound(self, eventLoop: loop)
        responseTimeout = loop.scheduleTask(in: configuration.responseTimeout.timeAmount) {
            let handler = proxy.value
            guard handler.state == .forwarding else { return }
            handler.abandonUpstream()
            handler.respondWithError(
                .gatewayTimeout, service: target.service,
                reason:
                    "\(handler.instance?.id.rawValue ?? "the instance") did not answer within \(handler.configuration.responseTimeout)"
            )
        }
    }

    private func send(_ part: HTTPServerRequestPart) {
        if case .body(let buffer) = part, replayable {
            heldBytes += buffer.readableBytes
            if heldBytes > Self.replayLimit { replayable = false } else { held.append(part) }
        } else if replayable {
            held.append(part)
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
            if !upstream.channel.isWritable {
                context?.channel.setOption(.autoRead, value: false).whenComplete { _ in }
            }
        } else {
            upstream.channel.write(outgoing, promise: nil)
        }
    }

    // MARK: The instance's side

    func upstreamReceived(_ part: HTTPClientResponsePart) {
        guard let context else { return }
        switch (state, part) {
        case (.forwarding, .head(let head)):
            responseTimeout?.cancel()
            responseTimeout = nil
            state = .responding
            if let instance {
                router.selector.record(head.status.code < 500, on: instance, knownInstances: knownInstances)
            }
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
                // Reuse only a connection whose exchange ended cleanly on both sides.
                if requestEnded { pool.release(connection) } else { connection.channel.close(promise: nil) }
            }
            context.writeAndFlush(wrapOutboundOut(.end(trailers)), promise: nil)
            if requestEnded {
                finishExchange(context: context)
            } else {
                state = .discarding
            }
        default:
            break
        }
    }

    func upstreamFailed(_ error: any Error) {
        guard let context else { return }
        let connection = upstream
        upstream = nil
        connection?.channel.close(promise: nil)
        switch state {
        case .forwarding:
            responseTimeout?.cancel()
            responseTimeout = nil
            if let instance {
                router.selector.record(false, on: instance, knownInstances: knownInstances)
            }
            // Nothing reached the caller yet: another instance may take the request if it is idempotent (it may
            // have been received) and can still be sent whole.
            let reason = "\(instance?.id.rawValue ?? "the instance") failed: \(TransportFailure(error))"
            if replayable, request.map(GatewayHeaders.isIdempotent) ?? false {
                retryOrFail(reason: reason)
            } else if let target {
                respondWithError(.badGateway, service: target.service, reason: reason)
            }
        case .responding:
            // Half a response is out: the caller must see the connection end, not a truncated success.
            context.close(promise: nil)
        default:
            break
        }
    }

    func upstreamWritabilityChanged(isWritable: Bool) {
        guard let context, state == .forwarding || state == .responding else { return }
        context.channel.setOption(.autoRead, value: isWritable).whenComplete { _ in }
        if isWritable { context.read() }
    }

    // MARK: Ending exchanges

    private func respondWithError(_ status: HTTPResponseStatus, service: ServiceName?, reason: String) {
        guard let context else { return }
        responseTimeout?.cancel()
        responseTimeout = nil
        let body = GatewayHeaders.errorBody(status: status, service: service, reason: reason, requestID: requestID)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "X-Request-ID", value: requestID)
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let version = request?.version ?? .http1_1
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        logger.debug(
            "request not proxied",
            metadata: ["status": "\(status.code)", "reason": "\(reason)", "request-id": "\(requestID)"])
        if requestEnded {
            finishExchange(context: context)
        } else {
            state = .discarding
            context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
            context.read()
        }
    }

    private func finishExchange(context: ChannelHandlerContext) {
        state = .idle
        request = nil
        target = nil
        held = []
        instance = nil
        context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
        if !keepAlive { context.close(promise: nil) }
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

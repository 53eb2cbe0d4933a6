import NIOCore
import NIOHTTP1
import NIOHTTP2

/// Carries one HTTP/2 stream through the gateway's HTTP/1.1 proxy engine, so every route, policy and upstream pool
/// serves HTTP/2 callers unchanged (instances are still spoken to in HTTP/1.1).
///
/// It sits between NIO's `HTTP2FramePayloadToHTTP1ServerCodec` (the stream's frames as HTTP/1-style parts) and a
/// ``ProxyHandler`` (which reads and writes HTTP/1.1 bytes). Inbound, the request parts become an HTTP/1.1 message:
/// the head once it is known whether a body follows (a body without a `Content-Length` goes chunked), then the body.
/// Outbound, the proxy's HTTP/1.1 answer is parsed back (its head strictly, its body by its framing, dechunked) into
/// response parts; connection-specific fields, which HTTP/2 forbids, are dropped. HTTP/1.1 stays the fast path:
/// none of this runs for HTTP/1.1 callers.
final class HTTP2StreamBridge: ChannelDuplexHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = HTTPServerResponsePart

    /// Fields that belong to one HTTP/1.1 connection, never to an HTTP/2 message (RFC 9113 section 8.2.2).
    static let connectionSpecific: Set<String> = [
        "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade",
    ]

    private var pendingHead: HTTPRequestHead?
    private var requestChunked = false
    private var requestIsHEAD = false

    private var answer: ByteBuffer?
    private var scanned = 0
    /// The answer's body framing, once its head went out; nil before.
    private var framer: BodyFramer?
    private var answered = false

    // MARK: The caller's request, into HTTP/1.1 bytes

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            requestIsHEAD = head.method == .HEAD
            // Whether a body follows is known from the next part: the head waits for it.
            pendingHead = head
        case .body(var body):
            if let head = pendingHead.take() {
                requestChunked = !head.headers.contains(name: "content-length")
                context.fireChannelRead(wrapInboundOut(Self.requestHead(head, chunked: requestChunked, context)))
            }
            guard body.readableBytes > 0 else { return }
            if requestChunked {
                var chunk = context.channel.allocator.buffer(capacity: body.readableBytes + 12)
                chunk.writeString(String(body.readableBytes, radix: 16))
                chunk.writeStaticString("\r\n")
                chunk.writeBuffer(&body)
                chunk.writeStaticString("\r\n")
                context.fireChannelRead(wrapInboundOut(chunk))
            } else {
                context.fireChannelRead(wrapInboundOut(body))
            }
        case .end:
            if let head = pendingHead.take() {
                // No body: the message is the head alone (a stated length of 0 stays).
                context.fireChannelRead(wrapInboundOut(Self.requestHead(head, chunked: false, context)))
            } else if requestChunked {
                context.fireChannelRead(wrapInboundOut(ByteBuffer(string: "0\r\n\r\n")))
            }
        }
    }

    private static func requestHead(
        _ head: HTTPRequestHead, chunked: Bool, _ context: ChannelHandlerContext
    ) -> ByteBuffer {
        var buffer = context.channel.allocator.buffer(capacity: 256)
        buffer.writeString(head.method.rawValue)
        buffer.writeStaticString(" ")
        buffer.writeString(head.uri)
        buffer.writeStaticString(" HTTP/1.1\r\n")
        for (name, value) in head.headers {
            let lowercased = name.lowercased()
            if connectionSpecific.contains(lowercased) || (lowercased == "te" && value.lowercased() != "trailers") {
                continue
            }
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
            buffer.writeStaticString("\r\n")
        }
        if chunked { buffer.writeStaticString("Transfer-Encoding: chunked\r\n") }
        buffer.writeStaticString("\r\n")
        return buffer
    }

    // MARK: The proxy's HTTP/1.1 answer, into response parts

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var bytes = unwrapOutboundIn(data)
        if answer == nil || answer!.readableBytes == 0 {
            answer = bytes
        } else {
            answer!.writeBuffer(&bytes)
        }
        do {
            try translate(context: context)
        } catch {
            promise?.fail(error)
            context.close(promise: nil)
            return
        }
        promise?.succeed(())
    }

    private func translate(context: ChannelHandlerContext) throws {
        while !answered, var buffer = answer, buffer.readableBytes > 0 {
            if var body = framer {
                let slice = try body.dechunking(from: &buffer)
                framer = body
                answer = buffer
                if let slice, slice.readableBytes > 0 {
                    context.write(wrapOutboundOut(.body(.byteBuffer(slice))), promise: nil)
                }
                if body.isComplete {
                    finishAnswer(context: context)
                } else if slice == nil {
                    return
                }
                continue
            }
            guard let end = HTTPHeadParser.headEnd(in: buffer, searchingFrom: scanned) else {
                scanned = max(buffer.readableBytes - 3, 0)
                return
            }
            scanned = 0
            let head = try HTTPHeadParser.response(buffer.readSlice(length: end)!)
            answer = buffer
            // Interim answers (100 Continue) are the gateway's own business with HTTP/1.1 callers.
            if head.status < 200 { continue }
            let framing = try HTTPHeadParser.framing(of: head, toHEAD: requestIsHEAD)
            var headers = HTTPHeaders()
            let fields = head.fields
            for index in 0..<fields.count {
                let name = fields.lowercasedName(at: index)
                if Self.connectionSpecific.contains(name) || name == "te" { continue }
                headers.add(name: name, value: fields.value(at: index))
            }
            context.write(
                wrapOutboundOut(
                    .head(
                        HTTPResponseHead(
                            version: .http2, status: HTTPResponseStatus(statusCode: head.status), headers: headers))),
                promise: nil)
            let body = BodyFramer(framing)
            framer = body
            if framing == .none || body.isComplete { finishAnswer(context: context) }
        }
    }

    private func finishAnswer(context: ChannelHandlerContext) {
        answered = true
        answer = nil
        context.write(wrapOutboundOut(.end(nil)), promise: nil)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // An answer whose body ends with the connection (no length from the instance) ends with the stream.
        if framer != nil, !answered {
            finishAnswer(context: context)
            context.flush()
        }
        context.close(mode: mode, promise: promise)
    }
}

/// Closes a connection on which nothing passed for the idle timeout: one whose protocol is not known yet, or an
/// HTTP/2 one (its streams have their own timers).
final class IdleConnectionCloser: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = NIOAny

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// Picks the protocol of a caller's cleartext connection from its first bytes: HTTP/2's connection preface (h2c
/// with prior knowledge, RFC 9113 section 3.3) gets the HTTP/2 pipeline, anything else the HTTP/1.1 proxy. What was
/// read to decide is handed on untouched.
final class CleartextProtocolSniffer: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private var buffered: ByteBuffer?
    private let installHTTP1: (any Channel) throws -> Void
    private let installHTTP2: (any Channel) throws -> Void

    init(http1: @escaping (any Channel) throws -> Void, http2: @escaping (any Channel) throws -> Void) {
        installHTTP1 = http1
        installHTTP2 = http2
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The gateway is stopping, and this caller has not asked for anything yet.
        if event is ChannelShouldQuiesceEvent {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if buffered == nil {
            buffered = bytes
        } else {
            buffered!.writeBuffer(&bytes)
        }
        let view = buffered!.readableBytesView
        let compared = min(view.count, Self.preface.count)
        if !view.prefix(compared).elementsEqual(Self.preface.prefix(compared)) {
            choose(installHTTP1, context: context)
        } else if view.count >= Self.preface.count {
            choose(installHTTP2, context: context)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // A caller that left before saying enough to decide: HTTP/1.1 sees what little came.
        if buffered != nil { choose(installHTTP1, context: context) }
        context.fireChannelInactive()
    }

    private func choose(_ install: (any Channel) throws -> Void, context: ChannelHandlerContext) {
        do {
            try install(context.channel)
        } catch {
            context.close(promise: nil)
            return
        }
        if let bytes = buffered.take() { context.fireChannelRead(wrapInboundOut(bytes)) }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}

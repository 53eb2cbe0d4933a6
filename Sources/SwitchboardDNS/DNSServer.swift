import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Serves DNS over UDP and TCP on SwiftNIO until graceful shutdown.
///
/// UDP gets one socket per event loop on the same port (`SO_REUSEPORT`, so the kernel spreads clients across the
/// cores) reading batches of datagrams at a time; each query is answered on the event loop it arrived on, straight
/// from the catalog's memory. TCP takes length-prefixed messages (RFC 1035 section 4.2.2, several per connection)
/// and closes connections idle for ``DNSConfiguration/tcpIdleTimeout``.
public struct DNSServer: Service {
    public let responder: DNSResponder
    let logger: Logger
    let onListening: @Sendable (Int) async -> Void

    /// A server answering with `responder`; `onListening` is told the port once UDP and TCP both listen.
    public init(
        responder: DNSResponder, logger: Logger, onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        self.responder = responder
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let configuration = responder.configuration
        let group = MultiThreadedEventLoopGroup.singleton
        let connections = OpenConnections()
        let responder = self.responder
        let idle = TimeAmount.nanoseconds(
            Int64(configuration.tcpIdleTimeout.components.seconds) * 1_000_000_000
                + configuration.tcpIdleTimeout.components.attoseconds / 1_000_000_000)
        let tcp = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                connections.add(channel)
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        IdleStateHandler(readTimeout: idle),
                        ByteToMessageHandler(LengthPrefixedMessageDecoder()),
                        DNSStreamHandler(responder: responder),
                    ])
                }
            }
            .bind(host: configuration.host, port: configuration.port).get()
        var channels: [any Channel] = [tcp]
        do {
            guard let port = tcp.localAddress?.port else { throw DNSServerError("the TCP socket has no port") }
            for loop in group.makeIterator() {
                let udp = try await DatagramBootstrap(group: loop)
                    .channelOption(.socketOption(.so_reuseaddr), value: 1)
                    .channelOption(.socketOption(NIOBSDSocket.Option(rawValue: SO_REUSEPORT)), value: 1)
                    .channelOption(.datagramVectorReadMessageCount, value: 32)
                    .channelOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 4096 * 32))
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(DNSDatagramHandler(responder: responder))
                        }
                    }
                    .bind(host: configuration.host, port: port).get()
                channels.append(udp)
            }
            logger.info(
                "DNS listening",
                metadata: ["address": "\(configuration.host):\(port)", "domain": "\(configuration.domain)"])
            await onListening(port)
            try? await gracefulShutdown()
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
        for channel in channels { try? await channel.close() }
        connections.closeAll()
    }
}

/// A DNS server that could not start.
public struct DNSServerError: Error, CustomStringConvertible, Sendable {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// The TCP connections open now, so shutdown can close them instead of waiting for their idle timeout.
final class OpenConnections: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func add(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        channels.withLock { $0[key] = channel }
        channel.closeFuture.whenComplete { _ in _ = self.channels.withLock { $0.removeValue(forKey: key) } }
    }

    func closeAll() {
        for channel in channels.withLock({ Array($0.values) }) { channel.close(promise: nil) }
    }
}

/// Answers each datagram; replies are flushed once per batch of reads.
final class DNSDatagramHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let responder: DNSResponder
    private var pendingFlush = false
    private var random = FastRandom()

    init(responder: DNSResponder) {
        self.responder = responder
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let query = unwrapInboundIn(data)
        guard let answer = responder.respond(to: query.data, overTCP: false, random: &random) else { return }
        context.write(
            wrapOutboundOut(AddressedEnvelope(remoteAddress: query.remoteAddress, data: answer)), promise: nil)
        pendingFlush = true
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if pendingFlush {
            pendingFlush = false
            context.flush()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A failed send to one client (ICMP unreachable, say) must not stop the socket serving the others.
    }
}

/// Splits a TCP stream into messages by their two-byte length prefix.
struct LengthPrefixedMessageDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
            buffer.readableBytes >= 2 + Int(length)
        else { return .needMoreData }
        buffer.moveReaderIndex(forwardBy: 2)
        context.fireChannelRead(wrapInboundOut(buffer.readSlice(length: Int(length))!))
        return .continue
    }
}

/// Answers each message of a TCP connection; closes it when idle, on garbage without a header, or on error.
final class DNSStreamHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let responder: DNSResponder
    private var random = FastRandom()

    init(responder: DNSResponder) {
        self.responder = responder
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let answer = responder.respond(to: unwrapInboundIn(data), overTCP: true, random: &random) else {
            context.close(promise: nil)
            return
        }
        var framed = context.channel.allocator.buffer(capacity: answer.readableBytes + 2)
        framed.writeInteger(UInt16(answer.readableBytes))
        framed.writeImmutableBuffer(answer)
        context.writeAndFlush(wrapOutboundOut(framed), promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}

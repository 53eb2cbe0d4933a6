import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
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
    /// Where the answers are counted, by question type and response code.
    public let statistics: DNSQueryStatistics
    let logger: Logger
    let onListening: @Sendable (Int) async -> Void

    /// A server answering with `responder`, counting its answers in `statistics`; `onListening` is told the port
    /// once UDP and TCP both listen.
    public init(
        responder: DNSResponder, statistics: DNSQueryStatistics = DNSQueryStatistics(), logger: Logger,
        onListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) {
        self.responder = responder
        self.statistics = statistics
        self.logger = logger
        self.onListening = onListening
    }

    public func run() async throws {
        let configuration = responder.configuration
        let connections = OpenConnections(limit: configuration.maximumTCPConnections)
        // A free port for TCP may be taken for UDP: with port 0, try a few free ports before giving up.
        var attempts = configuration.port == 0 ? 5 : 1
        var channels: [any Channel] = []
        while true {
            do {
                channels = try await bind(configuration, connections: connections)
                break
            } catch {
                attempts -= 1
                guard attempts > 0 else { throw error }
            }
        }
        let port = channels[0].localAddress?.port ?? configuration.port
        logger.info(
            "DNS listening",
            metadata: ["address": "\(configuration.host):\(port)", "domain": "\(configuration.domain)"])
        await onListening(port)
        try? await gracefulShutdown()
        connections.closeAll()
        for channel in channels { try? await channel.close() }
    }

    /// The TCP listener (first) and one UDP socket per event loop on its port; nothing stays open on failure.
    private func bind(_ configuration: DNSConfiguration, connections: OpenConnections) async throws -> [any Channel] {
        let group = MultiThreadedEventLoopGroup.singleton
        let responder = self.responder
        let statistics = self.statistics
        let (seconds, attoseconds) = configuration.tcpIdleTimeout.components
        let idle = TimeAmount.milliseconds(
            max(
                1,
                seconds.multipliedReportingOverflow(by: 1000).overflow
                    ? .max : seconds * 1000 + attoseconds / 1_000_000_000_000_000))
        let tcp = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                guard connections.add(channel) else {
                    return channel.close()
                }
                return channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandlers([
                        IdleStateHandler(readTimeout: idle),
                        ByteToMessageHandler(LengthPrefixedMessageDecoder()),
                        DNSStreamHandler(responder: responder, statistics: statistics),
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
                            try channel.pipeline.syncOperations.addHandler(
                                DNSDatagramHandler(responder: responder, statistics: statistics))
                        }
                    }
                    .bind(host: configuration.host, port: port).get()
                channels.append(udp)
            }
            return channels
        } catch {
            for channel in channels { try? await channel.close() }
            throw error
        }
    }
}

/// A DNS server that could not start.
public struct DNSServerError: Error, CustomStringConvertible, Sendable {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// The TCP connections open now: at most `limit` at once, and closed by shutdown instead of waiting for their idle
/// timeout.
final class OpenConnections: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var closed = false
    }

    private let state = Mutex(State())
    private let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// Registers a new connection; false when it must be refused (too many open, or shutting down).
    func add(_ channel: any Channel) -> Bool {
        let key = ObjectIdentifier(channel)
        let admitted = state.withLock { state in
            guard !state.closed, state.channels.count < limit else { return false }
            state.channels[key] = channel
            return true
        }
        if admitted {
            channel.closeFuture.whenComplete { _ in _ = self.state.withLock { $0.channels.removeValue(forKey: key) } }
        }
        return admitted
    }

    func closeAll() {
        let open = state.withLock { state in
            state.closed = true
            return Array(state.channels.values)
        }
        for channel in open { channel.close(promise: nil) }
    }
}

/// Answers each datagram; replies are flushed once per batch of reads.
final class DNSDatagramHandler: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    private let responder: DNSResponder
    private var pendingFlush = false
    private var random = FastRandom()
    private let counting: CountedAnswers

    init(responder: DNSResponder, statistics: DNSQueryStatistics) {
        self.responder = responder
        counting = CountedAnswers(statistics: statistics)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        counting.start(on: context.eventLoop)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        counting.stop()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let query = unwrapInboundIn(data)
        guard let answer = responder.respond(to: query.data, overTCP: false, random: &random) else { return }
        counting.counts.record(query: query.data, answer: answer)
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
    private let counting: CountedAnswers

    init(responder: DNSResponder, statistics: DNSQueryStatistics) {
        self.responder = responder
        counting = CountedAnswers(statistics: statistics)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        counting.start(on: context.eventLoop)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        counting.stop()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let query = unwrapInboundIn(data)
        guard let answer = responder.respond(to: query, overTCP: true, random: &random) else {
            context.close(promise: nil)
            return
        }
        counting.counts.record(query: query, answer: answer)
        var framed = context.channel.allocator.buffer(capacity: answer.readableBytes + 2)
        framed.writeInteger(UInt16(answer.readableBytes))
        framed.writeImmutableBuffer(answer)
        context.writeAndFlush(wrapOutboundOut(framed), promise: nil)
        // A client that sends but does not read would have answers pile up: stop reading until it catches up.
        if !context.channel.isWritable {
            context.channel.setOption(.autoRead, value: false).whenComplete { _ in }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            context.channel.setOption(.autoRead, value: true).whenComplete { _ in }
            context.read()
        }
        context.fireChannelWritabilityChanged()
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

/// One handler's answers counted on its event loop, readable by ``DNSQueryStatistics`` from there.
final class CountedAnswers {
    var counts = DNSQueryCounts()
    private let statistics: DNSQueryStatistics
    private var id: Int?

    init(statistics: DNSQueryStatistics) {
        self.statistics = statistics
    }

    /// Lets scrapes read the counts, on `loop` (the handler's, the only one that touches them).
    func start(on loop: any EventLoop) {
        let bound = NIOLoopBound(self, eventLoop: loop)
        id = statistics.register { loop.submit { bound.value.counts } }
    }

    /// Hands the final counts over: the handler is gone.
    func stop() {
        guard let id else { return }
        self.id = nil
        statistics.retire(id, counts: counts)
    }
}

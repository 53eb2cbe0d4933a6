import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import SwitchboardClient
import SwitchboardCore
import SwitchboardGateway
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs an upstream proxy in this process against `agent` while `body` runs; hands it each service's bound port.
func withUpstreamProxy<T: Sendable>(
    agent: AgentProcess, upstreams: [UpstreamProxyConfiguration],
    _ body: @Sendable ([ServiceName: Int]) async throws -> T
) async throws -> T {
    var logger = Logger(label: "test.upstream-proxy")
    logger.logLevel = .warning
    let (bound, boundSink) = AsyncStream.makeStream(of: [ServiceName: Int].self)
    let proxy = UpstreamProxy(
        upstreams: upstreams, agents: [agent.baseURL], agentTLS: nil, agentToken: nil, logger: logger,
        onListening: { boundSink.yield($0) })
    let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [proxy], logger: logger))
    return try await serving(
        group,
        until: { () async throws -> [ServiceName: Int] in
            var iterator = bound.makeAsyncIterator()
            guard let ports = await iterator.next() else { throw TestFailure("the proxy never reported its ports") }
            return ports
        }, body)
}

/// A TCP echo server in this process: every byte it reads goes back on the same connection, and it closes its
/// side once the caller closed theirs.
final class EchoServer: Sendable {
    let channel: any Channel
    var port: Int { channel.localAddress?.port ?? 0 }

    init() async throws {
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Echo()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// Stops listening: new connections are refused, as by a killed process.
    func stop() async throws { try await channel.close() }

    private final class Echo: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            context.writeAndFlush(data, promise: nil)
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case ChannelEvent.inputClosed = event { context.close(promise: nil) }
        }
    }
}

/// Sends `message` over a new connection to 127.0.0.1:`port`, closes the sending side, and reads until the
/// other side closes.
func echoExchange(_ message: String, port: Int) async throws -> String {
    let connection = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelOption(.allowRemoteHalfClosure, value: true)
        .connect(host: "127.0.0.1", port: port) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                    wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
            }
        }
    return try await connection.executeThenClose { inbound, outbound in
        try await outbound.write(ByteBuffer(string: message))
        // Half-closed: the echo still comes back after the caller has said all it will.
        outbound.finish()
        var received = ""
        for try await bytes in inbound { received += String(buffer: bytes) }
        return received
    }
}

@Suite("The sidecar's upstream proxy, with real backends", .serialized, .loadsTheMachine)
struct UpstreamProxyTests {
    @Test func anInstanceKilledUnderAPythonCallersLoadCostsNoFailedCall() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        var backends: [ExampleBackend] = []
        for _ in 0..<3 { backends.append(try await ExampleBackend(agents: [agent.baseURL], service: "payment")) }
        try await waitForHealthy(agent, "payment", count: 3)
        let victim = backends[0]
        let survivors = Array(backends[1...])
        let payment = try ServiceName("payment")
        try await withUpstreamProxy(
            agent: agent, upstreams: [UpstreamProxyConfiguration(service: payment, host: "127.0.0.1", port: 0)]
        ) { ports in
            let port = try #require(ports[payment])
            // The caller kills the victim itself after 500 calls: under load, at a known point.
            let run = try await runProgram(
                "/usr/bin/env",
                [
                    "python3", PythonClients.fixture("upstream_caller.py"), "\(port)", "/hello", "--calls", "2000",
                    "--threads", "4", "--kill-pid", "\(victim.process.processIdentifier)", "--kill-after", "500",
                ], timeout: .seconds(120))
            #expect(run.status == 0, "\(run.stderr)")
            let line = run.stdout.split(separator: "\n").last.map(String.init) ?? ""
            let report = try #require(
                try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(run.stdout)")
            #expect(report["completed"] as? Int == 2000)
            #expect(report["failed"] as? Int == 0, "\(report["errors"] ?? [])")
            #expect(!victim.process.isRunning)
            // The survivors answered what the dead one no longer could.
            #expect(try await survivors[0].answeredCalls() + survivors[1].answeredCalls() >= 1500)
        }
    }

    @Test func everyPathGoesUnchangedToTheServiceWhateverItsTags() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "payment")
        try await waitForHealthy(agent, "payment", count: 1)
        let payment = try ServiceName("payment")
        try await withUpstreamProxy(
            agent: agent, upstreams: [UpstreamProxyConfiguration(service: payment, host: "127.0.0.1", port: 0)]
        ) { ports in
            let port = try #require(ports[payment])
            let answer = try await http(.GET, "http://127.0.0.1:\(port)/hello")
            #expect(answer.status == 200 && answer.text.hasPrefix("hello from payment"))
            #expect(try await backend.answeredCalls() == 1)
        }
        // A service with no instance is a 503 naming it, not a hang.
        let ledger = try ServiceName("ledger")
        try await withUpstreamProxy(
            agent: agent, upstreams: [UpstreamProxyConfiguration(service: ledger, host: "127.0.0.1", port: 0)]
        ) { ports in
            let answer = try await http(.GET, "http://127.0.0.1:\(try #require(ports[ledger]))/hello")
            #expect(answer.status == 503)
            #expect(answer.object["service"] as? String == "ledger")
        }
    }

    @Test func theTCPModeCarriesBytesToAHealthyInstanceAndSkipsADeadOne() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let servers = [try await EchoServer(), try await EchoServer()]
        let echo = try ServiceName("echo")
        let registry = AgentConnection(configuration: .init(agents: [agent.baseURL]))
        let client = AgentClient(connection: registry)
        for (index, server) in servers.enumerated() {
            _ = try await client.register(
                RegistrationRequest(address: "127.0.0.1", port: server.port), service: echo,
                id: try InstanceID("echo-\(index)"))
        }
        try await registry.shutdown()
        try await waitForHealthy(agent, "echo", count: 2)
        try await withUpstreamProxy(
            agent: agent, upstreams: [UpstreamProxyConfiguration(service: echo, host: "127.0.0.1", port: 0, mode: .tcp)]
        ) { ports in
            let port = try #require(ports[echo])
            for index in 0..<4 {
                #expect(try await echoExchange("ping \(index)", port: port) == "ping \(index)")
            }
            // A larger message crosses in many reads, both ways.
            let large = String(repeating: "0123456789abcdef", count: 64 * 1024)
            #expect(try await echoExchange(large, port: port) == large)
            // One instance dies; the registry still lists it, and every new connection still gets an echo.
            try await servers[0].stop()
            for index in 0..<10 {
                #expect(try await echoExchange("after \(index)", port: port) == "after \(index)")
            }
        }
        try await servers[1].stop()
    }
}

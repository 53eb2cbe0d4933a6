import ArgumentParser
import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import ProcessSupport
import ServiceLifecycle
import SwitchboardClient
import SwitchboardCore
import Synchronization
import UnixSignals

/// A runnable example of SwitchboardClient: a backend that registers itself, and a caller that finds it.
///
/// `switchboard-example backend --service order` serves `GET /hello` (answering with its instance id) and
/// registers itself with a TTL check for as long as it runs; SIGTERM drains it first. `switchboard-example call
/// --service order --count 100` sends calls through a ``ServiceClient`` and prints one line per call. The
/// integration tests run both as processes.
@main
struct ExampleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard-example",
        abstract: "SwitchboardClient, by example: a self-registering backend and a caller.",
        subcommands: [Backend.self, Call.self]
    )
}

struct AgentOptions: ParsableArguments {
    @Option(help: "An agent URL; repeat for several.")
    var agent: [String] = ["http://127.0.0.1:7500"]

    @Option(help: "The service name.")
    var service: String = "example"
}

struct Backend: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve GET /hello and stay registered while running.")

    @OptionGroup var agentOptions: AgentOptions

    @Option(help: "The instance id (default: <service>-<port>).")
    var id: String?

    @Option(help: "The port to listen on (0: any free port).")
    var port: Int = 0

    @Option(help: "The TTL of the heartbeat check, in milliseconds.")
    var ttlMilliseconds: Int = 1000

    @Option(help: "How long to drain on SIGTERM before deregistering, in milliseconds.")
    var drainMilliseconds: Int = 1000

    @Option(help: "A tag to register with (repeat for several); the gateway serves services tagged public.")
    var tag: [String] = []

    func run() async throws {
        ParentWatch.startIfAsked()
        var logger = Logger(label: "example.backend")
        logger.logLevel = .info
        let service = try ServiceName(agentOptions.service)
        let connection = AgentConnection(configuration: .init(agents: agentOptions.agent), logger: logger)
        let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
        let calls = Counter()
        let router = Router()
        let instanceName = id
        let tags = tag
        router.get("hello") { _, _ in
            let count = calls.increment()
            return "hello from \(instanceName ?? service.rawValue) (\(count))\n"
        }
        // HEAD names the length of the body a GET would get, and sends none.
        router.head("hello") { _, _ in
            let length = "hello from \(instanceName ?? service.rawValue) (\(calls.value))\n".utf8.count
            return Response(status: .ok, headers: [.contentLength: String(length)])
        }
        // The request's path and query as they arrived, for trying a proxy's rewriting.
        router.get("uri") { request, _ in request.uri.description + "\n" }
        router.get("count") { _, _ in "\(calls.value)\n" }
        // For trying a proxy in front of it: the request's headers back as JSON, the body echoed, a slow answer.
        router.get("headers") { request, _ -> String in
            var fields: [String: String] = [:]
            for field in request.headers {
                fields[field.name.canonicalName] =
                    fields[field.name.canonicalName].map { "\($0), \(field.value)" } ?? field.value
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = .sortedKeys
            return String(decoding: try encoder.encode(fields), as: UTF8.self) + "\n"
        }
        router.post("echo") { request, _ -> Response in
            // Streamed back as it arrives: a large body never sits in memory whole.
            Response(status: .ok, body: ResponseBody(asyncSequence: request.body))
        }
        // The head and half the body at once, the rest after `ms`: an instance that stalls mid-answer.
        router.get("stall") { request, _ -> Response in
            let milliseconds = request.uri.queryParameters.get("ms", as: Int.self) ?? 1000
            let halves = (ByteBuffer(string: "stalled for "), ByteBuffer(string: "\(milliseconds) ms\n"))
            return Response(
                status: .ok,
                headers: [.contentLength: String(halves.0.readableBytes + halves.1.readableBytes)],
                body: ResponseBody { writer in
                    try await writer.write(halves.0)
                    try await Task.sleep(for: .milliseconds(max(0, min(milliseconds, 60_000))))
                    try await writer.write(halves.1)
                    try await writer.finish(nil)
                })
        }
        router.get("slow") { request, _ -> String in
            let milliseconds = request.uri.queryParameters.get("ms", as: Int.self) ?? 1000
            try await Task.sleep(for: .milliseconds(max(0, min(milliseconds, 60_000))))
            return "slow \(milliseconds)\n"
        }
        let application = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: port)),
            onServerRunning: { channel in
                let bound = channel.localAddress?.port ?? 0
                // Unbuffered: print's buffer on a pipe would hold the line from whoever started this process.
                StandardStream.output.write("listening \(bound)\n")
                portSink.yield(bound)
            },
            logger: logger
        )
        let registrar = RegisterOnceListening(
            ports: ports, connection: connection, logger: logger,
            makeConfiguration: { port in
                ServiceRegistration.Configuration(
                    service: service, id: try InstanceID(id ?? "\(service)-\(port)"), address: "127.0.0.1", port: port,
                    tags: tags, ttl: .milliseconds(ttlMilliseconds), drainTime: .milliseconds(drainMilliseconds))
            })
        // The registrar after the server: it stops first, so the drain happens while the server still answers.
        let group = ServiceGroup(
            configuration: .init(
                services: [application, registrar], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        try await connection.shutdown()
    }
}

/// Starts the registration once the server reports its port.
struct RegisterOnceListening: Service {
    let ports: AsyncStream<Int>
    let connection: AgentConnection
    let logger: Logger
    let makeConfiguration: @Sendable (Int) throws -> ServiceRegistration.Configuration

    func run() async throws {
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { return }
        let registration = ServiceRegistration(
            connection: connection, configuration: try makeConfiguration(port), logger: logger)
        try await registration.run()
    }
}

struct Call: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Call the service's /hello through SwitchboardClient.")

    @OptionGroup var agentOptions: AgentOptions

    @Option(help: "How many calls to make.")
    var count: Int = 10

    func run() async throws {
        let connection = AgentConnection(configuration: .init(agents: agentOptions.agent))
        let discovery = ServiceDiscovery(connection: connection)
        let client = ServiceClient(
            service: try ServiceName(agentOptions.service), discovery: discovery, balancer: RoundRobinBalancer())
        await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await discovery.run() }
            for _ in 0..<count {
                do {
                    let response = try await client.execute(ServiceRequest(path: "/hello"))
                    print(
                        "\(response.status.code) \(response.instance?.id.rawValue ?? "fallback"): \(String(buffer: response.body))",
                        terminator: "")
                } catch {
                    print("failed: \(error)")
                }
            }
            group.cancelAll()
        }
        try await connection.shutdown()
    }
}

/// A count shared by request handlers.
final class Counter: Sendable {
    private let count = Mutex(0)
    func increment() -> Int {
        count.withLock {
            $0 += 1; return $0
        }
    }
    var value: Int { count.withLock { $0 } }
}

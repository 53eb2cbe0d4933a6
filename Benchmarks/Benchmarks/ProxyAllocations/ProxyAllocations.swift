import Benchmark
import NIOCore
import SwitchboardClient
import SwitchboardCore
@_spi(Measuring) import SwitchboardGateway

/// What one proxied exchange costs the gateway, counted in memory: the caller's request goes in on an embedded
/// channel, the gateway routes it, picks the instance, rewrites the head and writes it to its pooled connection;
/// the instance's answer comes back the same way. Sockets, event-loop wake-ups and the other processes of
/// `bench/gateway.sh` are left out, so the count is the gateway's own (with the embedded channels' bookkeeping, the
/// same in every run).
///
/// The request and the answer are the ones `bench/gateway.sh` sends and gets: wrk's GET with only a Host, and
/// nginx's 200 with a two-byte body.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.mallocCountTotal, .instructions, .wallClock],
        warmupIterations: 2,
        // Each sample is a thousand exchanges on one gateway; figures are shown per exchange.
        scalingFactor: .kilo,
        maxDuration: .seconds(10),
        maxIterations: 30,
        thresholds: [
            // Allocations are counted, not timed: the same build gives the same count, so any rise is a change.
            .mallocCountTotal: .init(relative: [.p50: 0, .p90: 0], absolute: [.p50: 0, .p90: 1])
        ]
    )

    // No spaces in the name: the thresholds file is found by it.
    Benchmark("Proxied_GET_keep-alive_pooled_connection") { benchmark async throws in
        let proxy = try ProxyUnderMeasure()
        let measured = Result {
            // The first exchange opens the pooled connection: measured are the ones that reuse it, as under load.
            try proxy.exchange()
            benchmark.startMeasurement()
            for _ in benchmark.scaledIterations {
                try proxy.exchange()
            }
            benchmark.stopMeasurement()
        }
        try await proxy.finish()
        try measured.get()
    }
}

/// One in-memory gateway in front of one instance of `payment`.
final class ProxyUnderMeasure {
    private let gateway: InMemoryGateway
    private let discovery: ServiceDiscovery
    private let request = ByteBuffer(string: "GET /payment/ HTTP/1.1\r\nHost: 127.0.0.1:17780\r\n\r\n")
    private let answer = ByteBuffer(
        string: "HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 08 Dec 2026 00:00:00 GMT\r\n"
            + "Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")

    init() throws {
        let payment = try ServiceName("payment")
        let instance = Instance(
            definition: InstanceDefinition(
                service: payment, id: try InstanceID("payment-1"), address: try HostAddress("127.0.0.1"),
                port: 18081, tags: ["public"]),
            createIndex: 1, modifyIndex: 1)
        discovery = ServiceDiscovery(fixed: [payment: [instance]])
        gateway = try InMemoryGateway(discovery: discovery)
    }

    /// One request and its answer; throws when either side did not get what it should.
    func exchange() throws {
        try gateway.send(request)
        guard try gateway.dropUpstreamReceived() > 0 else { throw Failure.requestNotForwarded }
        try gateway.upstreamSends(answer)
        guard try gateway.dropReceived() > 0 else { throw Failure.answerNotForwarded }
    }

    /// Closes the connections and the discovery's HTTP client (one dropped unclosed traps).
    func finish() async throws {
        gateway.finish()
        try await discovery.connection.shutdown()
    }

    enum Failure: Error {
        case requestNotForwarded
        case answerNotForwarded
    }
}

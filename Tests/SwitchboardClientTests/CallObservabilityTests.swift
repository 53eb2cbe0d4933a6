import AsyncHTTPClient
import CoreMetrics
import Hummingbird
import InMemoryTracing
import MetricsTestKit
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import SwitchboardCore
import SwitchboardTestSupport
import Synchronization
import Testing
import Tracing

@testable import SwitchboardClient

/// The headers of each request a recording backend received (names lowercased).
final class ReceivedRequests: Sendable {
    private let headers = Mutex<[[String: String]]>([])

    func record(_ fields: [String: String]) { headers.withLock { $0.append(fields) } }
    var last: [String: String]? { headers.withLock { $0.last } }
}

/// Runs a backend that answers every request with 200 and keeps the headers it received, while `body` runs.
func withRecordingBackend<T: Sendable>(
    _ body: @Sendable (_ port: Int, _ received: ReceivedRequests) async throws -> T
) async throws -> T {
    let received = ReceivedRequests()
    let router = Router()
    router.get("**") { request, _ -> String in
        var fields: [String: String] = [:]
        for field in request.headers { fields[field.name.canonicalName] = field.value }
        received.record(fields)
        return "ok"
    }
    let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
    let application = Application(
        router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
        onServerRunning: { portSink.yield($0.localAddress?.port ?? 0) })
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await application.runService(gracefulShutdownSignals: []) }
        defer { group.cancelAll() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw TestFailure("the backend never reported its port") }
        return try await body(port, received)
    }
}

/// Values recorded by one task and read by another.
final class Recorded<Value: Sendable>: Sendable {
    private let values = Mutex<[Value]>([])

    func append(_ value: Value) { values.withLock { $0.append(value) } }
    var all: [Value] { values.withLock { $0 } }
}

func shopInstance(_ id: String, port: Int) throws -> Instance {
    Instance(
        definition: InstanceDefinition(
            service: try ServiceName("shop"), id: try InstanceID(id), address: try HostAddress("127.0.0.1"), port: port),
        createIndex: 1, modifyIndex: 1)
}

@Suite("Metrics, traces and observations of calls", .loadsTheMachine)
struct CallObservabilityTests {
    @Test func aCallIsOneSpanWithAnEventPerAttemptAndTheTraceContextReachesTheBackend() async throws {
        let tracer = InMemoryTracer()
        var configuration = HTTPClient.Configuration()
        configuration.tracing.tracer = tracer
        configuration.connectionPool.retryConnectionEstablishment = false
        let httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        try await withRecordingBackend { port, received in
            // Round robin alternates (from a random start): one of two calls goes to the dead instance first and
            // takes two attempts.
            let discovery = ServiceDiscovery(fixed: [
                try ServiceName("shop"): [try shopInstance("a-dead", port: 1), try shopInstance("b-live", port: port)]
            ])
            let client = ServiceClient(
                service: try ServiceName("shop"), discovery: discovery, balancer: RoundRobinBalancer(),
                policy: CallPolicy(attemptTimeout: .seconds(20)), httpClient: httpClient, tracer: tracer)
            let first = try await client.execute(ServiceRequest(path: "/orders/7"))
            let second = try await client.execute(ServiceRequest(path: "/orders/7"))
            #expect(first.status == .ok && second.status == .ok)
            #expect(first.attempts + second.attempts >= 3)

            let spans = tracer.finishedSpans
            let calls = spans.filter { $0.operationName == "GET shop" }
            #expect(calls.count == 2)
            let call = try #require(calls.first { $0.events.count == 2 })
            #expect(call.kind == .client)
            #expect(call.attributes["switchboard.instance"]?.toSpanAttribute() == .string("b-live"))
            #expect(call.attributes["http.response.status_code"]?.toSpanAttribute() == .int64(200))
            #expect(call.attributes["switchboard.attempts"]?.toSpanAttribute() == .int64(2))
            #expect(call.events.map(\.name) == ["attempt", "attempt"])
            #expect(call.events.first?.attributes["switchboard.outcome"]?.toSpanAttribute() == .string("not_sent"))
            // AsyncHTTPClient's span per attempt is a child of the call's span.
            let attempts = spans.filter { $0.parentSpanID == call.spanID }
            #expect(attempts.count == 2, "\(spans.map(\.operationName))")

            // The tracer's propagator wrote the trace context into the request the backend received.
            let headers = try #require(received.last)
            #expect(headers[InMemoryTracer.traceIDKey] == calls.last?.traceID)
            try await discovery.connection.shutdown()
        }
        try await httpClient.shutdown()
    }

    @Test func callsAttemptsRetriesAndEjectionsAreCountedPerServiceAndInstance() async throws {
        let metrics = TestMetrics()
        try await withRecordingBackend { port, _ in
            let discovery = ServiceDiscovery(fixed: [
                try ServiceName("shop"): [try shopInstance("a-dead", port: 1), try shopInstance("b-live", port: port)]
            ])
            let client = ServiceClient(
                service: try ServiceName("shop"), discovery: discovery, balancer: RoundRobinBalancer(),
                // 20 s per attempt: the live backend runs in this process, slow to answer in a loaded full run.
                policy: CallPolicy(
                    attemptTimeout: .seconds(20), circuitBreaker: nil,
                    outlierDetection: OutlierDetector.Configuration(consecutiveFailures: 2)),
                metricsFactory: metrics)
            for _ in 0..<10 { _ = try await client.execute(ServiceRequest(path: "/")) }

            let shop = ("service", "shop")
            #expect(
                try metrics.expectCounter("switchboard_client_calls_total", [shop, ("outcome", "success")]).totalValue
                    == 10)
            #expect(try metrics.expectTimer("switchboard_client_call_duration_seconds", [shop]).values.count == 10)
            let dead = [shop, ("instance", "a-dead")]
            #expect(
                try metrics.expectCounter("switchboard_client_attempts_total", dead + [("outcome", "not_sent")])
                    .totalValue == 2, "the dead instance is ejected after two failures and not called again")
            #expect(try metrics.expectCounter("switchboard_client_ejections_total", dead).totalValue == 1)
            #expect(
                try metrics.expectCounter(
                    "switchboard_client_attempts_total", [shop, ("instance", "b-live"), ("outcome", "success")]
                ).totalValue == 10)
            #expect(try metrics.expectCounter("switchboard_client_retries_total", [shop]).totalValue == 2)
            try await discovery.connection.shutdown()
        }
    }

    @Test func anEjectionIsReportedToTheAgentAsAnObservationAndChangesNoHealth() async throws {
        try await withLiveAgent { agent in
            try await withRecordingBackend { port, _ in
                let connection = AgentConnection(configuration: .loaded(agent.baseURL))
                try await register("a-dead", port: 1, with: connection)
                try await register("b-live", port: port, with: connection)
                let discovery = ServiceDiscovery(
                    connection: connection, configuration: .init(reporter: "observability-test"))
                let client = ServiceClient(
                    service: try ServiceName("shop"), discovery: discovery, balancer: RoundRobinBalancer(),
                    policy: CallPolicy(
                        circuitBreaker: nil, outlierDetection: OutlierDetector.Configuration(consecutiveFailures: 2)))
                let before = try await AgentClient(connection: connection).lookup(try ServiceName("shop"))
                let seen = Recorded<[String]>()
                try await whileRunning(discovery) {
                    let subscription = discovery.subscribe(to: try ServiceName("shop"))
                    let collector = Task {
                        for await snapshot in subscription {
                            seen.append(snapshot.instances.instances.map(\.id.rawValue))
                        }
                    }
                    defer { collector.cancel() }
                    #expect(await eventually { seen.all == [["a-dead", "b-live"]] })
                    for _ in 0..<6 { _ = try await client.execute(ServiceRequest(path: "/")) }
                    let reported = try await eventually {
                        let page = try await AgentClient(connection: connection).events(since: 0)
                        return page.events.contains {
                            $0.kind == .observed && $0.id.rawValue == "a-dead"
                                && $0.observation?.reporter == "observability-test"
                                && $0.observation?.kind == .ejected && $0.observation?.duration == .seconds(30)
                        }
                    }
                    #expect(reported, "the ejection never reached the agent's event log")
                    let after = try await AgentClient(connection: connection).lookup(try ServiceName("shop"))
                    #expect(after.instances == before.instances, "an observation must not change the instances")
                    #expect(after.index == before.index)

                    // The observation reached this discovery's stream too and changed nothing there: subscribers got
                    // no snapshot for it, and the next one they get is the next real change.
                    try await Task.sleep(for: .milliseconds(300))
                    #expect(seen.all == [["a-dead", "b-live"]])
                    try await register("c-new", port: port, with: connection)
                    #expect(
                        await eventually {
                            seen.all == [["a-dead", "b-live"], ["a-dead", "b-live", "c-new"]]
                        })
                }
                try await connection.shutdown()
            }
        }
    }
}

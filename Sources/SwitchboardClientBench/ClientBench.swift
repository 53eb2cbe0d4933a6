import AsyncHTTPClient
import Foundation
import Hummingbird
import Logging
import NIOCore
import SwitchboardClient
import SwitchboardCore

/// Micro-benchmarks of the client library, run on a release build by `bench/client.sh`.
///
/// `picks`: the time of one pick from 100 instances, for each balancer. `execute`: the time of a call through
/// ``ServiceClient/execute(_:context:)`` against a local backend, against the same call made with AsyncHTTPClient
/// directly, alternating rounds so both see the same machine. Prints Markdown rows.
@main
struct ClientBench {
    static func main() async throws {
        let arguments = CommandLine.arguments.dropFirst()
        if arguments.isEmpty || arguments.contains("picks") { benchmarkPicks() }
        if arguments.isEmpty || arguments.contains("execute") { try await benchmarkExecute() }
    }

    static func instances(_ count: Int) -> InstanceSet {
        InstanceSet(
            (0..<count).map { index in
                Instance(
                    definition: InstanceDefinition(
                        service: try! ServiceName("bench"), id: try! InstanceID("i\(index)"),
                        address: try! HostAddress("10.0.\(index / 256).\(index % 256)"), port: 8080,
                        meta: ["zone": index % 3 == 0 ? "a" : "b"], weight: 1 + index % 10),
                    createIndex: 1, modifyIndex: 1)
            })
    }

    /// Nanoseconds per pick of `balancer` over `rounds` picks (the best of five runs).
    static func timePicks(_ balancer: inout some LoadBalancer, _ set: InstanceSet, keyed: Bool) -> Double {
        let rounds = 1_000_000
        let keys = (0..<1024).map { PickContext(hashKey: "user-\($0)") }
        let plain = PickContext()
        var best = Double.infinity
        var checksum = 0
        for _ in 0..<5 {
            let start = ContinuousClock.now
            for round in 0..<rounds {
                let instance = balancer.pick(from: set, context: keyed ? keys[round & 1023] : plain)
                checksum &+= instance?.definition.port ?? 0
            }
            best = min(best, nanoseconds(ContinuousClock.now - start))
        }
        if checksum == 42 { print("") }  // keeps the loop from being optimised away
        return best / Double(rounds)
    }

    static func benchmarkPicks() {
        let set = instances(100)
        print("| balancer (100 instances) | ns per pick |")
        print("|---|---|")
        var roundRobin = RoundRobinBalancer()
        print("| round robin | \(format(timePicks(&roundRobin, set, keyed: false))) |")
        var random = RandomBalancer()
        print("| random (weighted) | \(format(timePicks(&random, set, keyed: false))) |")
        var weighted = WeightedRoundRobinBalancer()
        print("| smooth weighted round robin | \(format(timePicks(&weighted, set, keyed: false))) |")
        var least = LeastRequestsBalancer()
        print("| least requests (two choices) | \(format(timePicks(&least, set, keyed: false))) |")
        var hash = ConsistentHashBalancer()
        print("| consistent hash (ring, 160 points) | \(format(timePicks(&hash, set, keyed: true))) |")
        var zone = ZoneAwareBalancer(localZone: "a", inner: RoundRobinBalancer())
        print("| zone-aware over round robin | \(format(timePicks(&zone, set, keyed: false))) |")
    }

    static func format(_ value: Double) -> String { String(format: "%.1f", value) }

    static func benchmarkExecute() async throws {
        let router = Router()
        router.get("hello") { _, _ in "hello\n" }
        let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
        var quiet = Logger(label: "bench.backend")
        quiet.logLevel = .critical
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { portSink.yield($0.localAddress?.port ?? 0) }, logger: quiet)
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await app.runService() }
            var iterator = ports.makeAsyncIterator()
            let port = await iterator.next()!
            // A discovery that knows the backend without an agent: the benchmark times the call path from a warm
            // cache, as in steady state.
            let backend = Instance(
                definition: InstanceDefinition(
                    service: try ServiceName("bench"), id: try InstanceID("local"),
                    address: try HostAddress("127.0.0.1"),
                    port: port),
                createIndex: 1, modifyIndex: 1)
            let discovery = ServiceDiscovery(fixed: [try ServiceName("bench"): [backend]])
            let client = ServiceClient(
                service: try ServiceName("bench"), discovery: discovery, balancer: RoundRobinBalancer())
            let calls = 20_000
            var direct: [Double] = []
            var through: [Double] = []
            for _ in 0..<5 {
                direct.append(
                    try await timeCalls(calls) {
                        let response = try await HTTPClient.shared.execute(
                            HTTPClientRequest(url: "http://127.0.0.1:\(port)/hello"), timeout: .seconds(5))
                        _ = try await response.body.collect(upTo: 1 << 20)
                    })
                through.append(
                    try await timeCalls(calls) {
                        _ = try await client.execute(ServiceRequest(path: "/hello"))
                    })
            }
            let directBest = direct.min()!
            let throughBest = through.min()!
            print("")
            print("| call to a local backend (\(calls) calls, sequential, best of 5) | us per call |")
            print("|---|---|")
            print("| AsyncHTTPClient directly | \(format(directBest / 1000)) |")
            print("| ServiceClient.execute (round robin, default policy) | \(format(throughBest / 1000)) |")
            print("| overhead | \(format((throughBest / directBest - 1) * 100))% |")
            try await discovery.connection.shutdown()
            group.cancelAll()
        }
    }

    /// Nanoseconds per call of `call`.
    static func timeCalls(_ count: Int, _ call: () async throws -> Void) async throws -> Double {
        let start = ContinuousClock.now
        for _ in 0..<count { try await call() }
        return nanoseconds(ContinuousClock.now - start) / Double(count)
    }

    static func nanoseconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) * 1e9 + Double(duration.components.attoseconds) / 1e9
    }
}

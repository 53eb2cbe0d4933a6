import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Every cluster-mode suite, one after another: each starts an etcd cluster and agents, and several at once would
/// load the machine enough to upset the timing of the tests running beside them.
@Suite("Cluster mode", .serialized, .loadsTheMachine) enum ClusterModeTests {}

extension ClusterModeTests {
    /// Cluster mode with real processes: a three-member etcd on loopback and agents started with `--store etcd`.
    @Suite(.serialized) struct ClusterTests {
        /// An agent of the cluster on `etcd`, with DNS on a free port.
        static func clusterAgent(
            _ etcd: EtcdCluster, prefix: String = "/switchboard/", id: String? = nil, extra: [String] = []
        ) async throws -> AgentProcess {
            let directory = try makeTemporaryDirectory()
            return try await AgentProcess(
                dataDirectory: directory,
                extraArguments: [
                    "--store", "etcd", "--etcd-endpoints", etcd.endpoints.joined(separator: ","), "--etcd-prefix",
                    prefix,
                ] + (id.map { ["--agent-id", $0] } ?? []) + extra)
        }

        static func instanceIDs(_ agent: AgentProcess, _ service: String) async throws -> [String] {
            try await ClusterHealthTests.statuses(agent, service).keys.sorted()
        }

        @Test func aWriteThroughOneAgentIsSeenThroughAnothersLookupWatchAndDNSWithinASecond() async throws {
            try await withEtcdCluster(size: 3) { etcd in
                let a = try await Self.clusterAgent(etcd)
                let b = try await Self.clusterAgent(etcd)
                let stream = try await EventStreamClient("\(b.baseURL)/v1/watch?service=payment")
                let snapshot = try await stream.next()
                #expect(snapshot.event == "snapshot")

                let written = try await http(
                    .PUT, "\(a.baseURL)/v1/services/payment/instances/p1",
                    json: #"{"address": "127.0.0.7", "port": 9090}"#)
                #expect(written.status == 200 || written.status == 201, "\(written.text)")
                let acknowledged = ContinuousClock.now

                let change = try await stream.next(within: .seconds(1))
                #expect(
                    change.data.contains(#""p1""#), "the stream on the other agent carries the change: \(change.data)")
                try await waitUntil(timeout: .seconds(1), "the other agent's lookup shows p1") {
                    try await Self.instanceIDs(b, "payment") == ["p1"]
                }
                let dnsPort = try #require(b.dnsPort)
                try await waitUntil(
                    timeout: .seconds(1), interval: .milliseconds(50), "the other agent's DNS answers p1"
                ) {
                    try await digAddresses(dnsPort, "payment.service.switchboard") == ["127.0.0.7"]
                }
                #expect(
                    ContinuousClock.now - acknowledged < .seconds(2), "seen everywhere well within the bounds above")

                // And back: a removal through the second agent reaches the first.
                let removed = try await http(.DELETE, "\(b.baseURL)/v1/services/payment/instances/p1")
                #expect(removed.status == 200, "\(removed.text)")
                try await waitUntil(timeout: .seconds(1), "the first agent's lookup loses p1") {
                    try await Self.instanceIDs(a, "payment").isEmpty
                }
                stream.close()
            }
        }

        @Test func concurrentWritesOfOneInstanceThroughTwoAgentsLoseNoUpdate() async throws {
            try await withEtcdCluster(size: 3) { etcd in
                let agents = [try await Self.clusterAgent(etcd), try await Self.clusterAgent(etcd)]
                let url = "/v1/services/counter/instances/c1"
                let created = try await http(
                    .PUT, agents[0].baseURL + url, json: #"{"address": "127.0.0.1", "port": 1, "meta": {"n": "0"}}"#)
                #expect(created.status / 100 == 2, "\(created.text)")
                try await waitUntil(timeout: .seconds(2), "the second agent sees the instance") {
                    try await Self.instanceIDs(agents[1], "counter") == ["c1"]
                }

                // Read-modify-write with compare-and-set, through both agents at once: each success increments the
                // counter once, so the final count is exactly the number of successes if no update was lost.
                let total = try await withThrowingTaskGroup(of: Int.self) { group in
                    for worker in 0..<6 {
                        let agent = agents[worker % 2]
                        group.addTask {
                            var done = 0
                            var attempts = 0
                            while done < 8 {
                                attempts += 1
                                guard attempts < 400 else { throw TestFailure("worker \(worker) made no progress") }
                                let instance = try await http(.GET, agent.baseURL + url).object
                                let index = try #require(instance["modifyIndex"] as? Int)
                                let meta = instance["meta"] as? [String: String] ?? [:]
                                let next = (Int(meta["n"] ?? "") ?? 0) + 1
                                let answer = try await http(
                                    .PUT, agent.baseURL + url + "?cas=\(index)",
                                    json: #"{"address": "127.0.0.1", "port": 1, "meta": {"n": "\#(next)"}}"#)
                                if answer.status / 100 == 2 {
                                    done += 1
                                } else if answer.status != 409 {
                                    throw TestFailure("a write failed with \(answer.status): \(answer.text)")
                                }
                            }
                            return done
                        }
                    }
                    return try await group.reduce(0, +)
                }
                #expect(total == 48)
                // Both agents end in the same state: the count of every success, at one modify index.
                var seen: [(String, Int)] = []
                for agent in agents {
                    try await waitUntil(timeout: .seconds(2), "both agents show the last write") {
                        let instance = try await http(.GET, agent.baseURL + url).object
                        return (instance["meta"] as? [String: String])?["n"] == "\(total)"
                    }
                    let instance = try await http(.GET, agent.baseURL + url).object
                    seen.append(
                        ((instance["meta"] as? [String: String])?["n"] ?? "", instance["modifyIndex"] as? Int ?? 0))
                }
                #expect(seen[0].0 == "\(total)" && seen[0] == seen[1], "\(seen)")
                // And the same history: every change in one order, on both.
                let histories = try await agents.asyncMap { agent in
                    try await http(.GET, agent.baseURL + "/v1/events?since=0&limit=1000").object["events"]
                        as? [[String: Any]]
                        ?? []
                }
                let indexes = histories.map { $0.compactMap { $0["index"] as? Int } }
                #expect(indexes[0] == indexes[1] && indexes[0].count == total + 1)
            }
        }
    }
}

extension ClusterModeTests {
    /// What the agents do while etcd loses members: one of three is invisible; without a quorum, writes fail with 503
    /// and reads keep answering; with it back, writes work again without a restart.
    @Suite(.serialized) struct ClusterQuorumTests {
        @Test func losingQuorumFailsWritesWith503WhileReadsAnswerAndItsReturnHealsWrites() async throws {
            try await withEtcdCluster(size: 3) { etcd in
                let agent = try await ClusterTests.clusterAgent(etcd)
                func register(_ id: String) async throws -> HTTPAnswer {
                    try await http(
                        .PUT, "\(agent.baseURL)/v1/services/payment/instances/\(id)",
                        json: #"{"address": "127.0.0.1", "port": 9090}"#, timeout: .seconds(20))
                }
                #expect(try await register("before").status / 100 == 2)

                // One member of three lost: nothing to see.
                await etcd.kill(0)
                let withTwo = try await register("with-two")
                #expect(withTwo.status / 100 == 2, "\(withTwo.text)")

                // Quorum lost: the write is refused as unavailable, nothing of it is kept, and reads still answer.
                await etcd.kill(1)
                let refused = try await register("no-quorum")
                #expect(refused.status == 503, "\(refused.text)")
                #expect(refused.errorCode == "unavailable")
                #expect(refused.errorMessage?.contains("etcd") == true, "\(refused.text)")
                #expect(try await ClusterTests.instanceIDs(agent, "payment") == ["before", "with-two"])
                // ... and say how stale they may be: the view was last confirmed before the refused write's wait.
                func lastContact() async throws -> Int {
                    let lookup = try await http(.GET, "\(agent.baseURL)/v1/services/payment")
                    return Int(lookup.headers.first(name: "X-Switchboard-Last-Contact") ?? "") ?? -1
                }
                #expect(try await lastContact() >= 1000)
                let cluster = try await http(.GET, "\(agent.baseURL)/v1/agent").object["cluster"] as? [String: Any]
                #expect(cluster?["store"] as? String == "etcd")
                #expect((cluster?["viewAgeMilliseconds"] as? Int ?? 0) >= 1000, "\(cluster ?? [:])")
                #expect(cluster?["lastError"] is String, "\(cluster ?? [:])")
                let dnsPort = try #require(agent.dnsPort)
                let dns = try await digAddresses(dnsPort, "payment.service.switchboard")
                #expect(dns == ["127.0.0.1", "127.0.0.1"], "\(dns)")

                // Quorum back: writes work again, and the refused one never appears.
                try etcd.restart(0)
                try etcd.restart(1)
                try await etcd.waitUntilHealthy()
                try await waitUntil(timeout: .seconds(20), interval: .milliseconds(200), "writes work again") {
                    try await register("after").status / 100 == 2
                }
                try await waitUntil(timeout: .seconds(10), interval: .milliseconds(100), "the view is current again") {
                    (0..<1500).contains(try await lastContact())
                }
                // A write refused before it reached etcd never appears; one that etcd took in just as the quorum went is
                // reported as maybe happening, and may.
                let final = try await ClusterTests.instanceIDs(agent, "payment")
                let inFlight = refused.errorMessage?.contains("may still take effect") == true
                #expect(
                    final == ["after", "before", "with-two"]
                        || (inFlight && final == ["after", "before", "no-quorum", "with-two"]),
                    "\(final); refused with: \(refused.text)")
            }
        }
    }
}

extension ClusterModeTests {
    /// Members and health checks in a cluster: who runs which check, and what happens when an agent dies.
    @Suite(.serialized) struct ClusterHealthTests {
        static func checkCounts(_ agent: AgentProcess) async throws -> (ttl: Int, http: Int) {
            let checks =
                (try await http(.GET, "\(agent.baseURL)/v1/agent").object["health"] as? [String: Any])?["checks"]
                as? [String: Any]
            return (checks?["ttl"] as? Int ?? -1, checks?["http"] as? Int ?? -1)
        }

        static func memberIDs(_ agent: AgentProcess) async throws -> [String] {
            let cluster = try await http(.GET, "\(agent.baseURL)/v1/agent").object["cluster"] as? [String: Any]
            return ((cluster?["members"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String }
        }

        static func statuses(_ agent: AgentProcess, _ service: String) async throws -> [String: String] {
            let answer = try await http(.GET, "\(agent.baseURL)/v1/services/\(service)?status=any")
            var statuses: [String: String] = [:]
            for instance in answer.object["instances"] as? [[String: Any]] ?? [] {
                if let id = instance["id"] as? String { statuses[id] = instance["status"] as? String }
            }
            return statuses
        }

        @Test func membersAreListedAndADeadAgentLeavesWithItsLease() async throws {
            try await withEtcdCluster(size: 3) { etcd in
                let agents = [
                    try await ClusterTests.clusterAgent(etcd, id: "a1"),
                    try await ClusterTests.clusterAgent(etcd, id: "a2"),
                    try await ClusterTests.clusterAgent(etcd, id: "a3"),
                ]
                try await waitUntil(timeout: .seconds(5), "every agent lists the three") {
                    for agent in agents where try await Self.memberIDs(agent) != ["a1", "a2", "a3"] { return false }
                    return true
                }
                let listed = try await SwitchboardBinary.run(["members", "--agent", agents[0].baseURL])
                #expect(listed.status == 0, "\(listed.stderr)")
                #expect(listed.stdout.contains("a1 (answered)") && listed.stdout.contains("a3"), "\(listed.stdout)")

                await agents[2].stop(with: SIGKILL)
                let gone = try await waitUntil(timeout: .seconds(5), interval: .milliseconds(50), "a3 leaves") {
                    try await Self.memberIDs(agents[0]) == ["a1", "a2"]
                }
                #expect(gone < .seconds(4), "the lease (2 s) ends the dead agent's membership")
                // A graceful stop leaves at once.
                await agents[1].stop(with: SIGTERM)
                try await waitUntil(timeout: .seconds(1), interval: .milliseconds(20), "a2 leaves at once") {
                    try await Self.memberIDs(agents[0]) == ["a1"]
                }
            }
        }

        @Test func aKilledAgentsChecksRunOnASurvivorWithinThreeSecondsWithNoSpuriousCritical() async throws {
            let backend = try BackendProcess()
            try await withEtcdCluster(size: 3) { etcd in
                let a = try await ClusterTests.clusterAgent(etcd, id: "a")
                let b = try await ClusterTests.clusterAgent(etcd, id: "b")
                try await waitUntil(timeout: .seconds(5), "both agents are members") {
                    let (seenByA, seenByB) = (try await Self.memberIDs(a), try await Self.memberIDs(b))
                    return seenByA == ["a", "b"] && seenByB == ["a", "b"]
                }
                let count = 16
                for number in 0..<count {
                    let probed = try await http(
                        .PUT, "\(a.baseURL)/v1/services/probed/instances/h\(number)",
                        json: """
                            {"address": "127.0.0.1", "port": \(backend.port), "checks": [{"type": "http",
                             "url": "\(backend.healthURL)", "interval": "300ms", "timeout": "250ms"}]}
                            """)
                    #expect(probed.status == 201, "\(probed.text)")
                    let beating = try await http(
                        .PUT, "\(a.baseURL)/v1/services/beating/instances/t\(number)",
                        json: #"{"address": "127.0.0.1", "port": 1, "checks": [{"type": "ttl", "ttl": "3s"}]}"#)
                    #expect(beating.status == 201, "\(beating.text)")
                }
                // Heartbeats for every TTL instance through b, every 500 ms: b relays those a runs.
                let heartbeats = Task {
                    while !Task.isCancelled {
                        for number in 0..<count {
                            _ = try? await http(
                                .PUT, "\(b.baseURL)/v1/services/beating/instances/t\(number)/heartbeat",
                                timeout: .seconds(2))
                        }
                        try? await Task.sleep(for: .milliseconds(500))
                    }
                }
                defer { heartbeats.cancel() }
                try await waitUntil(timeout: .seconds(10), "every instance passing") {
                    let probed = try await Self.statuses(b, "probed")
                    let beating = try await Self.statuses(b, "beating")
                    return probed.count == count && beating.count == count
                        && (Array(probed.values) + Array(beating.values)).allSatisfy { $0 == "passing" }
                }
                // The checks are shared between the two: each runs some, together all, none twice.
                let (countsA, countsB) = (try await Self.checkCounts(a), try await Self.checkCounts(b))
                #expect(
                    countsA.ttl + countsB.ttl == count && countsA.http + countsB.http == count, "\(countsA) \(countsB)")
                #expect(
                    countsA.ttl > 0 && countsB.ttl > 0, "rendezvous hashing spreads the checks: \(countsA) \(countsB)")

                await a.stop(with: SIGKILL)
                let moved = try await waitUntil(timeout: .seconds(5), interval: .milliseconds(50), "b runs every check")
                {
                    let counts = try await Self.checkCounts(b)
                    return counts.ttl == count && counts.http == count
                }
                #expect(moved < .seconds(3), "checks moved in \(moved)")
                // Two TTLs later nothing turned critical because its agent died.
                for _ in 0..<12 {
                    let statuses =
                        Array(try await Self.statuses(b, "probed").values)
                        + Array(try await Self.statuses(b, "beating").values)
                    #expect(statuses.allSatisfy { $0 == "passing" }, "a spurious status after the move: \(statuses)")
                    try await Task.sleep(for: .milliseconds(500))
                }
                // And the survivor does detect a real failure.
                backend.killNow()
                try await waitUntil(timeout: .seconds(5), interval: .milliseconds(100), "the dead backend is critical")
                {
                    try await Self.statuses(b, "probed").values.allSatisfy { $0 == "critical" }
                }
            }
        }
    }
}

extension ClusterModeTests {
    /// Cluster mode under faults of etcd itself: a member killed under load, a compaction an agent must catch up with.
    @Suite(.serialized) struct ClusterFaultTests {
        @Test func killingTheEtcdLeaderUnderARegistrationLoadLosesNoAcknowledgedWriteAndFailsNoCall() async throws {
            try await withEtcdCluster(size: 3) { etcd in
                let agents = [try await ClusterTests.clusterAgent(etcd), try await ClusterTests.clusterAgent(etcd)]
                let leader = try #require(await etcd.leader(), "a leader")
                let results = try await withThrowingTaskGroup(of: (acknowledged: [String], failed: [String]).self) {
                    group in
                    for worker in 0..<8 {
                        group.addTask {
                            var acknowledged: [String] = []
                            var failed: [String] = []
                            let start = ContinuousClock.now
                            var number = 0
                            while ContinuousClock.now - start < .seconds(4) {
                                let id = "w\(worker)-\(number)"
                                number += 1
                                let agent = agents[(worker + number) % agents.count]
                                let answer = try await http(
                                    .PUT, "\(agent.baseURL)/v1/services/load/instances/\(id)",
                                    json: #"{"address": "127.0.0.1", "port": 9090}"#, timeout: .seconds(20))
                                if answer.status / 100 == 2 {
                                    acknowledged.append(id)
                                } else {
                                    failed.append("\(id): \(answer.status) \(answer.text)")
                                }
                            }
                            return (acknowledged, failed)
                        }
                    }
                    group.addTask {
                        try await Task.sleep(for: .seconds(1))
                        await etcd.kill(leader)
                        return ([], [])
                    }
                    var acknowledged: [String] = []
                    var failed: [String] = []
                    for try await result in group {
                        acknowledged += result.acknowledged
                        failed += result.failed
                    }
                    return (acknowledged, failed)
                }
                #expect(results.1.isEmpty, "failed calls: \(results.1.prefix(5))")
                #expect(results.0.count > 50, "the load kept going: \(results.0.count) registrations")
                for agent in agents {
                    let present = Set(try await ClusterTests.instanceIDs(agent, "load"))
                    let missing = Set(results.0).subtracting(present)
                    #expect(
                        missing.isEmpty, "acknowledged but missing on \(agent.baseURL): \(missing.sorted().prefix(5))")
                }
            }
        }

        @Test func anAgentThatFallsBehindACompactionLoadsTheCatalogAgainAndCatchesUp() async throws {
            try await withEtcdCluster(size: 3) { etcd in
                // The behind agent talks to the first member first: its watch breaks when that member dies.
                let behind = try await ClusterTests.clusterAgent(etcd)
                let writer = try await ClusterTests.clusterAgent(etcd)
                for id in ["kept", "removed"] {
                    _ = try await http(
                        .PUT, "\(writer.baseURL)/v1/services/compacted/instances/\(id)",
                        json: #"{"address": "127.0.0.1", "port": 9090}"#)
                }
                try await waitUntil(timeout: .seconds(2), "the behind agent sees both") {
                    try await ClusterTests.instanceIDs(behind, "compacted") == ["kept", "removed"]
                }
                let stream = try await EventStreamClient("\(behind.baseURL)/v1/watch?service=compacted")
                _ = try await stream.next()

                // Frozen, with its watch's member gone before anything changes (so nothing waits in its socket), it misses
                // changes that etcd then compacts away; thawed, it resumes elsewhere from a revision etcd no longer holds.
                kill(behind.process.processIdentifier, SIGSTOP)
                await etcd.kill(0)
                _ = try await http(.DELETE, "\(writer.baseURL)/v1/services/compacted/instances/removed")
                _ = try await http(
                    .PUT, "\(writer.baseURL)/v1/services/compacted/instances/added",
                    json: #"{"address": "127.0.0.1", "port": 9091}"#)
                try await etcd.compact()
                kill(behind.process.processIdentifier, SIGCONT)

                try await waitUntil(timeout: .seconds(10), interval: .milliseconds(100), "the behind agent catches up")
                {
                    try await ClusterTests.instanceIDs(behind, "compacted") == ["added", "kept"]
                }
                #expect(behind.log.contains("loading the catalog again"), "the agent caught up by loading again")
                // Its stream is told the differences, and its writes still work.
                var kinds: [String: String] = [:]
                while kinds.count < 2 {
                    let event = try await stream.next(within: .seconds(5))
                    for id in ["added", "removed"] where event.data.contains(#""id":"\#(id)""#) {
                        kinds[id] = event.event
                    }
                }
                #expect(kinds == ["added": "added", "removed": "removed"], "\(kinds)")
                let write = try await http(
                    .PUT, "\(behind.baseURL)/v1/services/compacted/instances/later",
                    json: #"{"address": "127.0.0.1", "port": 9092}"#)
                #expect(write.status == 201, "\(write.text)")
                stream.close()
            }
        }
    }
}

extension ClusterModeTests {
    /// A client of the library with two agents: when its agent dies, registration, heartbeats and watches move on.
    @Suite(.serialized) struct ClusterClientFailoverTests {
        @Test func aClientMovesItsHeartbeatsAndWatchToAnotherAgentWithoutRegisteringAgain() async throws {
            try await withEtcdCluster(size: 3) { etcd in
                let a = try await ClusterTests.clusterAgent(etcd, id: "a")
                let b = try await ClusterTests.clusterAgent(etcd, id: "b")
                let connection = AgentConnection(
                    configuration: AgentConnectionConfiguration(
                        agents: [a.baseURL, b.baseURL], connectTimeout: .milliseconds(500), requestTimeout: .seconds(2),
                        streamIdleTimeout: .seconds(5)))
                // Shut down however the steps end: a connection dropped unclosed stops the whole test process.
                do {
                    let registration = ServiceRegistration(
                        connection: connection,
                        configuration: .init(
                            service: try ServiceName("shop"), id: try InstanceID("s1"), address: "127.0.0.1",
                            port: 9000,
                            ttl: .milliseconds(1500)))
                    let discovery = ServiceDiscovery(connection: connection)
                    let running = Task {
                        try await withThrowingDiscardingTaskGroup { group in
                            group.addTask { try await registration.run() }
                            group.addTask { try await discovery.run() }
                        }
                    }
                    defer { running.cancel() }
                    let updates = discovery.subscribe(to: try ServiceName("shop"))
                    try await waitUntil(timeout: .seconds(5), "s1 registered and passing") {
                        try await ClusterHealthTests.statuses(b, "shop") == ["s1": "passing"]
                    }
                    func registrations(_ agent: AgentProcess) async throws -> Int {
                        let text = try await http(.GET, "\(agent.baseURL)/metrics").text
                        let line = text.split(separator: "\n").first { $0.hasPrefix("switchboard_registrations_total") }
                        return Int(Double(line?.split(separator: " ").last ?? "0") ?? 0)
                    }
                    let before = try await registrations(b)

                    await a.stop(with: SIGKILL)
                    // Three TTLs later: still passing (its heartbeats reach b, which relays or runs them), registered once.
                    for _ in 0..<9 {
                        try await Task.sleep(for: .milliseconds(500))
                        #expect(try await ClusterHealthTests.statuses(b, "shop") == ["s1": "passing"])
                    }
                    #expect(try await registrations(b) == before, "the client registered again instead of moving on")

                    // The watch moved too: a change made now reaches the client's cache.
                    _ = try await http(
                        .PUT, "\(b.baseURL)/v1/services/shop/instances/s2",
                        json: #"{"address": "127.0.0.1", "port": 9001}"#
                    )
                    let seen = try await withThrowingTaskGroup(of: Bool.self) { group in
                        group.addTask {
                            for await snapshot in updates
                            where snapshot.instances.instances.contains(where: { $0.id.rawValue == "s2" }) {
                                return true
                            }
                            return false
                        }
                        group.addTask {
                            try await Task.sleep(for: .seconds(3))
                            return false
                        }
                        defer { group.cancelAll() }
                        return try await group.next() ?? false
                    }
                    #expect(seen, "the client's watch did not resume on the surviving agent within 3 s")
                    running.cancel()
                } catch {
                    try? await connection.shutdown()
                    throw error
                }
                try? await connection.shutdown()
            }
        }
    }
}

extension ClusterModeTests {
    /// Self-preservation in a cluster judges every agent's TTL instances together.
    @Suite(.serialized) struct ClusterSelfPreservationTests {
        static func selfPreservation(_ agent: AgentProcess) async throws -> [String: Any] {
            let health = try await http(.GET, "\(agent.baseURL)/v1/agent").object["health"] as? [String: Any]
            return health?["selfPreservation"] as? [String: Any] ?? [:]
        }

        @Test func heartbeatsLostAcrossTheClusterPauseExpiryOnEveryAgentThoughNoneHasEnoughAlone() async throws {
            try await withEtcdCluster(size: 3) { etcd in
                // Each agent runs about half of 20 TTL checks: below 15 alone, above it together.
                let agents = [
                    try await ClusterTests.clusterAgent(
                        etcd, id: "a", extra: ["--self-preservation-min-instances", "15"]),
                    try await ClusterTests.clusterAgent(
                        etcd, id: "b", extra: ["--self-preservation-min-instances", "15"]),
                ]
                try await waitUntil(timeout: .seconds(5), "both agents are members") {
                    let seen = [
                        try await ClusterHealthTests.memberIDs(agents[0]),
                        try await ClusterHealthTests.memberIDs(agents[1]),
                    ]
                    return seen.allSatisfy { $0 == ["a", "b"] }
                }
                let count = 20
                for number in 0..<count {
                    _ = try await http(
                        .PUT, "\(agents[0].baseURL)/v1/services/fleet/instances/f\(number)",
                        json: #"{"address": "127.0.0.1", "port": 1, "checks": [{"type": "ttl", "ttl": "2s"}]}"#)
                }
                let beating = Task {
                    while !Task.isCancelled {
                        for number in 0..<count {
                            _ = try? await http(
                                .PUT, "\(agents[1].baseURL)/v1/services/fleet/instances/f\(number)/heartbeat")
                        }
                        try? await Task.sleep(for: .milliseconds(400))
                    }
                }
                try await waitUntil(timeout: .seconds(10), "every instance passing") {
                    let statuses = try await ClusterHealthTests.statuses(agents[1], "fleet")
                    return statuses.count == count && statuses.values.allSatisfy { $0 == "passing" }
                }
                let split = [
                    try await ClusterHealthTests.checkCounts(agents[0]),
                    try await ClusterHealthTests.checkCounts(agents[1]),
                ]
                #expect(split[0].ttl + split[1].ttl == count && split.allSatisfy { $0.ttl < 15 }, "\(split)")

                // Every heartbeat stops at once (the clients' network, say): the whole cluster's share trips it.
                beating.cancel()
                try await waitUntil(timeout: .seconds(8), interval: .milliseconds(100), "self-preservation on both") {
                    for agent in agents where try await Self.selfPreservation(agent)["active"] as? Bool != true {
                        return false
                    }
                    return true
                }
                let statuses = try await ClusterHealthTests.statuses(agents[1], "fleet")
                let critical = statuses.values.count { $0 == "critical" }
                #expect(critical <= count / 4, "expiry paused before most instances turned critical: \(statuses)")
            }
        }
    }
}

extension Array {
    func asyncMap<T>(_ transform: (Element) async throws -> T) async rethrows -> [T] {
        var results: [T] = []
        for element in self { results.append(try await transform(element)) }
        return results
    }
}

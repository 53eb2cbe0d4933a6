import Foundation
import NIOHTTP1
import SwitchboardAgent
import SwitchboardCore
import SwitchboardTestSupport
import Synchronization
import Testing

/// Blocking queries and event streams against a real agent over real HTTP.
@Suite(.serialized, .loadsTheMachine) struct WatchTests {
    func register(_ agent: LiveAgent, _ service: String, _ id: String, tags: [String] = []) async throws -> HTTPAnswer {
        let tagList = tags.map { "\"\($0)\"" }.joined(separator: ",")
        let answer = try await http(
            .PUT, "\(agent.baseURL)/v1/services/\(service)/instances/\(id)",
            json: #"{"address": "10.0.0.1", "port": 8080, "tags": [\#(tagList)]}"#)
        #expect(answer.status == 200 || answer.status == 201, "\(answer.text)")
        return answer
    }

    @Test func aBlockingQueryReturnsSoonAfterAChangeToItsServiceAndNotForAnotherService() async throws {
        try await withLiveAgent { agent in
            _ = try await register(agent, "order", "o1")
            let index = try #require(try await http(.GET, "\(agent.baseURL)/v1/services/order").index)
            let returnedAt = Mutex<ContinuousClock.Instant?>(nil)
            async let held = {
                let answer = try await http(.GET, "\(agent.baseURL)/v1/services/order?index=\(index)&wait=20s")
                returnedAt.withLock { $0 = .now }
                return answer
            }()
            try await Task.sleep(for: .milliseconds(200))
            _ = try await register(agent, "payment", "p1")
            try await Task.sleep(for: .milliseconds(300))
            #expect(returnedAt.withLock { $0 } == nil, "a change to payment woke a query on order")

            _ = try await register(agent, "order", "o2")
            let changedAt = ContinuousClock.now
            let answer = try await held
            let latency = try #require(returnedAt.withLock { $0 }) - changedAt
            #expect(latency < .milliseconds(50), "answered \(latency) after the change was acknowledged")
            #expect(answer.status == 200)
            #expect((answer.index ?? 0) > index)
            #expect((answer.object["instances"] as? [[String: Any]])?.count == 2)
        }
    }

    @Test func aBlockingQueryAnswersAfterItsWaitWhenNothingChanges() async throws {
        try await withLiveAgent { agent in
            _ = try await register(agent, "order", "o1")
            let index = try #require(try await http(.GET, "\(agent.baseURL)/v1/services").index)
            let start = ContinuousClock.now
            let answer = try await http(.GET, "\(agent.baseURL)/v1/services?index=\(index)&wait=400ms")
            let elapsed = ContinuousClock.now - start
            #expect(answer.status == 200)
            #expect(answer.index == index)
            // The wait, plus at most wait/16 of jitter, plus a generous margin for a busy machine.
            #expect(elapsed >= .milliseconds(400) && elapsed < .seconds(3), "answered after \(elapsed)")
            // The instance read blocks too.
            let instanceStart = ContinuousClock.now
            let instance = try await http(
                .GET, "\(agent.baseURL)/v1/services/order/instances/o1?index=\(index)&wait=200ms")
            #expect(instance.status == 200)
            #expect(ContinuousClock.now - instanceStart >= .milliseconds(200))
        }
    }

    @Test func indexZeroAndAnIndexFromTheFutureAnswerAtOnce() async throws {
        try await withLiveAgent { agent in
            _ = try await register(agent, "order", "o1")
            let current = try #require(try await http(.GET, "\(agent.baseURL)/v1/services").index)
            for query in ["index=0&wait=20s", "index=\(current + 1000)&wait=20s"] {
                let start = ContinuousClock.now
                let answer = try await http(.GET, "\(agent.baseURL)/v1/services/order?\(query)")
                #expect(ContinuousClock.now - start < .seconds(2), "\(query) was held")
                #expect(answer.status == 200)
                #expect(answer.index == current)
            }
        }
    }

    @Test func badBlockingParametersAreRefusedNamingTheField() async throws {
        try await withLiveAgent { agent in
            for (query, field) in [("index=abc", "index"), ("index=-1", "index"), ("index=1&wait=5", "wait")] {
                let answer = try await http(.GET, "\(agent.baseURL)/v1/services/order?\(query)")
                #expect(answer.status == 400, "\(query)")
                #expect(answer.errorField == field, "\(query): \(answer.text)")
            }
            let stream = try await EventStreamClient(
                "\(agent.baseURL)/v1/services/order/watch", lastEventID: "yesterday")
            #expect(stream.status == 400)
        }
    }

    @Test func anEventStreamSendsASnapshotThenEveryChangeInOrder() async throws {
        try await withLiveAgent { agent in
            _ = try await register(agent, "order", "o1")
            let stream = try await EventStreamClient("\(agent.baseURL)/v1/services/order/watch?status=any")
            #expect(stream.status == 200)
            #expect(stream.header("content-type") == "text/event-stream")
            let snapshot = try await stream.next()
            #expect(snapshot.event == "snapshot")
            #expect((snapshot.object["instances"] as? [[String: Any]])?.map { $0["id"] as? String } == ["o1"])
            let snapshotIndex = try #require(snapshot.index)

            _ = try await register(agent, "order", "o2")
            _ = try await register(agent, "payment", "p1")
            _ = try await http(
                .PUT, "\(agent.baseURL)/v1/services/order/instances/o1/maintenance", json: #"{"enabled": true}"#)
            _ = try await register(agent, "order", "o2", tags: ["v2"])
            _ = try await http(.DELETE, "\(agent.baseURL)/v1/services/order/instances/o2")

            var seen: [String] = []
            var indexes: [UInt64] = []
            for _ in 0..<4 {
                let event = try await stream.next()
                seen.append("\(event.event) \(event.object["id"] as? String ?? "?")")
                indexes.append(try #require(event.index))
                #expect(event.object["kind"] as? String == event.event)
            }
            #expect(seen == ["added o2", "status o1", "updated o2", "removed o2"])
            #expect(indexes == indexes.sorted() && indexes.first! > snapshotIndex)
            try await stream.expectSilence(for: .milliseconds(200))
        }
    }

    @Test func aFilteredStreamShowsInstancesEnteringAndLeavingItsView() async throws {
        try await withLiveAgent { agent in
            _ = try await register(agent, "order", "o1", tags: ["v2"])
            _ = try await register(agent, "order", "o2")
            let stream = try await EventStreamClient("\(agent.baseURL)/v1/services/order/watch?tag=v2")
            let snapshot = try await stream.next()
            #expect((snapshot.object["instances"] as? [[String: Any]])?.map { $0["id"] as? String } == ["o1"])
            // Outside the view before and after: not sent.
            _ = try await register(agent, "order", "o2", tags: ["v1"])
            // Leaves the view (drained): sent, so the consumer drops it.
            _ = try await http(
                .PUT, "\(agent.baseURL)/v1/services/order/instances/o1/maintenance", json: #"{"enabled": true}"#)
            // Enters the view.
            _ = try await register(agent, "order", "o3", tags: ["v2"])
            let left = try await stream.next()
            #expect(left.event == "status" && left.object["id"] as? String == "o1")
            let entered = try await stream.next()
            #expect(entered.event == "added" && entered.object["id"] as? String == "o3")
            try await stream.expectSilence(for: .milliseconds(200))
        }
    }

    @Test func theWholeCatalogStreamFollowsEveryService() async throws {
        try await withLiveAgent { agent in
            _ = try await register(agent, "order", "o1")
            let stream = try await EventStreamClient("\(agent.baseURL)/v1/watch")
            let snapshot = try await stream.next()
            #expect(snapshot.event == "snapshot")
            #expect(snapshot.object["service"] == nil)
            _ = try await register(agent, "payment", "p1")
            _ = try await register(agent, "cart", "c1")
            #expect(try await stream.next().object["service"] as? String == "payment")
            #expect(try await stream.next().object["service"] as? String == "cart")
        }
    }

    @Test func resumingWithLastEventIDSendsExactlyTheMissedEvents() async throws {
        try await withLiveAgent { agent in
            _ = try await register(agent, "order", "o1")
            let first = try await EventStreamClient("\(agent.baseURL)/v1/services/order/watch")
            let snapshot = try await first.next()
            _ = try await register(agent, "order", "o2")
            let seen = try await first.next()
            first.close()

            _ = try await register(agent, "order", "o3")
            _ = try await register(agent, "payment", "p1")
            _ = try await http(.DELETE, "\(agent.baseURL)/v1/services/order/instances/o1")
            let resumed = try await EventStreamClient(
                "\(agent.baseURL)/v1/services/order/watch", lastEventID: seen.id)
            let missed = [try await resumed.next(), try await resumed.next()]
            #expect(missed.map(\.event) == ["added", "removed"])
            #expect(missed.map { $0.object["id"] as? String } == ["o3", "o1"])
            try await resumed.expectSilence(for: .milliseconds(200))
            #expect(try #require(missed.first?.index) > (seen.index ?? 0))
            #expect(snapshot.index ?? 0 < seen.index ?? 0)
        }
    }

    @Test func aResumedStreamKeepsItsFilters() async throws {
        try await withLiveAgent { agent in
            _ = try await register(agent, "order", "o1", tags: ["v2"])
            let first = try await EventStreamClient("\(agent.baseURL)/v1/services/order/watch?tag=v2")
            let snapshot = try await first.next()
            first.close()
            _ = try await register(agent, "order", "o2", tags: ["v1"])
            _ = try await register(agent, "order", "o3", tags: ["v2"])
            _ = try await register(agent, "order", "o1", tags: ["v1"])
            let resumed = try await EventStreamClient(
                "\(agent.baseURL)/v1/services/order/watch?tag=v2", lastEventID: snapshot.id)
            // o2 never matched; o3 entered the view; o1 left it (it matched before the change).
            let missed = [try await resumed.next(), try await resumed.next()]
            #expect(missed.map { "\($0.event) \($0.object["id"] as? String ?? "?")" } == ["added o3", "updated o1"])
            try await resumed.expectSilence(for: .milliseconds(200))
        }
    }

    @Test func aServiceNeverRegisteredAnswersWithTheCatalogIndexSoABlockingQueryWaitsForIt() async throws {
        try await withLiveAgent { agent in
            _ = try await register(agent, "order", "o1")
            let ghost = try await http(.GET, "\(agent.baseURL)/v1/services/ghost")
            let index = try #require(ghost.index)
            #expect(index > 0)
            async let held = http(.GET, "\(agent.baseURL)/v1/services/ghost?index=\(index)&wait=20s")
            try await Task.sleep(for: .milliseconds(200))
            _ = try await register(agent, "ghost", "g1")
            let answer = try await held
            #expect((answer.object["instances"] as? [Any])?.count == 1)
        }
    }

    @Test func resumingFromAnEventNoLongerHeldStartsWithAFreshSnapshot() async throws {
        var configuration = AgentConfiguration(httpPort: 0, storage: .memory, dns: nil)
        configuration.watch = WatchConfiguration(frameCapacity: 4)
        try await withLiveAgent(configuration: configuration) { agent in
            _ = try await register(agent, "order", "o1")
            let start = try #require(try await http(.GET, "\(agent.baseURL)/v1/services").index)
            for number in 2...10 { _ = try await register(agent, "order", "o\(number)") }
            let resumed = try await EventStreamClient(
                "\(agent.baseURL)/v1/services/order/watch", lastEventID: String(start))
            let first = try await resumed.next()
            #expect(first.event == "snapshot")
            #expect((first.object["instances"] as? [Any])?.count == 10)
        }
    }

    @Test func idleStreamsGetKeepAliveCommentsAndShutdownEndsStreamsAndHeldQueries() async throws {
        var configuration = AgentConfiguration(httpPort: 0, storage: .memory, dns: nil)
        configuration.watch = WatchConfiguration(keepAliveInterval: .milliseconds(100))
        let stream = try await withLiveAgent(configuration: configuration) { agent in
            let stream = try await EventStreamClient("\(agent.baseURL)/v1/services/order/watch")
            _ = try await stream.next()
            // Comments are not events: the stream stays open and silent, but bytes flow.
            try await stream.expectSilence(for: .milliseconds(350))
            #expect(!stream.isFinished)
            let index = try #require(try await http(.GET, "\(agent.baseURL)/v1/services").index)
            // Held while the agent shuts down (withLiveAgent triggers it on return): answered, not dropped.
            Task { _ = try? await http(.GET, "\(agent.baseURL)/v1/services?index=\(index)&wait=5m") }
            try await Task.sleep(for: .milliseconds(100))
            return stream
        }
        // withLiveAgent returned, so graceful shutdown completed although a stream and a query were open.
        _ = try await waitUntil(timeout: .seconds(5), "the stream ending") { stream.isFinished }
    }
}

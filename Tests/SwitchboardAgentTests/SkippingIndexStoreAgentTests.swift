import Foundation
import NIOHTTP1
import SwitchboardAgent
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardTestSupport
import Testing

/// The whole agent (HTTP API, blocking queries, event streams, DNS, the health checker) on a store whose indexes
/// skip and which other writers change: nothing above the store may assume consecutive indexes or one writer.
@Suite("The agent on a store whose indexes skip", .serialized, .loadsTheMachine)
struct SkippingIndexStoreAgentTests {
    func register(
        _ agent: LiveAgent, _ id: String, body: String = #"{"address": "127.0.0.1", "port": 8080}"#
    )
        async throws -> HTTPAnswer
    {
        let answer = try await http(.PUT, "\(agent.baseURL)/v1/services/payment/instances/\(id)", json: body)
        #expect(answer.status == 200 || answer.status == 201, "\(answer.text)")
        return answer
    }

    /// An instance of payment as another agent would write it straight to the store.
    func elsewhere(_ id: String, address: String = "127.0.0.9", checks: [CheckDefinition] = []) -> PlannedChange {
        let definition = InstanceDefinition(
            service: try! ServiceName("payment"), id: try! InstanceID(id), address: try! HostAddress(address),
            port: 9090, checks: checks)
        return PlannedChange(
            kind: .added, at: Date(), instance: Instance(definition: definition, createIndex: 0, modifyIndex: 0),
            expectedModifyIndex: nil)
    }

    @Test func lookupsWatchesEventsAndDNSFollowIndexesThatSkip() async throws {
        let store = SkippingIndexStore(seed: 7)
        try await withLiveAgent(store: store) { agent in
            let first = try await register(agent, "p1")
            let second = try await register(agent, "p2", body: #"{"address": "127.0.0.2", "port": 8080}"#)
            let firstIndex = try #require(first.index)
            let secondIndex = try #require(second.index)
            #expect(secondIndex > firstIndex + 1, "the store skipped indexes (seeded)")
            #expect(try first.decode(Instance.self).modifyIndex == firstIndex)

            let lookup = try await http(.GET, "\(agent.baseURL)/v1/services/payment")
            #expect(try lookup.decode(ServiceLookup.self).instances.map(\.id.rawValue) == ["p1", "p2"])
            #expect(lookup.index == secondIndex)

            // A blocking query on the service's own (skipping) index wakes for the next change.
            async let held = http(.GET, "\(agent.baseURL)/v1/services/payment?index=\(secondIndex)&wait=20s")
            let stream = try await EventStreamClient("\(agent.baseURL)/v1/services/payment/watch")
            let snapshot = try await stream.next()
            #expect(snapshot.event == "snapshot" && snapshot.index == secondIndex)
            let third = try await register(agent, "p3", body: #"{"address": "127.0.0.3", "port": 8080}"#)
            let thirdIndex = try #require(third.index)
            #expect(try await held.index == thirdIndex)
            let added = try await stream.next()
            #expect(added.event == "added" && added.index == thirdIndex)

            // Another writer's instance reaches lookups, the stream and DNS by the store's change sequence alone.
            let external = try store.commitFromElsewhere([elsewhere("p9")])[0]
            let seen = try await stream.next()
            #expect(seen.event == "added" && seen.index == external.event.index)
            #expect((seen.object["instance"] as? [String: Any])?["id"] as? String == "p9")
            let afterExternal = try await http(.GET, "\(agent.baseURL)/v1/services/payment")
            #expect(try afterExternal.decode(ServiceLookup.self).instances.count == 4)
            #expect(afterExternal.index == external.event.index)
            let dnsPort = try #require(agent.dnsPort)
            #expect(
                try await digAddresses(dnsPort, "payment.service.switchboard")
                    == ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.9"])

            // The log pages through the skipping indexes, whole.
            let events = try await http(.GET, "\(agent.baseURL)/v1/events?since=0&limit=2")
            let page = try events.decode(EventPage.self)
            #expect(!page.truncated)
            #expect(page.events.map(\.id.rawValue) == ["p1", "p2"])
            let rest = try await http(.GET, "\(agent.baseURL)/v1/events?since=\(page.events.last!.index)")
            #expect(try rest.decode(EventPage.self).events.map(\.id.rawValue) == ["p3", "p9"])

            // A stream resumed from an event id gets exactly what it missed.
            stream.close()
            _ = try await http(.DELETE, "\(agent.baseURL)/v1/services/payment/instances/p2")
            let resumed = try await EventStreamClient(
                "\(agent.baseURL)/v1/services/payment/watch", lastEventID: String(external.event.index))
            let missed = try await resumed.next()
            #expect(
                missed.event == "removed" && (missed.object["instance"] as? [String: Any])?["id"] as? String == "p2")
            try await resumed.expectSilence(for: .milliseconds(200))
            resumed.close()
        }
    }

    @Test func theHealthCheckerTracksAnInstanceAnotherWriterRegistered() async throws {
        let store = SkippingIndexStore(seed: 11)
        try await withLiveAgent(store: store) { agent in
            let ttl = CheckDefinition(type: .ttl, ttl: .seconds(30))
            try store.commitFromElsewhere([elsewhere("p7", checks: [ttl])])
            try await waitUntil(timeout: .seconds(5), "the external instance to be applied") {
                agent.catalog.instance(service: try! ServiceName("payment"), id: try! InstanceID("p7")).instance != nil
            }
            // Critical until its first heartbeat, which the health checker takes because it follows the store.
            let answer = try await http(.PUT, "\(agent.baseURL)/v1/services/payment/instances/p7/heartbeat")
            #expect(answer.status == 200, "\(answer.text)")
            #expect(answer.object["status"] as? String == "passing")
            let stored = try #require(
                store.instance(InstanceKey(service: try ServiceName("payment"), id: try InstanceID("p7"))))
            #expect(stored.status == .passing, "the status change was committed to the store")
        }
    }

    @Test func aWritePlannedAgainstAViewTheStoreHasMovedPastIsPlannedAgain() async throws {
        let store = SkippingIndexStore(seed: 3)
        try await withLiveAgent(store: store) { agent in
            let registered = try await register(agent, "p1").decode(Instance.self)
            // Another writer moves p1 to another port, and the agent does not hear of it yet.
            store.holdDeliveries()
            var moved = registered
            moved.definition.port = 9999
            try store.commitFromElsewhere([
                PlannedChange(kind: .updated, at: Date(), instance: moved, expectedModifyIndex: registered.modifyIndex)
            ])
            async let drained = http(
                .PUT, "\(agent.baseURL)/v1/services/payment/instances/p1/maintenance",
                json: #"{"enabled": true, "reason": "deploy"}"#)
            // The agent's first plan is refused by the store; once it catches up, it plans again and succeeds.
            try await waitUntil(timeout: .seconds(5), "the store to refuse the stale plan") { store.conflicts >= 1 }
            store.releaseDeliveries()
            let answer = try await drained
            #expect(answer.status == 200, "\(answer.text)")
            let instance = try answer.decode(Instance.self)
            #expect(instance.definition.port == 9999, "the other writer's change is kept")
            #expect(instance.maintenance?.reason == "deploy")
            #expect(instance.status == .maintenance)
        }
    }

    @Test func changesThatShareAnIndexTravelTogether() async throws {
        let store = SkippingIndexStore(seed: 5)
        try await withLiveAgent(store: store) { agent in
            let before = try #require(try await register(agent, "p1").index)
            let stream = try await EventStreamClient("\(agent.baseURL)/v1/services/payment/watch")
            _ = try await stream.next()
            async let held = http(.GET, "\(agent.baseURL)/v1/services/payment?index=\(before)&wait=20s")
            let shared = try store.commitFromElsewhere(
                [elsewhere("p8", address: "127.0.0.8"), elsewhere("p9")], sharingOneIndex: true)
            let index = shared[0].event.index
            #expect(shared.map(\.event.index) == [index, index])

            // Both events arrive; only the last carries the id, so a resumption never splits the index.
            let first = try await stream.next()
            let second = try await stream.next()
            #expect([first.event, second.event] == ["added", "added"])
            #expect(first.index == before, "the first keeps the previous id (it carries none)")
            #expect(second.index == index)
            let answer = try await held
            #expect(answer.index == index)
            #expect(try answer.decode(ServiceLookup.self).instances.count == 3, "a blocking query sees both at once")

            // A page of one event still holds the whole index.
            let page = try await http(.GET, "\(agent.baseURL)/v1/events?since=\(before)&limit=1").decode(EventPage.self)
            #expect(page.events.map(\.id.rawValue) == ["p8", "p9"])
            let resumed = try await EventStreamClient(
                "\(agent.baseURL)/v1/services/payment/watch", lastEventID: String(before))
            let again = [try await resumed.next(), try await resumed.next()]
            #expect(again.map { ($0.object["instance"] as? [String: Any])?["id"] as? String } == ["p8", "p9"])
            resumed.close()
            stream.close()
        }
    }

    @Test func aFilteredStreamStillLearnsTheIdOfAnIndexItGotPartOf() async throws {
        let store = SkippingIndexStore(seed: 9)
        try await withLiveAgent(store: store) { agent in
            let snapshotIndex = try #require(try await register(agent, "p1").index)
            let stream = try await EventStreamClient("\(agent.baseURL)/v1/services/payment/watch")
            #expect(try await stream.next().index == snapshotIndex)
            func order(_ id: String) -> PlannedChange {
                let definition = InstanceDefinition(
                    service: try! ServiceName("order"), id: try! InstanceID(id), address: try! HostAddress("10.0.0.1"),
                    port: 80)
                return PlannedChange(
                    kind: .added, at: Date(),
                    instance: Instance(definition: definition, createIndex: 0, modifyIndex: 0),
                    expectedModifyIndex: nil)
            }
            // The order change carries each shared index's id; the payment stream filters it out.
            let first = try store.commitFromElsewhere([elsewhere("p8"), order("o1")], sharingOneIndex: true)
            let second = try store.commitFromElsewhere([elsewhere("p9"), order("o2")], sharingOneIndex: true)
            let p8 = try await stream.next()
            #expect(p8.event == "added" && p8.index == snapshotIndex, "the frame itself carries no id")
            let p9 = try await stream.next()
            #expect(p9.index == first[0].event.index, "the id of p8's index reached the stream on its own")
            #expect(second[0].event.index > first[0].event.index)
            stream.close()
        }
    }
}

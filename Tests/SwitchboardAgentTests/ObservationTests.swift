import Foundation
import NIOHTTP1
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardDNS
import SwitchboardTestSupport
import Testing

@testable import SwitchboardAgent

/// `POST .../observations`: what clients report (outlier ejections) is logged and changes nothing else.
@Suite("Observations reported by clients", .loadsTheMachine)
struct ObservationTests {
    let registration = #"{"address": "10.0.1.5", "port": 8080, "checks": [{"type": "ttl", "ttl": "30s"}]}"#
    let ejection =
        #"{"kind": "ejected", "reporter": "cart/4711", "reason": "5 consecutive failed calls", "duration": "30s"}"#

    @Test func anObservationIsLoggedAsAnEventAndChangesNeitherTheInstanceNorTheServiceIndex() async throws {
        try await withLiveAgent { agent in
            let url = "\(agent.baseURL)/v1/services/payment/instances/p1"
            _ = try await http(.PUT, url, json: registration)
            _ = try await http(.PUT, "\(url)/heartbeat")
            let before = try await http(.GET, url).decode(Instance.self)
            let serviceIndexBefore = try #require(try await http(.GET, "\(agent.baseURL)/v1/services/payment").index)

            let posted = try await http(.POST, "\(url)/observations", json: ejection)
            #expect(posted.status == 201, "\(posted.text)")
            let event = try posted.decode(ChangeEvent.self)
            #expect(event.kind == .observed)
            #expect(
                event.observation
                    == Observation(
                        kind: .ejected, reporter: "cart/4711", reason: "5 consecutive failed calls",
                        duration: .seconds(30)))

            let after = try await http(.GET, url).decode(Instance.self)
            #expect(after == before, "an observation must not change the instance")
            #expect(after.status == .passing)
            let lookup = try await http(.GET, "\(agent.baseURL)/v1/services/payment")
            #expect(lookup.index == serviceIndexBefore, "an observation must not move the service's index")

            let log = try await http(.GET, "\(agent.baseURL)/v1/events?since=0")
            let page = try log.decode(EventPage.self)
            #expect(page.events.last?.kind == .observed)
            #expect(page.events.last?.observation?.reporter == "cart/4711")
        }
    }

    @Test func aBlockingQueryOnTheServiceIsNotWokenByAnObservation() async throws {
        try await withLiveAgent { agent in
            let url = "\(agent.baseURL)/v1/services/payment/instances/p1"
            _ = try await http(.PUT, url, json: #"{"address": "10.0.1.5", "port": 8080}"#)
            let index = try #require(try await http(.GET, "\(agent.baseURL)/v1/services/payment").index)
            let started = ContinuousClock.now
            async let held = http(.GET, "\(agent.baseURL)/v1/services/payment?index=\(index)&wait=1s")
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await http(.POST, "\(url)/observations", json: ejection).status == 201)
            let answer = try await held
            #expect(answer.index == index)
            #expect(ContinuousClock.now - started >= .milliseconds(900), "the query returned before its wait")
        }
    }

    @Test func aWatchStreamCarriesTheObservation() async throws {
        try await withLiveAgent { agent in
            let url = "\(agent.baseURL)/v1/services/payment/instances/p1"
            _ = try await http(.PUT, url, json: #"{"address": "10.0.1.5", "port": 8080}"#)
            let stream = try await EventStreamClient("\(agent.baseURL)/v1/services/payment/watch")
            defer { stream.close() }
            #expect(try await stream.next().event == "snapshot")
            _ = try await http(.POST, "\(url)/observations", json: ejection)
            let observed = try await stream.next()
            #expect(observed.event == "observed")
            #expect(observed.data.contains(#""reporter":"cart/4711""#))
        }
    }

    @Test func badObservationsAreRefusedNamingTheField() async throws {
        try await withLiveAgent { agent in
            let url = "\(agent.baseURL)/v1/services/payment/instances/p1"
            _ = try await http(.PUT, url, json: #"{"address": "10.0.1.5", "port": 8080}"#)
            let cases: [(body: String, field: String)] = [
                (#"{"reporter": "cart"}"#, "kind"),
                (#"{"kind": "dead", "reporter": "cart"}"#, "kind"),
                (#"{"kind": "ejected"}"#, "reporter"),
                (#"{"kind": "ejected", "reporter": "a\nb"}"#, "reporter"),
                (#"{"kind": "ejected", "reporter": "cart", "duration": "soon"}"#, "duration"),
                (
                    #"{"kind": "ejected", "reporter": "cart", "reason": "\#(String(repeating: "x", count: 600))"}"#,
                    "reason"
                ),
                (#"{"kind": "ejected", "reporter": "cart", "healthy": false}"#, "healthy"),
            ]
            for (body, field) in cases {
                let answer = try await http(.POST, "\(url)/observations", json: body)
                #expect(answer.status == 422 || answer.status == 400, "\(body): \(answer.text)")
                #expect(answer.errorField == field, "\(body): \(answer.text)")
            }
            let unknown = try await http(
                .POST, "\(agent.baseURL)/v1/services/payment/instances/zz/observations", json: ejection)
            #expect(unknown.status == 404)
            let page = try await http(.GET, "\(agent.baseURL)/v1/events?since=0").decode(EventPage.self)
            #expect(!page.events.contains { $0.kind == .observed }, "a refused observation left an event")
        }
    }
}

extension ObservationTests {
    @Test func aSecondObservationOfTheSameInstanceWithinTheIntervalIsRefusedWithRetryAfter() async throws {
        // A long interval, so a loaded machine cannot stretch the gap between the two reports past it.
        let configuration = AgentConfiguration(
            httpPort: 0, storage: .memory, dns: DNSConfiguration(port: 0), observationInterval: .seconds(60))
        try await withLiveAgent(configuration: configuration) { agent in
            let base = "\(agent.baseURL)/v1/services/payment/instances"
            _ = try await http(.PUT, "\(base)/p1", json: #"{"address": "10.0.1.5", "port": 8080}"#)
            _ = try await http(.PUT, "\(base)/p2", json: #"{"address": "10.0.1.6", "port": 8080}"#)
            #expect(try await http(.POST, "\(base)/p1/observations", json: ejection).status == 201)
            let again = try await http(.POST, "\(base)/p1/observations", json: ejection)
            #expect(again.status == 429)
            #expect(again.errorCode == "rate_limited")
            let retryAfter = again.headers.first(name: "Retry-After").flatMap { Int($0) }
            #expect(retryAfter.map { (30...60).contains($0) } == true, "the rest of the interval, in whole seconds")
            #expect(try await http(.POST, "\(base)/p2/observations", json: ejection).status == 201)
            let page = try await http(.GET, "\(agent.baseURL)/v1/events?since=0").decode(EventPage.self)
            #expect(page.events.filter { $0.kind == .observed }.map(\.id.rawValue) == ["p1", "p2"])
        }
    }

    @Test func anInstancesSlotOpensAgainOnceTheIntervalHasPassed() throws {
        let limiter = ObservationLimiter(interval: .seconds(1))
        let key = InstanceKey(service: try ServiceName("payment"), id: try InstanceID("p1"))
        let start = ContinuousClock.now
        #expect(limiter.admit(key, at: start) == nil)
        #expect(limiter.admit(key, at: start + .milliseconds(400)) == .milliseconds(600))
        #expect(limiter.admit(key, at: start + .milliseconds(999)) == .milliseconds(1))
        #expect(limiter.admit(key, at: start + .milliseconds(1000)) == nil, "open again after the interval")
        #expect(limiter.admit(key, at: start + .milliseconds(1500)) == .milliseconds(500), "counted from the new one")
    }
}

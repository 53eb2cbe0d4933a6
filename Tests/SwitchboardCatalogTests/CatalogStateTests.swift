import Foundation
import SwitchboardCatalog
import SwitchboardCore
import Testing

func makeDefinition(
    _ service: String = "payment",
    _ id: String = "p1",
    port: Int = 8080,
    tags: [String] = [],
    meta: [String: String] = [:],
    checks: [CheckDefinition] = []
) -> InstanceDefinition {
    InstanceDefinition(
        service: try! ServiceName(service),
        id: try! InstanceID(id),
        address: try! HostAddress("10.0.0.1"),
        port: port,
        tags: tags,
        meta: meta,
        checks: checks
    )
}

extension CatalogState {
    /// Plans `mutation` and applies it as committed at the next index, the way a catalog on a store with
    /// consecutive indexes does; returns the change, nil when the mutation changed nothing.
    mutating func planAndApply(_ mutation: CatalogMutation, at now: Date) throws -> ChangeEvent? {
        let planned = try CatalogState.plan(mutation, current: instance(mutation.key), at: now)
        let event = planned?.committed(at: index + 1).event
        if let event { apply(event) }
        return event
    }
}

@Suite("The catalog state machine")
struct CatalogStateTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    @discardableResult
    func apply(_ mutation: CatalogMutation, to state: inout CatalogState) throws -> ChangeEvent? {
        try state.planAndApply(mutation, at: now)
    }

    @Test func registeringBumpsTheGlobalAndServiceIndexAndRecordsAnEvent() throws {
        var state = CatalogState()
        let first = try apply(.register(makeDefinition("payment", "p1"), cas: nil), to: &state)
        let second = try apply(.register(makeDefinition("order", "o1"), cas: nil), to: &state)
        #expect(first?.kind == .added && first?.index == 1)
        #expect(second?.index == 2)
        #expect(state.index == 2)
        #expect(state.entry(for: try ServiceName("payment"))?.index == 1)
        #expect(state.entry(for: try ServiceName("order"))?.index == 2)
        #expect(state.recentEvents.map(\.index) == [1, 2])
    }

    @Test func anIdenticalReRegistrationChangesNothing() throws {
        var state = CatalogState()
        try apply(.register(makeDefinition(), cas: nil), to: &state)
        let again = try apply(.register(makeDefinition(), cas: nil), to: &state)
        #expect(again == nil)
        #expect(state.index == 1)
    }

    @Test func anUpdateKeepsCreateIndexAndTheLiveStateOfUnchangedChecks() throws {
        var state = CatalogState()
        let ttl = CheckDefinition(type: .ttl, ttl: .seconds(10))
        let http = CheckDefinition(
            type: .http, url: "http://x/health", method: "GET", interval: .seconds(1), timeout: .seconds(1))
        let added = try #require(try apply(.register(makeDefinition(checks: [ttl, http]), cas: nil), to: &state))
        // Both checks have results (as the health checker will report them): passing, with output and history.
        var checked = added.instance
        for position in checked.checks.indices {
            checked.checks[position].status = .passing
            checked.checks[position].output = "ok"
            checked.checks[position].history = [CheckTransition(at: now, from: .critical, to: .passing, output: "ok")]
        }
        state.apply(ChangeEvent(index: 2, kind: .status, at: now, instance: checked))

        // The port changes and the HTTP check's interval changes; the TTL check is the same.
        let slower = CheckDefinition(
            type: .http, url: "http://x/health", method: "GET", interval: .seconds(5), timeout: .seconds(1))
        let updated = try #require(
            try apply(.register(makeDefinition(port: 9090, checks: [ttl, slower]), cas: nil), to: &state))
        #expect(updated.kind == .updated)
        #expect(updated.instance.createIndex == 1)
        #expect(updated.instance.modifyIndex == 3)
        #expect(updated.instance.checks[0].status == .passing)
        #expect(updated.instance.checks[0].output == "ok")
        #expect(updated.instance.checks[0].history.count == 1)
        #expect(updated.instance.checks[1].status == .critical, "a changed check starts over")
        #expect(updated.instance.checks[1].history.isEmpty)
        #expect(state.instanceCount == 1)
    }

    @Test func compareAndSetRegistersOnlyAtTheExpectedIndex() throws {
        var state = CatalogState()
        #expect(try apply(.register(makeDefinition(), cas: 0), to: &state) != nil)
        #expect { try apply(.register(makeDefinition(port: 1), cas: 0), to: &state) } throws: {
            ($0 as? CatalogError)?.isConflict == true
        }
        #expect(try apply(.register(makeDefinition(port: 1), cas: 1), to: &state) != nil)
    }

    @Test func deregisteringRemovesTheInstanceAndItsTagsAndUnknownOnesAreNotFound() throws {
        var state = CatalogState()
        try apply(.register(makeDefinition(tags: ["v1"]), cas: nil), to: &state)
        let removed = try apply(.deregister(service: try ServiceName("payment"), id: try InstanceID("p1")), to: &state)
        #expect(removed?.kind == .removed)
        #expect(state.instanceCount == 0)
        #expect(state.entry(for: try ServiceName("payment"))?.tagCounts.isEmpty == true)
        #expect(state.entry(for: try ServiceName("payment"))?.index == 2)
        #expect {
            try apply(.deregister(service: try ServiceName("payment"), id: try InstanceID("p1")), to: &state)
        } throws: {
            ($0 as? CatalogError)?.isInstanceNotFound == true
        }
    }

    @Test func maintenanceTakesPrecedenceOverHealthAndIsIdempotent() throws {
        var state = CatalogState()
        let service = try ServiceName("payment")
        let id = try InstanceID("p1")
        try apply(.register(makeDefinition(), cas: nil), to: &state)
        let on = try apply(.maintenance(service: service, id: id, enabled: true, reason: "deploy"), to: &state)
        #expect(on?.instance.status == .maintenance)
        #expect(on?.instance.maintenance?.reason == "deploy")
        #expect(state.counts.maintenance == 1 && state.counts.passing == 0)
        #expect(try apply(.maintenance(service: service, id: id, enabled: true, reason: "deploy"), to: &state) == nil)
        let off = try apply(.maintenance(service: service, id: id, enabled: false, reason: ""), to: &state)
        #expect(off?.instance.status == .passing)
        #expect(try apply(.maintenance(service: service, id: id, enabled: false, reason: ""), to: &state) == nil)
    }

    @Test func theEventRingIsBoundedAndAnswersOnlyWhatItStillHolds() throws {
        var state = CatalogState(eventCapacity: 3)
        for number in 1...5 {
            try apply(.register(makeDefinition("payment", "p\(number)"), cas: nil), to: &state)
        }
        #expect(state.recentEvents.map(\.index) == [3, 4, 5])
        #expect(state.recentEvents(after: 2, limit: 10)?.map(\.index) == [3, 4, 5])
        #expect(state.recentEvents(after: 3, limit: 1)?.map(\.index) == [4])
        #expect(state.recentEvents(after: 5, limit: 10)?.isEmpty == true)
        #expect(state.recentEvents(after: 1, limit: 10) == nil)
    }

    @Test func queriesFilterByStatusTagAndMeta() throws {
        let healthy = Instance(
            definition: makeDefinition(tags: ["v2", "public"], meta: ["zone": "a"]), createIndex: 1, modifyIndex: 1)
        let critical = Instance(
            definition: makeDefinition(checks: [CheckDefinition(type: .ttl, ttl: .seconds(1))]),
            createIndex: 2,
            modifyIndex: 2
        )
        #expect(InstanceQuery().matches(healthy))
        #expect(!InstanceQuery().matches(critical))
        #expect(InstanceQuery(status: .any).matches(critical))
        #expect(InstanceQuery(status: .only(.critical)).matches(critical))
        #expect(InstanceQuery(tags: ["v2", "public"]).matches(healthy))
        #expect(!InstanceQuery(tags: ["v2", "canary"]).matches(healthy))
        #expect(InstanceQuery(meta: [.init(key: "zone", value: "a")]).matches(healthy))
        #expect(!InstanceQuery(meta: [.init(key: "zone", value: "b")]).matches(healthy))
        #expect(try InstanceQuery.MetaCondition(parsing: "url:http://x").value == "http://x")
        // U+1F3FB combines with the ':' before it into one Character; the split must still find the ':'.
        let combined = try InstanceQuery.MetaCondition(parsing: "k:\u{1F3FB}v")
        #expect(combined.key == "k" && combined.value == "\u{1F3FB}v")
        #expect(throws: SwitchboardCore.ValidationError.self) { try InstanceQuery.MetaCondition(parsing: "novalue") }
        #expect(throws: SwitchboardCore.ValidationError.self) { try InstanceQuery.StatusFilter(parsing: "dead") }
    }

    @Test func restoringFromAStoreRebuildsCountsAndKeepsEachChecksLastStatus() throws {
        var instance = Instance(
            definition: makeDefinition(tags: ["v1"], checks: [CheckDefinition(type: .ttl, ttl: .seconds(5))]),
            createIndex: 4,
            modifyIndex: 7
        )
        instance.checks[0].status = .passing
        let state = CatalogState(restoring: StoredCatalog(instances: [instance], index: 9))
        #expect(state.index == 9)
        #expect(state.counts.passing == 1)
        #expect(state.instance(InstanceKey(service: instance.service, id: instance.id)) == instance)
        #expect(state.entry(for: try ServiceName("payment"))?.index == 7)
        #expect(state.entry(for: try ServiceName("payment"))?.tagCounts == ["v1": 1])
    }

    @Test func instancesRoundTripThroughTheirJSONForm() throws {
        let instance = Instance(
            definition: makeDefinition(
                tags: ["a"],
                meta: ["k": "v"],
                checks: [
                    CheckDefinition(
                        type: .http, url: "http://x/health", method: "GET", interval: .seconds(1), timeout: .seconds(1))
                ]
            ),
            createIndex: 1,
            modifyIndex: 2,
            maintenance: Maintenance(
                reason: "r", since: SwitchboardJSON.millisecondPrecision(Date(timeIntervalSince1970: 1_800_000_000.123))
            )
        )
        let data = try SwitchboardJSON.encoder().encode(instance)
        let text = String(decoding: data, as: UTF8.self)
        #expect(text.contains(#""status":"maintenance""#))
        #expect(text.contains(#""interval":"1s""#))
        #expect(text.contains(#""since":"2027-01-15T08:00:00.123Z""#))
        #expect(try SwitchboardJSON.decoder().decode(Instance.self, from: data) == instance)
    }
}

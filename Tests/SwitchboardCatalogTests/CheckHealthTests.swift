import Foundation
import HashTreeCollections
import SwitchboardCatalog
import SwitchboardCore
import Testing

@Suite("Check results in the catalog")
struct CheckHealthTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000)
    let ttl = CheckDefinition(type: .ttl, ttl: .seconds(10))

    @discardableResult
    func apply(_ mutation: CatalogMutation, to state: inout CatalogState) throws -> ChangeEvent? {
        try state.planAndApply(mutation, at: now)
    }

    func update(
        _ status: HealthStatus, output: String = "", definition: CheckDefinition? = nil
    ) throws
        -> CheckStatusUpdate
    {
        CheckStatusUpdate(
            key: InstanceKey(service: try ServiceName("payment"), id: try InstanceID("p1")), checkID: "p1:ttl",
            definition: definition ?? ttl, status: status, output: output)
    }

    @Test func aStatusChangeIsAnEventWithTheTransitionInTheHistory() throws {
        var state = CatalogState()
        try apply(.register(makeDefinition(checks: [ttl]), cas: nil), to: &state)
        #expect(state.counts.critical == 1)
        let event = try #require(try apply(.checkStatus(try update(.passing, output: "ok")), to: &state))
        #expect(event.kind == .status && event.index == 2)
        #expect(event.instance.status == .passing)
        #expect(
            event.instance.checks[0].history == [CheckTransition(at: now, from: .critical, to: .passing, output: "ok")])
        #expect(state.counts.passing == 1 && state.counts.critical == 0)
        // The same status again is no change, whatever the output.
        #expect(try apply(.checkStatus(try update(.passing, output: "still ok")), to: &state) == nil)
        #expect(state.index == 2)
    }

    @Test func aResultForARedefinedOrMissingCheckChangesNothing() throws {
        var state = CatalogState()
        try apply(.register(makeDefinition(checks: [ttl]), cas: nil), to: &state)
        let stale = try update(.passing, definition: CheckDefinition(type: .ttl, ttl: .seconds(30)))
        #expect(try apply(.checkStatus(stale), to: &state) == nil)
        var other = try update(.passing)
        other.checkID = "p1:http"
        #expect(try apply(.checkStatus(other), to: &state) == nil)
        try apply(.deregister(service: try ServiceName("payment"), id: try InstanceID("p1")), to: &state)
        #expect(throws: CatalogError.self) { try apply(.checkStatus(try update(.passing)), to: &state) }
    }

    @Test func theHistoryKeepsTheLatest32Transitions() throws {
        var state = CatalogState()
        try apply(.register(makeDefinition(checks: [ttl]), cas: nil), to: &state)
        for round in 0..<40 {
            try apply(
                .checkStatus(try update(round.isMultiple(of: 2) ? .passing : .critical, output: "\(round)")), to: &state
            )
        }
        let history = try #require(state.instance(try update(.passing).key)?.checks[0].history)
        #expect(history.count == CheckState.historyLimit)
        #expect(history.first?.output == "8" && history.last?.output == "39")
    }

    @Test func expiryRemovesOnlyAnInstanceWhoseCheckIsStillCritical() throws {
        var state = CatalogState()
        let service = try ServiceName("payment")
        let id = try InstanceID("p1")
        try apply(.register(makeDefinition(checks: [ttl]), cas: nil), to: &state)
        try apply(.checkStatus(try update(.passing)), to: &state)
        #expect(try apply(.expire(service: service, id: id, checkID: "p1:ttl", definition: ttl), to: &state) == nil)
        try apply(.checkStatus(try update(.critical)), to: &state)
        // Not for a check redefined meanwhile (its clock started over).
        let other = CheckDefinition(type: .ttl, ttl: .seconds(30))
        #expect(try apply(.expire(service: service, id: id, checkID: "p1:ttl", definition: other), to: &state) == nil)
        let removed = try apply(.expire(service: service, id: id, checkID: "p1:ttl", definition: ttl), to: &state)
        #expect(removed?.kind == .removed)
        #expect(state.instanceCount == 0)
    }

    @Test func outputIsCappedAt4KiBWithoutSplittingACharacter() {
        let long = String(repeating: "é", count: 3000)  // 2 bytes each
        let capped = CheckState.capped(long)
        #expect(capped.utf8.count == 4096)
        #expect(CheckState.capped(String(repeating: "a", count: 4095) + "é").utf8.count == 4095)
        #expect(CheckState.capped("short") == "short")
    }

    @Test func anOutputOnlyChangeReplacesTheInstanceWithoutANewIndex() throws {
        var state = CatalogState()
        try apply(.register(makeDefinition(checks: [ttl]), cas: nil), to: &state)
        let before = try #require(state.instance(try update(.passing).key))
        var updated = before
        updated.checks[0].output = "load 0.2"
        let replaced = state.replaceOutput(of: before, with: updated, encoded: CommittedChange.encode(updated))
        #expect(replaced)
        #expect(state.instance(try update(.passing).key)?.checks[0].output == "load 0.2")
        #expect(state.index == 1)
        let encoded = state.entry(for: try ServiceName("payment"))?.encodedInstances[try InstanceID("p1")]
        #expect(encoded == CommittedChange.encode(updated))
        // A stale base is refused.
        let replacedAgain = state.replaceOutput(of: before, with: updated, encoded: [])
        #expect(!replacedAgain)
    }

    @Test func thresholdsDampFlapsInBothDirections() {
        let check = CheckDefinition(type: .ttl, ttl: .seconds(1), successesBeforePassing: 2, failuresBeforeCritical: 3)
        var progress = CheckProgress(definition: check, status: .critical)
        #expect(progress.record(.passing) == .critical)
        #expect(progress.record(.passing) == .passing)
        #expect(progress.record(.critical) == .passing)
        #expect(progress.record(.warning) == .passing)
        #expect(progress.record(.passing) == .passing)
        #expect(progress.record(.critical) == .passing)
        #expect(progress.record(.critical) == .passing)
        #expect(progress.record(.warning) == .warning)
        #expect(progress.record(.critical) == .critical)
    }
}

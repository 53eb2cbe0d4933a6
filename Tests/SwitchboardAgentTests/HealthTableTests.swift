import Foundation
import SwitchboardCatalog
import SwitchboardCore
import Testing

@testable import SwitchboardAgent

/// The health checker's timing rules, stepped through with an injected clock.
@Suite struct HealthTableTests {
    let start = ContinuousClock.now

    func at(_ milliseconds: Int64) -> ContinuousClock.Instant { start + .milliseconds(milliseconds) }

    func instance(
        _ id: String, checks: [CheckDefinition], status: HealthStatus? = nil, service: String = "payment"
    ) throws -> Instance {
        let definition = InstanceDefinition(
            service: try ServiceName(service), id: try InstanceID(id), address: try HostAddress("127.0.0.1"),
            port: 8080, checks: checks)
        var instance = Instance(definition: definition, createIndex: 1, modifyIndex: 1)
        if let status {
            for position in instance.checks.indices { instance.checks[position].status = status }
        }
        return instance
    }

    func ttl(_ seconds: Int64 = 1, deregisterAfter: HumanDuration? = nil) -> CheckDefinition {
        CheckDefinition(type: .ttl, ttl: .seconds(seconds), deregisterAfterCritical: deregisterAfter)
    }

    func key(_ instance: Instance) -> InstanceKey { InstanceKey(service: instance.service, id: instance.id) }

    func statuses(_ effects: [HealthEffect]) -> [HealthStatus] {
        effects.compactMap { if case .status(let update) = $0 { update.status } else { nil } }
    }

    func makeTable(minimumInstances: Int = 10) -> HealthTable {
        HealthTable(
            policy: .init(minimumInstances: minimumInstances), maximumStartJitter: .seconds(1), jitter: { _ in .zero })
    }

    @Test func aTTLCheckTurnsCriticalOnceItsHeartbeatIsOverdue() throws {
        var table = makeTable()
        let one = try instance("p1", checks: [ttl()])
        table.track(one, now: at(0))
        guard case .recorded(let effects) = table.heartbeat(key(one), now: at(100)) else {
            Issue.record("heartbeat not recorded")
            return
        }
        #expect(statuses(effects) == [.passing])
        table.apply(
            [
                ChangeEvent(
                    index: 2, kind: .status, at: Date(), instance: try instance("p1", checks: [ttl()], status: .passing)
                )
            ], now: at(110))
        #expect(table.tick(now: at(1090)).isEmpty)
        // Overdue at 1100 ms; held 50 ms so that misses happening together are judged together.
        #expect(table.tick(now: at(1110)).isEmpty)
        let expired = table.tick(now: at(1160))
        #expect(statuses(expired) == [.critical])
        guard case .status(let update) = expired.first else { return }
        #expect(update.output.contains("no heartbeat within the TTL of 1s"))
    }

    @Test func aHeartbeatForAnUnknownInstanceOrOneWithoutTTLCheckIsRefused() throws {
        var table = makeTable()
        let http = try instance(
            "h1", checks: [CheckDefinition(type: .http, url: "http://x/", interval: .seconds(1), timeout: .seconds(1))])
        table.track(http, now: at(0))
        #expect(table.heartbeat(key(http), now: at(1)) == .noTTLCheck)
        #expect(
            table.heartbeat(InstanceKey(service: http.service, id: try InstanceID("nope")), now: at(1))
                == .unknownInstance)
        table.untrack(key(http))
        #expect(table.heartbeat(key(http), now: at(2)) == .unknownInstance)
    }

    @Test func oneFailedProbeAmongPassesDoesNotFlapWhenThreeFailuresAreNeeded() throws {
        var table = makeTable()
        let check = CheckDefinition(
            type: .http, url: "http://x/", interval: .seconds(1), timeout: HumanDuration(milliseconds: 500),
            failuresBeforeCritical: 3)
        let one = try instance("p1", checks: [check], status: .passing)
        table.track(one, now: at(0))
        var time: Int64 = 0
        var written: [HealthStatus] = []
        for result in [HealthStatus.passing, .critical, .passing, .passing, .critical, .critical, .passing] {
            let orders = table.dueProbes(now: at(time))
            #expect(orders.count == 1)
            for order in orders {
                written += statuses(table.recordProbe(order, status: result, output: "probe", now: at(time + 10)))
            }
            time += 1000
        }
        #expect(written.isEmpty)
        #expect(table.status(of: CheckKey(instance: key(one), checkID: one.checks[0].id)) == .passing)
        // Three in a row do turn it critical.
        for _ in 0..<3 {
            for order in table.dueProbes(now: at(time)) {
                written += statuses(table.recordProbe(order, status: .critical, output: "refused", now: at(time + 10)))
            }
            time += 1000
        }
        #expect(written == [.critical])
    }

    @Test func probesKeepAFixedRateAndASlowProbeIsSkippedNotDoubled() throws {
        var table = makeTable()
        let check = CheckDefinition(type: .tcp, target: "127.0.0.1:1", interval: .seconds(1), timeout: .seconds(1))
        table.track(try instance("t1", checks: [check]), now: at(0))
        let first = table.dueProbes(now: at(30))
        #expect(first.map(\.scheduledAt) == [at(0)])
        // The first probe hangs: the round due at 1000 is skipped, not run beside it.
        #expect(table.dueProbes(now: at(1005)).isEmpty)
        #expect(table.skippedProbes == 1)
        _ = table.recordProbe(first[0], status: .passing, output: "", now: at(1500))
        // The schedule stays on whole seconds from the start, whatever the lateness of each round.
        #expect(table.dueProbes(now: at(2040)).map(\.scheduledAt) == [at(2000)])
    }

    @Test func dueProbesBeyondTheConcurrencyLimitWaitTheirTurn() throws {
        var table = makeTable()
        for number in 0..<5 {
            let check = CheckDefinition(type: .tcp, target: "127.0.0.1:1", interval: .seconds(1), timeout: .seconds(1))
            table.track(try instance("t\(number)", checks: [check]), now: at(0))
        }
        #expect(table.dueProbes(now: at(1), limit: 2).count == 2)
        #expect(table.dueProbes(now: at(2), limit: 10).count == 3)
    }

    @Test func aCheckCriticalLongerThanDeregisterAfterCriticalIsExpired() throws {
        var table = makeTable()
        let one = try instance("p1", checks: [ttl(1, deregisterAfter: .seconds(2))])
        table.track(one, now: at(0))
        // Critical from the start (never heartbeated): removed two seconds later.
        #expect(table.tick(now: at(1990)).isEmpty)
        #expect(
            table.tick(now: at(2000)) == [
                .expire(key(one), checkID: one.checks[0].id, definition: one.checks[0].definition)
            ])
    }

    @Test func aCheckThatRecoversBeforeDeregisterAfterCriticalIsKept() throws {
        var table = makeTable()
        let one = try instance("p1", checks: [ttl(1, deregisterAfter: .seconds(2))])
        table.track(one, now: at(0))
        _ = table.heartbeat(key(one), now: at(1000))
        #expect(table.tick(now: at(2000)).isEmpty)
    }

    @Test func afterARestartATTLCheckGetsOneTTLOfGrace() throws {
        var table = makeTable()
        // Restored passing, as the store kept it; no heartbeat since the restart.
        let restored = try instance("p1", checks: [ttl(2)], status: .passing)
        table.track(restored, now: at(0))
        #expect(table.tick(now: at(1999)).isEmpty)
        #expect(statuses(table.tick(now: at(2000)) + table.tick(now: at(2060))) == [.critical])
    }

    @Test func reRegisteringWithTheSameCheckKeepsItsProgressAndANewDefinitionStartsOver() throws {
        var table = makeTable()
        let check = CheckDefinition(type: .ttl, ttl: .seconds(1), failuresBeforeCritical: 2)
        let one = try instance("p1", checks: [check], status: .passing)
        table.track(one, now: at(0))
        let checkKey = CheckKey(instance: key(one), checkID: one.checks[0].id)
        _ = table.heartbeat(key(one), status: .critical, now: at(10))
        table.track(one, now: at(20))
        // The second failure in a row counts: the first was kept across the identical re-registration.
        #expect(statuses(table.heartbeat(key(one), status: .critical, now: at(30)).effects) == [.critical])
        let redefined = try instance("p1", checks: [ttl(5)], status: .passing)
        table.track(redefined, now: at(40))
        #expect(table.status(of: checkKey) == .passing)
        // A new definition starts over: its first deadline is one new TTL (5 s) after it was tracked.
        #expect(table.tick(now: at(5030)).isEmpty)
        #expect(statuses(table.tick(now: at(5040)) + table.tick(now: at(5100))) == [.critical])
    }

    @Test func massHeartbeatLossPausesExpiryAndRecoveryResumesIt() throws {
        var table = makeTable()
        let instances = try (0..<100).map { try instance("i\($0)", checks: [ttl()], status: .passing) }
        for one in instances { table.track(one, now: at(0)) }
        for one in instances { _ = table.heartbeat(key(one), now: at(500)) }
        // 60 stop heartbeating (the agent's network dropped them); 40 go on.
        for one in instances[60...] { _ = table.heartbeat(key(one), now: at(1400)) }
        let effects = table.tick(now: at(1510)) + table.tick(now: at(1560)) + table.tick(now: at(1700))
        #expect(effects.contains(.selfPreservation(active: true, missing: 60, population: 100)))
        #expect(statuses(effects).isEmpty)
        #expect(table.selfPreservation.active)
        // Still paused a while later: nothing expires.
        for one in instances[60...] { _ = table.heartbeat(key(one), now: at(2300)) }
        #expect(statuses(table.tick(now: at(3000))).isEmpty)
        // Heartbeats come back.
        for one in instances { _ = table.heartbeat(key(one), now: at(3100)) }
        let recovered = table.tick(now: at(3110))
        #expect(recovered.contains(.selfPreservation(active: false, missing: 0, population: 100)))
        #expect(!table.selfPreservation.active)
        // Normal expiry again: one instance that stops is expired on its own.
        for one in instances.dropFirst() { _ = table.heartbeat(key(one), now: at(4000)) }
        let single = table.tick(now: at(4110)) + table.tick(now: at(4170))
        #expect(statuses(single) == [.critical])
        #expect(!table.selfPreservation.active)
    }

    @Test func aSmallFleetLosingMostInstancesIsAnOutageNotSelfPreservation() throws {
        var table = makeTable(minimumInstances: 10)
        let instances = try (0..<4).map { try instance("i\($0)", checks: [ttl()], status: .passing) }
        for one in instances { table.track(one, now: at(0)) }
        let effects = table.tick(now: at(1000)) + table.tick(now: at(1060))
        #expect(statuses(effects) == [.critical, .critical, .critical, .critical])
        #expect(!table.selfPreservation.active)
    }

    @Test func outputChangesWithoutAStatusChangeAreOutputOnly() throws {
        var table = makeTable()
        let one = try instance("p1", checks: [ttl()], status: .passing)
        table.track(one, now: at(0))
        let effects = table.heartbeat(key(one), output: "load 0.3", now: at(10)).effects
        #expect(effects.count == 1)
        guard case .output(let update) = effects.first else {
            Issue.record("expected an output-only effect, got \(effects)")
            return
        }
        #expect(update.output == "load 0.3" && update.status == .passing)
        #expect(table.heartbeat(key(one), output: "load 0.3", now: at(20)).effects.isEmpty)
    }
}

extension HeartbeatOutcome {
    var effects: [HealthEffect] {
        if case .recorded(let effects) = self { effects } else { [] }
    }
}

import SwitchboardCore
import Testing

@testable import SwitchboardClient

/// Picks the first candidate and remembers every set it was asked to pick from.
private struct FirstCandidateBalancer: LoadBalancer {
    var seen: [InstanceSet] = []

    mutating func pick(from candidates: InstanceSet, context: PickContext) -> Instance? {
        seen.append(candidates)
        return candidates.instances.first
    }
}

@Suite struct InstancePickerTests {
    let start = ContinuousClock.now
    let a = testInstance("a")
    let b = testInstance("b")
    let c = testInstance("c")
    /// One failure ejects; at most every instance may be out.
    let ejectAtOnce = OutlierDetector.Configuration(
        consecutiveFailures: 1, baseEjection: .seconds(30), maximumEjection: .seconds(30), maximumEjectedShare: 1)
    /// Two failures out of two open the circuit for 5 s; one trial call at a time when half-open.
    let breaker = CircuitBreaker.Configuration(
        failureRateThreshold: 0.5, minimumCalls: 2, window: .seconds(10), openDuration: .seconds(5), halfOpenProbes: 1)

    func at(_ seconds: Double) -> ContinuousClock.Instant { start + .milliseconds(Int64(seconds * 1000)) }

    /// Picks `times` times from `set` at `time`, recording a success for each; returns the ids picked.
    func picks(
        _ picker: inout InstancePicker, from set: InstanceSet, times: Int, avoiding tried: Set<InstanceID> = [],
        at time: Double
    ) -> [String] {
        var balancer = RoundRobinBalancer()
        return (0..<times).compactMap { _ in
            guard let pick = picker.pick(from: set, outOf: set, avoiding: tried, balancer: &balancer, at: at(time))
            else { return nil }
            picker.record(true, on: pick.instance.id, permit: pick.permit, knownInstances: set.count, at: at(time))
            return pick.instance.id.rawValue
        }
    }

    /// Picks `instance` (every other one counts as tried) and records a failure; returns what that changed.
    func failCall(
        to instance: Instance, in set: InstanceSet, _ picker: inout InstancePicker, at time: Double
    ) throws -> InstancePicker.Effects {
        var balancer = RoundRobinBalancer()
        let others = Set(set.instances.map(\.id)).subtracting([instance.id])
        let pick = try #require(
            picker.pick(from: set, outOf: set, avoiding: others, balancer: &balancer, at: at(time)))
        #expect(pick.instance.id == instance.id)
        return picker.record(false, on: instance.id, permit: pick.permit, knownInstances: set.count, at: at(time))
    }

    @Test func ejectedInstancesAreNotPicked() throws {
        var picker = InstancePicker(outlierDetection: ejectAtOnce, circuitBreaker: nil)
        let set = InstanceSet([a, b, c])
        let effects = try failCall(to: b, in: set, &picker, at: 0)
        #expect(effects.ejection?.instance == b.id && effects.transition == nil)
        let picked = picks(&picker, from: set, times: 30, at: 1)
        #expect(picked.count == 30 && !picked.contains("b"))
        // The ejection over, it is picked again.
        #expect(picks(&picker, from: set, times: 30, at: 31).contains("b"))
    }

    @Test func aTriedInstanceIsAvoidedWhileAnotherRemains() {
        var picker = InstancePicker(outlierDetection: nil, circuitBreaker: breaker)
        let set = InstanceSet([a, b])
        #expect(Set(picks(&picker, from: set, times: 10, avoiding: [a.id], at: 0)) == ["b"])
        // Every one tried: back to a tried one rather than nowhere.
        #expect(picks(&picker, from: set, times: 10, avoiding: [a.id, b.id], at: 0).count == 10)
    }

    @Test func pruningOnANewGenerationForgetsInstancesThatLeft() throws {
        // Two failures eject b and open its circuit at once.
        var ejectAtTwo = ejectAtOnce
        ejectAtTwo.consecutiveFailures = 2
        var picker = InstancePicker(outlierDetection: ejectAtTwo, circuitBreaker: breaker)
        let both = InstanceSet([a, b])
        _ = try failCall(to: b, in: both, &picker, at: 0)
        #expect(try failCall(to: b, in: both, &picker, at: 0).transition == .opened)
        #expect(picker.outliers?.isEjected(b.id, at: at(1)) == true)
        #expect(picker.circuitState(of: b.id, at: at(1)) == .open(until: at(5)))
        // A set of the same instances under the same generation prunes nothing.
        let prunedAgain = picker.prune(to: both)
        #expect(!prunedAgain)
        // b leaves: its records go. When it comes back it starts clean, picked at once.
        #expect(picks(&picker, from: InstanceSet([a]), times: 1, at: 1) == ["a"])
        #expect(picker.outliers?.isEjected(b.id, at: at(1)) == false)
        #expect(picker.circuitState(of: b.id, at: at(1)) == .closed)
        #expect(picks(&picker, from: InstanceSet([a, b]), times: 1, avoiding: [a.id], at: 1) == ["b"])
    }

    @Test func pruningFollowsTheWholeServiceNotTheCandidates() throws {
        var picker = InstancePicker(outlierDetection: ejectAtOnce, circuitBreaker: nil)
        let all = InstanceSet([a, b, c])
        _ = try failCall(to: c, in: all, &picker, at: 0)
        // A route's share of the service leaves c out; c is still an instance of the service, still ejected.
        var balancer = RoundRobinBalancer()
        let share = InstanceSet([a, b])
        let pick = picker.pick(from: share, outOf: all, avoiding: [], balancer: &balancer, at: at(1))
        #expect(pick.map { share.instances.map(\.id).contains($0.instance.id) } == true)
        #expect(picker.outliers?.isEjected(c.id, at: at(1)) == true)
    }

    @Test func anOpenCircuitIsSkippedAndAHalfOpenOneAdmitsATrialCall() throws {
        var picker = InstancePicker(outlierDetection: nil, circuitBreaker: breaker)
        let set = InstanceSet([a, b])
        _ = try failCall(to: a, in: set, &picker, at: 0)
        #expect(try failCall(to: a, in: set, &picker, at: 0).transition == .opened)
        // Open: a is skipped.
        #expect(Set(picks(&picker, from: set, times: 10, at: 1)) == ["b"])
        // Half-open after 5 s: one trial call goes to a, and while it runs a gets no other.
        var balancer = RoundRobinBalancer()
        let trial = try #require(
            picker.pick(from: set, outOf: set, avoiding: [b.id], balancer: &balancer, at: at(6)))
        #expect(trial.instance.id == a.id && trial.permit?.isProbe == true)
        #expect(picker.pick(from: InstanceSet([a]), outOf: set, avoiding: [], balancer: &balancer, at: at(6)) == nil)
        // The trial succeeds: the circuit closes and a takes its share again.
        let effects = picker.record(true, on: a.id, permit: trial.permit, knownInstances: 2, at: at(6))
        #expect(effects.transition == .closed)
        #expect(Set(picks(&picker, from: set, times: 10, at: 7)) == ["a", "b"])
    }

    @Test func anAbandonedPermitFreesTheTrialSlot() throws {
        var picker = InstancePicker(outlierDetection: nil, circuitBreaker: breaker)
        let set = InstanceSet([a, b])
        _ = try failCall(to: a, in: set, &picker, at: 0)
        _ = try failCall(to: a, in: set, &picker, at: 0)
        var balancer = RoundRobinBalancer()
        let onlyA = InstanceSet([a])
        let trial = try #require(picker.pick(from: onlyA, outOf: set, avoiding: [], balancer: &balancer, at: at(6)))
        #expect(picker.pick(from: onlyA, outOf: set, avoiding: [], balancer: &balancer, at: at(6)) == nil)
        // The caller went away: no verdict, and the slot is free for the next trial call.
        picker.abandon(try #require(trial.permit), on: a.id)
        let next = picker.pick(from: onlyA, outOf: set, avoiding: [], balancer: &balancer, at: at(6))
        #expect(next?.instance.id == a.id && next?.permit?.isProbe == true)
    }

    @Test func theBalancerKeepsItsCandidateSetWhenNoCandidateIsBehindAnOpenCircuit() throws {
        var picker = InstancePicker(outlierDetection: nil, circuitBreaker: breaker)
        let all = InstanceSet([a, b, c])
        _ = try failCall(to: a, in: all, &picker, at: 0)
        _ = try failCall(to: a, in: all, &picker, at: 0)
        // A route's share without a: the balancer is given that very set (its per-set state holds), not a copy.
        var balancer = FirstCandidateBalancer()
        let share = InstanceSet([b, c])
        for _ in 0..<3 {
            let pick = picker.pick(from: share, outOf: all, avoiding: [], balancer: &balancer, at: at(1))
            #expect(pick?.instance.id == b.id)
        }
        #expect(balancer.seen.map(\.generation) == Array(repeating: share.generation, count: 3))
        // With a among the candidates it is left out.
        _ = picker.pick(from: all, outOf: all, avoiding: [], balancer: &balancer, at: at(1))
        #expect(balancer.seen.last.map { $0.instances.map(\.id) } == [b.id, c.id])
    }
}

import SwitchboardCore
import Testing

@testable import SwitchboardClient

@Suite struct LoadBalancerTests {
    let weighted = InstanceSet([
        testInstance("a", weight: 1), testInstance("b", weight: 3), testInstance("c", weight: 6),
    ])
    let equal = InstanceSet((0..<4).map { testInstance("i\($0)") })

    /// Asserts each id got its weight's share of `picks`, within 5% of that share.
    func expectWeightedShares(_ counts: [String: Int], picks: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        let weights = ["a": 1.0, "b": 3.0, "c": 6.0]
        for (id, weight) in weights {
            let expected = Double(picks) * weight / 10
            let actual = Double(counts[id, default: 0])
            #expect(
                abs(actual - expected) <= expected * 0.05, "\(id): \(actual) of \(picks), expected \(expected)",
                sourceLocation: sourceLocation)
        }
    }

    @Test func everyBalancerAnswersNilForNoCandidatesAndTheOnlyOneForOne() {
        let none = InstanceSet([])
        let one = InstanceSet([testInstance("only")])
        var balancers: [any LoadBalancer] = [
            RoundRobinBalancer(), RandomBalancer(), WeightedRoundRobinBalancer(), LeastRequestsBalancer(),
            ConsistentHashBalancer(), ZoneAwareBalancer(localZone: "z1", inner: RoundRobinBalancer()),
        ]
        for index in balancers.indices {
            #expect(balancers[index].pick(from: none, context: PickContext(hashKey: "k")) == nil)
            #expect(balancers[index].pick(from: one, context: PickContext(hashKey: "k"))?.id.rawValue == "only")
        }
    }

    @Test func roundRobinGivesEachInstanceTheSameNumberOfCalls() {
        var balancer = RoundRobinBalancer()
        let counts = shares(10_000) { balancer.pick(from: equal) }
        #expect(counts.values.allSatisfy { $0 == 2_500 }, "\(counts)")
    }

    @Test func randomSplitsCallsInProportionToWeight() {
        var balancer = RandomBalancer(seed: 42)
        expectWeightedShares(shares(10_000) { balancer.pick(from: weighted) }, picks: 10_000)
    }

    @Test func smoothWeightedRoundRobinGivesExactSharesEveryCycle() {
        var balancer = WeightedRoundRobinBalancer()
        let counts = shares(10_000) { balancer.pick(from: weighted) }
        #expect(counts == ["a": 1_000, "b": 3_000, "c": 6_000])
    }

    @Test func smoothWeightedRoundRobinInterleavesInsteadOfSendingRuns() {
        var balancer = WeightedRoundRobinBalancer()
        let set = InstanceSet([testInstance("a", weight: 5), testInstance("b"), testInstance("c")])
        let order = (0..<14).map { _ in balancer.pick(from: set)!.id.rawValue }.joined()
        // nginx's smooth order for 5:1:1, every cycle; a plain weighted round robin would send aaaaabc.
        #expect(order == "aabacaa" + "aabacaa")
    }

    @Test func smoothWeightedRoundRobinKeepsItsCycleWhenTheSetIsRebuiltWithTheSameInstances() {
        var balancer = WeightedRoundRobinBalancer()
        var counts: [String: Int] = [:]
        for _ in 0..<1_000 {
            // A fresh set every 7 picks, as when the discovery cache sees unrelated changes.
            let set = InstanceSet(weighted.instances)
            for _ in 0..<7 {
                counts[balancer.pick(from: set)!.id.rawValue, default: 0] += 1
            }
        }
        expectWeightedShares(counts, picks: 7_000)
    }

    @Test func leastRequestsAvoidsTheInstanceWithCallsPilingUp() {
        var balancer = LeastRequestsBalancer(seed: 7)
        let slow = equal.instances[0].id
        for _ in 0..<50 { balancer.callStarted(on: slow) }
        let counts = shares(10_000) { balancer.pick(from: equal) }
        // Two random choices: the busy instance only wins when both choices are it, which they never are.
        #expect(counts[slow.rawValue, default: 0] == 0)
        for instance in equal.instances.dropFirst() {
            #expect(abs(counts[instance.id.rawValue, default: 0] - 3_333) < 333, "\(counts)")
        }
        for _ in 0..<50 { balancer.callFinished(on: slow) }
        #expect(balancer.callsInFlight(on: slow) == 0)
    }

    @Test func leastRequestsSpreadsEvenlyWhenNothingIsInFlight() {
        var balancer = LeastRequestsBalancer(seed: 3)
        let counts = shares(10_000) { balancer.pick(from: equal) }
        #expect(counts.values.allSatisfy { abs($0 - 2_500) < 125 }, "\(counts)")
    }

    @Test func consistentHashSendsAKeyToTheSameInstanceEveryTime() {
        var balancer = ConsistentHashBalancer()
        let set = InstanceSet((0..<10).map { testInstance("i\($0)") })
        for key in 0..<100 {
            let first = balancer.pick(from: set, context: PickContext(hashKey: "user-\(key)"))
            for _ in 0..<5 {
                #expect(balancer.pick(from: set, context: PickContext(hashKey: "user-\(key)"))?.id == first?.id)
            }
        }
        // Another client (another balancer, the list in another order) agrees on every key.
        var other = ConsistentHashBalancer()
        let reversed = InstanceSet(set.instances.reversed())
        for key in 0..<1_000 {
            let context = PickContext(hashKey: "user-\(key)")
            #expect(balancer.pick(from: set, context: context)?.id == other.pick(from: reversed, context: context)?.id)
        }
    }

    @Test func consistentHashMovesOnlyTheLeavingInstancesKeys() {
        let instanceCount = 10
        let keys = (0..<10_000).map { "session-\($0)" }
        var balancer = ConsistentHashBalancer()
        let before = InstanceSet((0..<instanceCount).map { testInstance("i\($0)") })
        let owners = keys.map { balancer.pick(from: before, context: PickContext(hashKey: $0))!.id }
        let after = InstanceSet(before.instances.filter { $0.id.rawValue != "i3" })
        var moved = 0
        for (key, owner) in zip(keys, owners) {
            let now = balancer.pick(from: after, context: PickContext(hashKey: key))!.id
            if now != owner {
                moved += 1
                #expect(owner.rawValue == "i3", "\(key) moved from \(owner), which did not leave")
            }
        }
        // About 1/N of the keys (the leaving instance's share), allowing for the ring's unevenness.
        #expect(moved > 0)
        #expect(Double(moved) <= Double(keys.count) / Double(instanceCount) * 1.3, "\(moved) keys moved")
    }

    @Test func consistentHashSpreadsKeysRoughlyEvenly() {
        var balancer = ConsistentHashBalancer()
        let set = InstanceSet((0..<10).map { testInstance("i\($0)") })
        var key = 0
        let counts = shares(10_000) {
            key += 1
            return balancer.pick(from: set, context: PickContext(hashKey: "k\(key)"))
        }
        #expect(counts.count == 10)
        #expect(counts.values.allSatisfy { $0 > 700 && $0 < 1_300 }, "\(counts)")
    }

    @Test func zoneAwareKeepsCallsLocalWhileTheLocalZoneHasItsShare() {
        let set = InstanceSet([
            testInstance("a1", zone: "a"), testInstance("a2", zone: "a"),
            testInstance("b1", zone: "b"), testInstance("b2", zone: "b"),
        ])
        var balancer = ZoneAwareBalancer(localZone: "a", inner: RoundRobinBalancer(), seed: 1)
        let counts = shares(1_000) { balancer.pick(from: set) }
        #expect(counts == ["a1": 500, "a2": 500])
        #expect(balancer.currentLocalShare == 1)
    }

    @Test func zoneAwareSpillsOverInProportionWhenTheLocalZoneIsThin() {
        // Zone a lost two of its three instances: it can take a third of an even share.
        let set = InstanceSet([
            testInstance("a1", zone: "a"),
            testInstance("b1", zone: "b"), testInstance("b2", zone: "b"), testInstance("b3", zone: "b"),
            testInstance("c1", zone: "c"), testInstance("c2", zone: "c"),
        ])
        var balancer = ZoneAwareBalancer(localZone: "a", inner: RoundRobinBalancer(), seed: 9)
        let counts = shares(10_000) { balancer.pick(from: set) }
        #expect(abs(balancer.currentLocalShare - 0.5) < 1e-9)  // 1 local instance, an even share is 6 / 3 = 2
        #expect(abs(counts["a1", default: 0] - 5_000) < 250, "\(counts)")
    }

    @Test func zoneAwareIgnoresZonesWhenTooFewLocalInstancesAreLeft() {
        let set = InstanceSet([
            testInstance("a1", zone: "a"), testInstance("b1", zone: "b"), testInstance("b2", zone: "b"),
        ])
        var balancer = ZoneAwareBalancer(
            localZone: "a", inner: RoundRobinBalancer(), minimumLocalInstances: 2, seed: 1)
        let counts = shares(3_000) { balancer.pick(from: set) }
        #expect(counts == ["a1": 1_000, "b1": 1_000, "b2": 1_000])
    }
}

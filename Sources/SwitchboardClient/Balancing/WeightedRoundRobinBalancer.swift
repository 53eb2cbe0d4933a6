import SwitchboardCore

/// Smooth weighted round robin (nginx's): each instance gets exactly its share of every cycle of picks, spread
/// out rather than in runs, so a weight-5 instance next to a weight-1 one never takes five calls in a row.
///
/// Every pick, each instance's current weight grows by its weight; the highest is picked and loses the total.
/// When the set changes, instances still in it keep their current weight, so a change elsewhere does not restart
/// the cycle.
public struct WeightedRoundRobinBalancer: LoadBalancer {
    private var generation: UInt64 = 0
    private var weights: [Int] = []
    private var current: [Int] = []
    private var ids: [InstanceID] = []
    private var total = 0

    public init() {}

    public mutating func pick(from candidates: InstanceSet, context: PickContext) -> Instance? {
        guard !candidates.isEmpty else { return nil }
        if generation != candidates.generation { adopt(candidates) }
        var best = 0
        for index in current.indices {
            current[index] &+= weights[index]
            if current[index] > current[best] { best = index }
        }
        current[best] &-= total
        return candidates.instances[best]
    }

    private mutating func adopt(_ candidates: InstanceSet) {
        var kept: [InstanceID: Int] = [:]
        for (id, weight) in zip(ids, current) { kept[id] = weight }
        generation = candidates.generation
        ids = candidates.instances.map(\.id)
        weights = candidates.instances.map(\.balancingWeight)
        current = ids.map { kept[$0] ?? 0 }
        total = weights.reduce(0, +)
    }
}

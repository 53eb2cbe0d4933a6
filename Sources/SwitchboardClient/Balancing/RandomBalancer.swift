import SwitchboardCore

/// Picks at random in proportion to weight: no shared order to synchronise, and no pattern for many callers to
/// fall into step on.
public struct RandomBalancer: LoadBalancer {
    private var random: FastRandom
    private var generation: UInt64 = 0
    /// Running totals of the weights of the current set; the last one is the sum.
    private var cumulativeWeights: [Int] = []

    /// `seed` replays the same picks (tests); nil seeds from the system.
    public init(seed: UInt64? = nil) {
        random = FastRandom(seed: seed)
    }

    public mutating func pick(from candidates: InstanceSet, context: PickContext) -> Instance? {
        guard !candidates.isEmpty else { return nil }
        if generation != candidates.generation {
            generation = candidates.generation
            var total = 0
            cumulativeWeights = candidates.instances.map {
                total += $0.balancingWeight
                return total
            }
        }
        let target = random.below(cumulativeWeights[cumulativeWeights.count - 1])
        // The first instance whose running total passes the target.
        var low = 0
        var high = cumulativeWeights.count - 1
        while low < high {
            let middle = (low + high) / 2
            if cumulativeWeights[middle] > target { high = middle } else { low = middle + 1 }
        }
        return candidates.instances[low]
    }
}

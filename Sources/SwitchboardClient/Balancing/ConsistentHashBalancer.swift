import SwitchboardCore

/// Sends every call with the same ``PickContext/hashKey`` to the same instance (sticky sessions, per-user
/// caches), and when an instance leaves or joins moves only the keys it owned or takes over: about 1/N of them.
///
/// A hash ring: each instance owns `pointsPerInstance` points placed by a stable hash of its id, and a key belongs
/// to the first point at or after the key's hash. The ring depends only on the set of ids, so every client of a
/// service agrees on the owner of a key. Calls without a key are spread at random.
public struct ConsistentHashBalancer: LoadBalancer {
    private struct Point {
        var hash: UInt64
        var instance: Int
    }

    /// More points spread keys more evenly (share deviation falls as 1/sqrt(points)) at the cost of memory and
    /// rebuild time when the set changes.
    public let pointsPerInstance: Int
    private var generation: UInt64 = 0
    private var ring: [Point] = []
    private var fallback: RandomBalancer

    /// `pointsPerInstance` of 160 keeps each instance's share within about 10% of even.
    public init(pointsPerInstance: Int = 160, seed: UInt64? = nil) {
        self.pointsPerInstance = max(1, pointsPerInstance)
        fallback = RandomBalancer(seed: seed)
    }

    public mutating func pick(from candidates: InstanceSet, context: PickContext) -> Instance? {
        guard !candidates.isEmpty else { return nil }
        guard let key = context.hashKey else { return fallback.pick(from: candidates, context: context) }
        if generation != candidates.generation { build(candidates) }
        let hash = StableHash.of(key)
        var low = 0
        var high = ring.count
        while low < high {
            let middle = (low + high) / 2
            if ring[middle].hash < hash { low = middle + 1 } else { high = middle }
        }
        return candidates.instances[ring[low == ring.count ? 0 : low].instance]
    }

    private mutating func build(_ candidates: InstanceSet) {
        generation = candidates.generation
        ring.removeAll(keepingCapacity: true)
        ring.reserveCapacity(candidates.count * pointsPerInstance)
        for (index, instance) in candidates.instances.enumerated() {
            let base = StableHash.of(instance.id.rawValue)
            for point in 0..<pointsPerInstance {
                ring.append(
                    Point(hash: StableHash.mix(base &+ UInt64(point) &* 0x9E37_79B9_7F4A_7C15), instance: index))
            }
        }
        // Ties (vanishingly rare) break on the id, so the order never depends on the registry's list order.
        ring.sort {
            $0.hash != $1.hash
                ? $0.hash < $1.hash
                : candidates.instances[$0.instance].id < candidates.instances[$1.instance].id
        }
    }
}

import SwitchboardCore

/// Power of two choices on in-flight calls: picks two instances at random and sends the call to the one with
/// fewer calls under way.
///
/// It steers away from a slow instance (its calls pile up) without the herd effect of always choosing the least
/// busy one, and costs two lookups per pick. It needs to be told when calls start and end
/// (``callStarted(on:)`` / ``callFinished(on:)``); the client's `execute` does that.
public struct LeastRequestsBalancer: LoadBalancer {
    private var random: FastRandom
    private var inFlight: [InstanceID: Int] = [:]

    /// `seed` replays the same picks (tests); nil seeds from the system.
    public init(seed: UInt64? = nil) {
        random = FastRandom(seed: seed)
    }

    public mutating func pick(from candidates: InstanceSet, context: PickContext) -> Instance? {
        let count = candidates.count
        guard count > 1 else { return candidates.instances.first }
        let first = random.below(count)
        var second = random.below(count - 1)
        if second >= first { second += 1 }
        let a = candidates.instances[first]
        let b = candidates.instances[second]
        return inFlight[b.id, default: 0] < inFlight[a.id, default: 0] ? b : a
    }

    public mutating func callStarted(on instance: InstanceID) {
        inFlight[instance, default: 0] += 1
    }

    public mutating func callFinished(on instance: InstanceID) {
        guard let count = inFlight[instance] else { return }
        inFlight[instance] = count > 1 ? count - 1 : nil
    }

    /// Calls under way to `instance`, as this balancer counts them.
    public func callsInFlight(on instance: InstanceID) -> Int { inFlight[instance, default: 0] }
}

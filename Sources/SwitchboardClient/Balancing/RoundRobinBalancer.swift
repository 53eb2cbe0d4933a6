import SwitchboardCore

/// Gives each instance a call in turn, ignoring weights: the simplest fair spread for equal instances.
public struct RoundRobinBalancer: LoadBalancer {
    private var next = 0

    /// A balancer starting at a random position, so many callers started together do not all hit the first
    /// instance first.
    public init() {
        var random = FastRandom()
        next = random.below(1 << 16)
    }

    public mutating func pick(from candidates: InstanceSet, context: PickContext) -> Instance? {
        guard !candidates.isEmpty else { return nil }
        defer { next &+= 1 }
        return candidates.instances[Int(UInt(bitPattern: next) % UInt(candidates.count))]
    }
}

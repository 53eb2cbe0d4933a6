import SwitchboardCore

/// Picks the instance for one call out of the healthy candidates.
///
/// A balancer is a value holding its own state (counters, current weights, in-flight counts); a call site keeps
/// one behind a lock and feeds it the latest ``InstanceSet`` on every pick. Pick one per call site:
///
/// | balancer | picks | uses weight |
/// |---|---|---|
/// | ``RoundRobinBalancer`` | each in turn | no |
/// | ``RandomBalancer`` | at random | yes |
/// | ``WeightedRoundRobinBalancer`` | each in turn, in proportion to weight, evenly interleaved | yes |
/// | ``LeastRequestsBalancer`` | the less busy of two random ones | no |
/// | ``ConsistentHashBalancer`` | the owner of the call's ``PickContext/hashKey`` | no |
/// | ``ZoneAwareBalancer`` | the caller's zone first, through another balancer | as the inner one |
public protocol LoadBalancer: Sendable {
    /// The instance for one call, or nil when there is none.
    mutating func pick(from candidates: InstanceSet, context: PickContext) -> Instance?
    /// A call to `instance` started (balancers that weigh load count it).
    mutating func callStarted(on instance: InstanceID)
    /// A call to `instance` ended, however it ended.
    mutating func callFinished(on instance: InstanceID)
}

extension LoadBalancer {
    public mutating func callStarted(on instance: InstanceID) {}
    public mutating func callFinished(on instance: InstanceID) {}

    /// The instance for one call without a hash key.
    public mutating func pick(from candidates: InstanceSet) -> Instance? {
        pick(from: candidates, context: PickContext())
    }
}

/// What a balancer may know about the call it picks for.
public struct PickContext: Sendable, Hashable {
    /// The key ``ConsistentHashBalancer`` maps to an instance (a user or session id, for sticky routing).
    public var hashKey: String?

    public init(hashKey: String? = nil) {
        self.hashKey = hashKey
    }
}

extension Instance {
    /// The weight balancers use: the registered one, never below 1.
    var balancingWeight: Int { Swift.max(1, definition.weight) }
}

import SwitchboardCore
import Synchronization

/// The instances a balancer picks from, stamped with a generation that changes whenever the list does.
///
/// Balancers keep per-list state (weights, hash rings, zone splits) and rebuild it only when the generation
/// changes, so a pick stays a few array reads however many instances there are. Every `InstanceSet` created gets a
/// new generation; the discovery cache creates one per change it sees, and a caller that filters a list (for
/// example to leave out an instance a retry already tried) creates a new one for the result.
public struct InstanceSet: Sendable {
    /// The candidates, in the order the registry gave them.
    public let instances: [Instance]
    /// Unique to this list within the process.
    public let generation: UInt64

    private static let nextGeneration = Atomic<UInt64>(1)

    /// A set holding `instances` under a new generation.
    public init(_ instances: [Instance]) {
        self.instances = instances
        self.generation = Self.nextGeneration.add(1, ordering: .relaxed).oldValue
    }

    /// This set without the instances in `tried`, unless that leaves none: a retry goes to an instance not tried
    /// yet while there is one, and back to a tried one rather than nowhere.
    public func preferringOthers(than tried: Set<InstanceID>) -> InstanceSet {
        guard !tried.isEmpty, instances.contains(where: { tried.contains($0.id) }),
            instances.contains(where: { !tried.contains($0.id) })
        else { return self }
        return InstanceSet(instances.filter { !tried.contains($0.id) })
    }

    public var isEmpty: Bool { instances.isEmpty }
    public var count: Int { instances.count }
}

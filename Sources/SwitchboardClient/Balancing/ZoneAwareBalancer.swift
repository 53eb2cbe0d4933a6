import SwitchboardCore

/// Keeps calls in the caller's zone (the instance meta `zone`, by default) while that zone can take them, and
/// spills the rest over to other zones when it is thin, choosing within each group through another balancer.
///
/// Like Envoy's zone-aware routing: with Z zones and N instances an even spread gives each zone N/Z. A local zone
/// with at least that many healthy instances takes every call; one with fewer takes its proportional share and the
/// rest go to the other zones, so a zone that lost instances is not overloaded by its own callers. With fewer than
/// `minimumLocalInstances` local instances, or none elsewhere, the preference is dropped and all candidates are
/// balanced together. Candidates are healthy instances already, so an unhealthy local instance counts as gone.
public struct ZoneAwareBalancer<Inner: LoadBalancer>: LoadBalancer {
    /// The caller's zone.
    public let localZone: String
    /// The meta key holding an instance's zone.
    public let zoneKey: String
    /// Below this many local instances, zones are ignored.
    public let minimumLocalInstances: Int

    private var local: Inner
    private var remote: Inner
    private var all: Inner
    private var random: FastRandom
    private var generation: UInt64 = 0
    private var localSet = InstanceSet([])
    private var remoteSet = InstanceSet([])
    /// The share of calls kept local for the current set (0 means no preference).
    private var localShare = 0.0

    /// A balancer preferring `localZone`, choosing within a group with a copy of `inner`.
    public init(
        localZone: String, inner: Inner, zoneKey: String = "zone", minimumLocalInstances: Int = 1,
        seed: UInt64? = nil
    ) {
        self.localZone = localZone
        self.zoneKey = zoneKey
        self.minimumLocalInstances = max(1, minimumLocalInstances)
        local = inner
        remote = inner
        all = inner
        random = FastRandom(seed: seed)
    }

    public mutating func pick(from candidates: InstanceSet, context: PickContext) -> Instance? {
        guard !candidates.isEmpty else { return nil }
        if generation != candidates.generation { split(candidates) }
        if localShare == 0 { return all.pick(from: candidates, context: context) }
        if localShare >= 1 || Double(random.next() >> 11) * 0x1p-53 < localShare {
            return local.pick(from: localSet, context: context)
        }
        return remote.pick(from: remoteSet, context: context)
    }

    /// The share of calls this balancer keeps in the local zone for the candidates it saw last.
    public var currentLocalShare: Double { localShare }

    public mutating func callStarted(on instance: InstanceID) {
        local.callStarted(on: instance)
        remote.callStarted(on: instance)
        all.callStarted(on: instance)
    }

    public mutating func callFinished(on instance: InstanceID) {
        local.callFinished(on: instance)
        remote.callFinished(on: instance)
        all.callFinished(on: instance)
    }

    private mutating func split(_ candidates: InstanceSet) {
        generation = candidates.generation
        var localInstances: [Instance] = []
        var remoteInstances: [Instance] = []
        var zones: Set<String> = []
        for instance in candidates.instances {
            let zone = instance.definition.meta[zoneKey] ?? ""
            zones.insert(zone)
            if zone == localZone { localInstances.append(instance) } else { remoteInstances.append(instance) }
        }
        localSet = InstanceSet(localInstances)
        remoteSet = InstanceSet(remoteInstances)
        if localInstances.count < minimumLocalInstances || remoteInstances.isEmpty {
            localShare = remoteInstances.isEmpty ? 1 : 0
            return
        }
        let evenShare = Double(candidates.count) / Double(zones.count)
        localShare = min(1, Double(localInstances.count) / evenShare)
    }
}

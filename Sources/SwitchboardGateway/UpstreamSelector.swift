import SwitchboardClient
import SwitchboardCore
import Synchronization

/// Picks the instance each proxied request goes to, and learns from how the calls went.
///
/// Shared by every event loop: the instances come from the client library's discovery cache (kept current by the
/// agent's watch stream), narrowed to a route's tags and metadata; the choice from the route's balancer (one per
/// target and kind of balancer); which instances may be chosen, the client library's ``InstancePicker`` decides
/// (one per service, whatever the route: its outlier detector and circuit breakers), as in a ``ServiceClient``.
final class UpstreamSelector: Sendable {
    /// A target and the balancer kind picking for it: routes that share both share the balancer's state.
    struct BalancerKey: Hashable, Sendable {
        var target: RouteTarget
        var balancer: BalancerKind
    }

    private struct TargetState {
        var balancer: any LoadBalancer
        /// The discovery generation `filtered` was made from.
        var generation: UInt64 = 0
        var filtered = InstanceSet([])

        /// The target's share of `all` (its tags and metadata), filtered once per discovery generation.
        mutating func candidates(
            from all: InstanceSet, filtered unfiltered: InstanceSet?, query: InstanceQuery
        )
            -> InstanceSet
        {
            if let unfiltered { return unfiltered }
            if generation != all.generation {
                generation = all.generation
                filtered = InstanceSet(all.instances.filter(query.matches))
            }
            return filtered
        }
    }

    private struct State {
        /// Per service, whatever the route: its outlier detector and breakers.
        var services: [ServiceName: InstancePicker] = [:]
        var targets: [BalancerKey: TargetState] = [:]
    }

    let discovery: ServiceDiscovery
    private let outlierDetection: OutlierDetector.Configuration
    private let circuitBreaker: CircuitBreaker.Configuration?
    private let state = Mutex(State())

    init(
        discovery: ServiceDiscovery, outlierDetection: OutlierDetector.Configuration,
        circuitBreaker: CircuitBreaker.Configuration? = nil
    ) {
        self.discovery = discovery
        self.outlierDetection = outlierDetection
        self.circuitBreaker = circuitBreaker
    }

    /// An instance of the key's target not in `tried` (when another remains), not ejected and whose circuit lets a
    /// call through, with the breaker's permit; nil when there is none. `snapshot` is the discovery's current one of
    /// the target's service. The balancer counts the call as started: ``finished(_:on:permit:)`` must follow.
    func pick(
        _ key: BalancerKey, from snapshot: DiscoverySnapshot, avoiding tried: Set<InstanceID>,
        context: PickContext = PickContext()
    ) -> InstancePicker.Pick? {
        let now = ContinuousClock.now
        let service = key.target.service
        return state.withLock { state in
            let all = snapshot.instances
            // Each table entry is found once and changed in place through its index: a copy taken out of a
            // dictionary would copy the tables inside it, and `[key, default: ...]` allocates on every call.
            let query = key.target.query
            let unfiltered = query.tags.isEmpty && query.meta.isEmpty
            let filtered: InstanceSet? = unfiltered ? all : nil
            // Targets come and go with route files: the table is bounded.
            if state.targets.count >= 10_000, state.targets[key] == nil { state.targets.removeAll() }
            let target = state.targets.index(forKey: key, inserting: TargetState(balancer: key.balancer.make()))
            let candidates = state.targets.values[target].candidates(from: all, filtered: filtered, query: query)
            let picker = state.services.index(
                forKey: service,
                inserting: InstancePicker(outlierDetection: outlierDetection, circuitBreaker: circuitBreaker))
            let picked = Self.pick(
                with: &state.services.values[picker], from: candidates, outOf: all, avoiding: tried,
                balancer: &state.targets.values[target].balancer, context: context, at: now)
            if let picked { state.targets.values[target].balancer.callStarted(on: picked.instance.id) }
            return picked
        }
    }

    /// `picker`'s pick with `balancer` (opened from its existential here).
    private static func pick(
        with picker: inout InstancePicker, from candidates: InstanceSet, outOf all: InstanceSet,
        avoiding tried: Set<InstanceID>, balancer: inout any LoadBalancer, context: PickContext,
        at now: ContinuousClock.Instant
    ) -> InstancePicker.Pick? {
        picker.pick(from: candidates, outOf: all, avoiding: tried, balancer: &balancer, context: context, at: now)
    }

    /// A call ``pick(_:from:avoiding:)`` chose `instance` for ended, however it ended; a permit still held (the
    /// call ended without a verdict: the caller left) is given back.
    func finished(_ key: BalancerKey, on instance: Instance, permit: CircuitBreaker.Permit?) {
        state.withLock { state in
            if let index = state.targets.index(forKey: key) {
                state.targets.values[index].balancer.callFinished(on: instance.id)
            }
            if let permit, let index = state.services.index(forKey: instance.service) {
                state.services.values[index].abandon(permit, on: instance.id)
            }
        }
    }

    /// Records a call's outcome on `instance` (a failure: no connection, a reset, a 5xx, a timeout); reports an
    /// ejection to the agent as an observation.
    func record(_ succeeded: Bool, on instance: Instance, knownInstances: Int, permit: CircuitBreaker.Permit?) {
        let now = ContinuousClock.now
        let effects = state.withLock { state -> InstancePicker.Effects? in
            guard let index = state.services.index(forKey: instance.service) else { return nil }
            return state.services.values[index].record(
                succeeded, on: instance.id, permit: permit, knownInstances: knownInstances, at: now)
        }
        if let ejection = effects?.ejection {
            discovery.report(
                .ejected, about: instance,
                reason: "gateway: \(outlierDetection.consecutiveFailures) consecutive failed calls",
                duration: ejection.duration)
        }
    }
}

extension Dictionary {
    /// The index of `key`'s entry, made with `value` first when there is none: for an entry reached once and changed
    /// in place through `values[index]` (`self[key, default: ...]` allocates on every call).
    mutating func index(forKey key: Key, inserting value: @autoclosure () -> Value) -> Index {
        if let index = index(forKey: key) { return index }
        self[key] = value()
        return index(forKey: key)!
    }
}

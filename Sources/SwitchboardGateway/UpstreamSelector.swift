import SwitchboardClient
import SwitchboardCore
import Synchronization

/// Picks the instance each proxied request goes to, and learns from how the calls went.
///
/// Shared by every event loop: the instances come from the client library's discovery cache (kept current by the
/// agent's watch stream), narrowed to a route's tags and metadata; the choice from the route's balancer (one per
/// target and kind of balancer); instances that keep failing are ejected for a while by the client library's
/// outlier detector (one per service, whatever the route), as a ``ServiceClient`` does.
final class UpstreamSelector: Sendable {
    /// A target and the balancer kind picking for it: routes that share both share the balancer's state.
    struct BalancerKey: Hashable, Sendable {
        var target: RouteTarget
        var balancer: BalancerKind
    }

    private struct ServiceState {
        var outliers: OutlierDetector
        var breakers: [InstanceID: CircuitBreaker] = [:]
        var generation: UInt64 = 0
        /// Whether some breaker is not closed (else none needs asking while narrowing).
        var someBreakerTripped = false

        /// `candidates` less ejected instances, instances already tried (while others remain) and instances whose
        /// circuit is open.
        mutating func narrow(
            _ candidates: inout InstanceSet, from all: InstanceSet, avoiding tried: Set<InstanceID>, breakers: Bool,
            at now: ContinuousClock.Instant
        ) {
            if generation != all.generation {
                generation = all.generation
                let present = Set(all.instances.map(\.id))
                outliers.retain(only: present)
                self.breakers = self.breakers.filter { present.contains($0.key) }
            }
            candidates = outliers.excludingEjected(from: candidates, at: now).preferringOthers(than: tried)
            guard breakers, someBreakerTripped else { return }
            let states = self.breakers
            someBreakerTripped = states.values.contains { $0.state(at: now) != .closed }
            candidates = InstanceSet(
                candidates.instances.filter {
                    if case .open = states[$0.id]?.state(at: now) { return false }
                    return true
                })
        }

        mutating func acquire(
            _ instance: InstanceID, configuration: CircuitBreaker.Configuration, at now: ContinuousClock.Instant
        ) -> CircuitBreaker.Permit? {
            breakers[instance, default: CircuitBreaker(configuration: configuration)].acquire(at: now)
        }

        mutating func record(
            _ succeeded: Bool, on instance: InstanceID, permit: CircuitBreaker.Permit?, knownInstances: Int,
            at now: ContinuousClock.Instant
        ) -> OutlierDetector.Ejection? {
            if let permit, breakers[instance]?.record(succeeded, for: permit, at: now) == .opened {
                someBreakerTripped = true
            }
            return outliers.record(succeeded, on: instance, knownInstances: knownInstances, at: now)
        }
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
        var services: [ServiceName: ServiceState] = [:]
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
        _ key: BalancerKey, from snapshot: DiscoverySnapshot, avoiding tried: Set<InstanceID>
    ) -> (instance: Instance, permit: CircuitBreaker.Permit?)? {
        let now = ContinuousClock.now
        let service = key.target.service
        return state.withLock { state in
            let all = snapshot.instances
            // Each table entry is reached once or twice and changed in place: a copy taken out of a dictionary
            // would copy the tables inside it on every pick, and every lookup hashes the key again.
            let query = key.target.query
            let unfiltered = query.tags.isEmpty && query.meta.isEmpty
            let filtered: InstanceSet? = unfiltered ? all : nil
            // Targets come and go with route files: the table is bounded.
            if state.targets.count >= 10_000, state.targets[key] == nil { state.targets.removeAll() }
            var candidates = state.targets[key, default: TargetState(balancer: key.balancer.make())]
                .candidates(from: all, filtered: filtered, query: query)
            state.services[
                service, default: ServiceState(outliers: OutlierDetector(configuration: outlierDetection))
            ].narrow(&candidates, from: all, avoiding: tried, breakers: circuitBreaker != nil, at: now)
            var picked: (Instance, CircuitBreaker.Permit?)?
            while picked == nil,
                let instance = state.targets[key]!.balancer.pick(from: candidates, context: PickContext())
            {
                guard let configuration = circuitBreaker else {
                    picked = (instance, nil)
                    break
                }
                if let permit = state.services[service]!.acquire(instance.id, configuration: configuration, at: now) {
                    picked = (instance, permit)
                } else {
                    candidates = InstanceSet(candidates.instances.filter { $0.id != instance.id })
                }
            }
            if let picked { state.targets[key]!.balancer.callStarted(on: picked.0.id) }
            return picked
        }
    }

    /// A call ``pick(_:from:avoiding:)`` chose `instance` for ended, however it ended; a permit still held (the
    /// call ended without a verdict: the caller left) is given back.
    func finished(_ key: BalancerKey, on instance: Instance, permit: CircuitBreaker.Permit?) {
        state.withLock { state in
            state.targets[key]?.balancer.callFinished(on: instance.id)
            if let permit { state.services[instance.service]?.breakers[instance.id]?.abandon(permit) }
        }
    }

    /// Records a call's outcome on `instance` (a failure: no connection, a reset, a 5xx, a timeout); reports an
    /// ejection to the agent as an observation.
    func record(_ succeeded: Bool, on instance: Instance, knownInstances: Int, permit: CircuitBreaker.Permit?) {
        let now = ContinuousClock.now
        let ejection = state.withLock { state in
            state.services[instance.service]?.record(
                succeeded, on: instance.id, permit: permit, knownInstances: knownInstances, at: now)
        }
        if let ejection {
            discovery.report(
                .ejected, about: instance,
                reason: "gateway: \(outlierDetection.consecutiveFailures) consecutive failed calls",
                duration: ejection.duration)
        }
    }
}

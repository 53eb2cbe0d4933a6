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
    }

    private struct TargetState {
        var balancer: any LoadBalancer
        /// The discovery generation `candidates` were filtered from.
        var generation: UInt64 = 0
        var candidates = InstanceSet([])
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
            if state.services[service] == nil {
                state.services[service] = ServiceState(outliers: OutlierDetector(configuration: outlierDetection))
            }
            if state.services[service]!.generation != all.generation {
                state.services[service]!.generation = all.generation
                let present = Set(all.instances.map(\.id))
                state.services[service]!.outliers.retain(only: present)
                state.services[service]!.breakers = state.services[service]!.breakers.filter {
                    present.contains($0.key)
                }
            }
            if state.targets[key] == nil {
                if state.targets.count >= 10_000 { state.targets.removeAll() }
                state.targets[key] = TargetState(balancer: key.balancer.make())
            }
            // Changed in place: a copy taken out of the dictionary would copy the tables inside on every pick.
            if state.targets[key]!.generation != all.generation {
                state.targets[key]!.generation = all.generation
                let query = key.target.query
                state.targets[key]!.candidates =
                    query.tags.isEmpty && query.meta.isEmpty ? all : InstanceSet(all.instances.filter(query.matches))
            }
            var candidates = state.services[service]!.outliers
                .excludingEjected(from: state.targets[key]!.candidates, at: now)
                .preferringOthers(than: tried)
            guard circuitBreaker != nil else {
                guard let instance = state.targets[key]!.balancer.pick(from: candidates, context: PickContext()) else {
                    return nil
                }
                state.targets[key]!.balancer.callStarted(on: instance.id)
                return (instance, nil)
            }
            // Instances whose circuit is open are left out; a half-open one may refuse when its trial calls are
            // all out, and then another is tried.
            let breakers = state.services[service]!.breakers
            if breakers.values.contains(where: { $0.state(at: now) != .closed }) {
                candidates = InstanceSet(
                    candidates.instances.filter {
                        if case .open = breakers[$0.id]?.state(at: now) { return false }
                        return true
                    })
            }
            while let instance = state.targets[key]!.balancer.pick(from: candidates, context: PickContext()) {
                if state.services[service]!.breakers[instance.id] == nil {
                    state.services[service]!.breakers[instance.id] = CircuitBreaker(configuration: circuitBreaker!)
                }
                if let permit = state.services[service]!.breakers[instance.id]!.acquire(at: now) {
                    state.targets[key]!.balancer.callStarted(on: instance.id)
                    return (instance, permit)
                }
                candidates = InstanceSet(candidates.instances.filter { $0.id != instance.id })
            }
            return nil
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
            if let permit {
                state.services[instance.service]?.breakers[instance.id]?.record(succeeded, for: permit, at: now)
            }
            return state.services[instance.service]?.outliers.record(
                succeeded, on: instance.id, knownInstances: knownInstances, at: now)
        }
        if let ejection {
            discovery.report(
                .ejected, about: instance,
                reason: "gateway: \(outlierDetection.consecutiveFailures) consecutive failed calls",
                duration: ejection.duration)
        }
    }
}

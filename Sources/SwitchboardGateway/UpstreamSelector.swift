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
    private let state = Mutex(State())

    init(discovery: ServiceDiscovery, outlierDetection: OutlierDetector.Configuration) {
        self.discovery = discovery
        self.outlierDetection = outlierDetection
    }

    /// An instance of the key's target not in `tried` (when another remains) and not ejected; nil when there is
    /// none. `snapshot` is the discovery's current one of the target's service. The balancer counts the call as
    /// started: ``finished(_:on:)`` must follow.
    func pick(_ key: BalancerKey, from snapshot: DiscoverySnapshot, avoiding tried: Set<InstanceID>) -> Instance? {
        let now = ContinuousClock.now
        let service = key.target.service
        return state.withLock { state in
            let all = snapshot.instances
            if state.services[service] == nil {
                state.services[service] = ServiceState(outliers: OutlierDetector(configuration: outlierDetection))
            }
            if state.services[service]!.generation != all.generation {
                state.services[service]!.generation = all.generation
                state.services[service]!.outliers.retain(only: Set(all.instances.map(\.id)))
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
            let candidates = state.services[service]!.outliers
                .excludingEjected(from: state.targets[key]!.candidates, at: now)
                .preferringOthers(than: tried)
            guard let instance = state.targets[key]!.balancer.pick(from: candidates, context: PickContext()) else {
                return nil
            }
            state.targets[key]!.balancer.callStarted(on: instance.id)
            return instance
        }
    }

    /// A call ``pick(_:from:avoiding:)`` chose `instance` for ended, however it ended.
    func finished(_ key: BalancerKey, on instance: InstanceID) {
        state.withLock { state in
            state.targets[key]?.balancer.callFinished(on: instance)
        }
    }

    /// Records a call's outcome on `instance` (a failure: no connection, a reset, a 5xx, a timeout); reports an
    /// ejection to the agent as an observation.
    func record(_ succeeded: Bool, on instance: Instance, knownInstances: Int) {
        let ejection = state.withLock { state in
            state.services[instance.service]?.outliers.record(
                succeeded, on: instance.id, knownInstances: knownInstances, at: .now)
        }
        if let ejection {
            discovery.report(
                .ejected, about: instance,
                reason: "gateway: \(outlierDetection.consecutiveFailures) consecutive failed calls",
                duration: ejection.duration)
        }
    }
}

import SwitchboardClient
import SwitchboardCore
import Synchronization

/// Picks the instance of a service each proxied request goes to, and learns from how the calls went.
///
/// Shared by every event loop: the instances come from the client library's discovery cache (kept current by the
/// agent's watch stream), the choice from a round-robin balancer per service, and instances that keep failing are
/// ejected for a while by the client library's outlier detector, as a ``ServiceClient`` does.
final class UpstreamSelector: Sendable {
    private struct ServiceState {
        var balancer = RoundRobinBalancer()
        var outliers: OutlierDetector
        var generation: UInt64 = 0

        mutating func pick(
            from all: InstanceSet, avoiding tried: Set<InstanceID>, at now: ContinuousClock.Instant
        ) -> Instance? {
            if generation != all.generation {
                generation = all.generation
                outliers.retain(only: Set(all.instances.map(\.id)))
            }
            let candidates = outliers.excludingEjected(from: all, at: now).preferringOthers(than: tried)
            return balancer.pick(from: candidates, context: PickContext())
        }
    }

    let discovery: ServiceDiscovery
    private let outlierDetection: OutlierDetector.Configuration
    private let services = Mutex<[ServiceName: ServiceState]>([:])

    init(discovery: ServiceDiscovery, outlierDetection: OutlierDetector.Configuration) {
        self.discovery = discovery
        self.outlierDetection = outlierDetection
    }

    /// An instance of `service` not in `tried` (when another remains) and not ejected; nil when discovery knows
    /// no healthy instance. `snapshot` is the discovery's current one.
    func pick(_ service: ServiceName, from snapshot: DiscoverySnapshot, avoiding tried: Set<InstanceID>) -> Instance? {
        let now = ContinuousClock.now
        return services.withLock { services in
            if services[service] == nil {
                services[service] = ServiceState(outliers: OutlierDetector(configuration: outlierDetection))
            }
            // Changed in place: a copy taken out of the dictionary would copy the detector's tables on every pick.
            return services[service]!.pick(from: snapshot.instances, avoiding: tried, at: now)
        }
    }

    /// Records a call's outcome on `instance` (a failure: no connection, a reset, a 5xx, a timeout); reports an
    /// ejection to the agent as an observation.
    func record(_ succeeded: Bool, on instance: Instance, knownInstances: Int) {
        let ejection = services.withLock { services in
            services[instance.service]?.outliers.record(
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

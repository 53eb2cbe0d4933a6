import AsyncHTTPClient
import Logging
import NIOPosix
import Prometheus
import ServiceLifecycle
import SwitchboardCatalog
import SwitchboardClient
import SwitchboardCore
import Synchronization

import struct Foundation.Date

/// How the agent checks health: self-preservation, probe concurrency and scheduling.
public struct HealthConfiguration: Sendable {
    /// When an unusually large share of TTL instances misses heartbeats at once, the fault is most likely the
    /// agent's own network, so it stops expiring TTL checks until heartbeats come back (Eureka's rule).
    public struct SelfPreservation: Sendable, Hashable {
        public var enabled: Bool
        /// More than this share (0 to 1) of TTL instances missing within `window` pauses expiry.
        public var share: Double
        public var window: Duration
        /// Below this many TTL instances it never engages: a small fleet losing most instances is an outage.
        public var minimumInstances: Int

        public init(
            enabled: Bool = true, share: Double = 0.5, window: Duration = .seconds(10), minimumInstances: Int = 10
        ) {
            self.enabled = enabled
            self.share = share
            self.window = window
            self.minimumInstances = minimumInstances
        }
    }

    public var selfPreservation: SelfPreservation
    /// The most probes in flight at once; further due probes wait (and count as lateness).
    public var maximumConcurrentProbes: Int
    /// Active checks start within this long of being registered or restored, at random, to spread the load.
    public var maximumStartJitter: Duration
    /// HTTP connections kept per checked host.
    public var maximumConnectionsPerHost: Int

    public init(
        selfPreservation: SelfPreservation = SelfPreservation(),
        maximumConcurrentProbes: Int = 1024,
        maximumStartJitter: Duration = .seconds(1),
        maximumConnectionsPerHost: Int = 32
    ) {
        self.selfPreservation = selfPreservation
        self.maximumConcurrentProbes = maximumConcurrentProbes
        self.maximumStartJitter = maximumStartJitter
        self.maximumConnectionsPerHost = maximumConnectionsPerHost
    }
}

/// The agent's health checking: takes heartbeats, runs HTTP and TCP probes on schedule, applies thresholds, expires
/// missed TTLs, removes long-critical instances and guards against mass expiry, writing every status change to the
/// catalog as a change event.
///
/// A swift-service-lifecycle `Service`: ``run()`` schedules and runs probes until graceful shutdown. Heartbeats
/// (``heartbeat(_:checkID:status:output:relayed:by:relayToken:)``) touch memory only, unless they change a status. The timing rules live in
/// `HealthTable`; this type carries out what the table decides.
public final class HealthChecker: Service, Sendable {
    private let catalog: Catalog
    private let configuration: HealthConfiguration
    private let logger: Logger
    private let metrics: AgentMetrics
    private let table: Mutex<HealthTable>
    private let probesInFlight = Atomic<Int>(0)
    private let heartbeatsReceived = Atomic<Int>(0)
    /// Cuts the scheduler's sleep short when the table gets work due before it.
    private let alarm = Alarm()
    private let lateness = Mutex(LatenessSamples(capacity: 10_000))
    private let selfPreservationSince = Mutex<Date?>(nil)
    /// Cluster mode: who runs which check. This checker runs only the checks of the instances it owns, and relays
    /// the heartbeats of the others to their owner.
    private let membership: ClusterMembership?
    private let relay: HeartbeatRelay?

    /// A checker for `catalog`'s checks; it starts following the catalog at once (call before writes start). With
    /// `membership` (cluster mode) it runs only the checks this agent owns.
    public init(
        catalog: Catalog, configuration: HealthConfiguration, metrics: AgentMetrics, logger: Logger,
        membership: ClusterMembership? = nil, relayTLS: AgentTLSConfiguration? = nil
    ) {
        self.catalog = catalog
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.membership = membership
        self.relay = membership.map { HeartbeatRelay(agentID: $0.agentID, logger: logger, tls: relayTLS) }
        var policy = HealthTable.SelfPreservationPolicy(
            enabled: configuration.selfPreservation.enabled,
            share: configuration.selfPreservation.share,
            window: configuration.selfPreservation.window,
            minimumInstances: configuration.selfPreservation.minimumInstances
        )
        if membership != nil {
            // Misses are judged with the other agents' counts, which take a moment to arrive through etcd: a miss
            // waits that long before it expires, so a cluster-wide burst is seen as one.
            policy.hold = .milliseconds(750)
        }
        self.table = Mutex(HealthTable(policy: policy, maximumStartJitter: configuration.maximumStartJitter))
        // Observe first, then seed under the table's lock: a change applied meanwhile is either in the snapshot
        // (and re-applied, harmlessly) or reaches the table after the seed, in order.
        catalog.addChangeObserver { [weak self] changes in
            guard let self else { return }
            let events = changes.map(\.event).filter { $0.kind == .removed || self.owns($0.instanceKey) }
            self.changeTable { $0.apply(events, now: .now) }
        }
        table.withLock { table in
            let now = ContinuousClock.now
            for instance in catalog.allInstances().instances where owns(instance.key) {
                table.track(instance, now: now)
            }
        }
        membership?.onChange { [weak self] in self?.rebalance() }
    }

    /// Whether this agent runs the checks of `key` (always, outside cluster mode).
    private func owns(_ key: InstanceKey) -> Bool {
        membership?.isLocal(key) ?? true
    }

    /// After the members changed: starts the checks this agent now owns (a TTL check with one TTL of grace, an
    /// active check within the start jitter, each from the status the catalog holds, so a move turns nothing
    /// critical) and stops those it no longer owns.
    private func rebalance() {
        let instances = catalog.allInstances().instances
        let (started, stopped) = changeTable { table -> (Int, Int) in
            let now = ContinuousClock.now
            var started = 0
            var stopped = 0
            for instance in instances {
                let key = instance.key
                if owns(key) {
                    if !table.isTracking(key) {
                        table.track(instance, now: now)
                        started += 1
                    }
                } else if table.isTracking(key) {
                    table.untrack(key)
                    stopped += 1
                }
            }
            return (started, stopped)
        }
        // An instance removed between the snapshot and the table's lock was tracked again above: drop it.
        let gone = table.withLock { $0.trackedInstances }.filter {
            catalog.instance(service: $0.service, id: $0.id).instance == nil
        }
        if !gone.isEmpty { changeTable { table in for key in gone { table.untrack(key) } } }
        if started > 0 || stopped > 0 {
            logger.info(
                "checks moved after a change of members",
                metadata: ["started": "\(started)", "stopped": "\(stopped)"])
        }
    }

    /// The outcome of a heartbeat, for the API.
    public enum HeartbeatResult: Sendable {
        /// Recorded; the instance's status as the catalog now holds it.
        case recorded(status: HealthStatus)
        /// No such instance (the client must register again).
        case unknownInstance
        /// The instance has no TTL check.
        case noTTLCheck
    }

    /// Records a heartbeat for every TTL check of `instance`; waits only if it changes a status.
    ///
    /// In cluster mode a heartbeat for an instance another agent owns is relayed to that agent (unless `relayed`:
    /// it came from one), and when the owner cannot be reached it is answered from the catalog: the new owner gives
    /// the check a full TTL of grace, so a heartbeat lost in the move costs nothing.
    public func heartbeat(
        _ instance: InstanceKey, checkID: String? = nil, status: HealthStatus = .passing, output: String = "",
        relayed: Bool = false, by audit: @autoclosure () -> AuditRecord? = nil, relayToken: String? = nil
    ) async -> HeartbeatResult {
        if let membership, let relay, !membership.isLocal(instance) || (relayed && !isTracking(instance)) {
            if !relayed, let owner = membership.owner(of: instance),
                let answer = await relay.send(
                    instance, checkID: checkID, status: status, output: output, to: owner, token: relayToken)
            {
                metrics.heartbeats.increment()
                heartbeatsReceived.add(1, ordering: .relaxed)
                // An owner whose view lags (the instance registered through another agent a moment ago) does not
                // know it yet: a 404 would make the client register again for nothing.
                if case .unknownInstance = answer { return heartbeatFromCatalog(instance, checkID: checkID) }
                return answer
            }
            return heartbeatFromCatalog(instance, checkID: checkID)
        }
        metrics.heartbeats.increment()
        heartbeatsReceived.add(1, ordering: .relaxed)
        // A heartbeat can bring work forward: a check given back its TTL deadline, a critical status's timer.
        let outcome = changeTable {
            $0.heartbeat(instance, checkID: checkID, status: status, output: output, now: .now)
        }
        switch outcome {
        case .unknownInstance: return .unknownInstance
        case .noTTLCheck: return .noTTLCheck
        case .recorded(let effects):
            for effect in effects {
                // Who asked is worked out only for a heartbeat that writes (a status change): most write nothing.
                if case .status = effect {
                    await perform(effect, by: audit())
                } else {
                    await perform(effect)
                }
            }
            // Removed meanwhile (a deregistration raced the heartbeat): the client must register again.
            guard let current = catalog.instance(service: instance.service, id: instance.id).instance else {
                return .unknownInstance
            }
            return .recorded(status: current.status)
        }
    }

    /// Heartbeats can arrive from now on (the API listens): every TTL check gets one full TTL from here.
    public func heartbeatsOpen() {
        changeTable { $0.extendTTLDeadlines(from: .now) }
    }

    private func isTracking(_ instance: InstanceKey) -> Bool {
        table.withLock { $0.isTracking(instance) }
    }

    /// A heartbeat answered from what the catalog holds, without recording it.
    private func heartbeatFromCatalog(_ key: InstanceKey, checkID: String?) -> HeartbeatResult {
        guard let current = catalog.instance(service: key.service, id: key.id).instance else { return .unknownInstance }
        guard current.checks.contains(where: { $0.definition.type == .ttl && (checkID == nil || $0.id == checkID) })
        else { return .noTTLCheck }
        return .recorded(status: current.status)
    }

    /// Runs the scheduler until graceful shutdown or cancellation; probes in flight finish (within their timeouts).
    public func run() async throws {
        let httpClient = HTTPClient(
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
            configuration: Prober.httpClientConfiguration(
                maximumConnectionsPerHost: configuration.maximumConnectionsPerHost)
        )
        let prober = Prober(httpClient: httpClient, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
        // Graceful shutdown cancels the loop and the probes in flight; results of cancelled probes are dropped.
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                await self.schedule(prober: prober, group: &group)
            }
        }
        try await httpClient.shutdown()
        await relay?.shutdown()
    }

    /// The scheduler loop: wakes when the table has work (a change due sooner wakes it), starts due probes as child tasks
    /// and carries out TTL expiry, self-preservation and removals.
    private func schedule(prober: Prober, group: inout DiscardingTaskGroup) async {
        // Nothing is due: a look at the table once a second all the same.
        let idleLimit = Duration.seconds(1)
        while !Task.isCancelled {
            let now = ContinuousClock.now
            let room = max(0, configuration.maximumConcurrentProbes - probesInFlight.load(ordering: .relaxed))
            let peers = membership?.peerCounts
            let (orders, effects, wake, local) = table.withLock { table in
                if let peers { table.peerCounts = peers }
                let orders = table.dueProbes(now: now, limit: room)
                return (
                    orders, table.tick(now: now), table.nextWake(after: now, room: room - orders.count),
                    table.localCounts
                )
            }
            membership?.report(local)
            for effect in effects {
                if case .selfPreservation = effect {
                    // In order, here: on and off must not overtake each other.
                    await perform(effect)
                } else {
                    group.addTask { await self.perform(effect) }
                }
            }
            for order in orders {
                probesInFlight.add(1, ordering: .relaxed)
                let late = ContinuousClock.now - order.scheduledAt
                lateness.withLock { $0.append(late) }
                metrics.probeLateness.record(late)
                group.addTask {
                    let (status, output) = await prober.probe(order.definition)
                    guard !Task.isCancelled else { return }
                    self.metrics.probes(order.definition.type, status).increment()
                    // The probe's room is free again once its result is in: probes held back for want of it may
                    // be due (its own next round too, which a room freed before the result would skip).
                    let effects = self.changeTable {
                        let effects = $0.recordProbe(order, status: status, output: output, now: .now)
                        self.probesInFlight.add(-1, ordering: .relaxed)
                        return effects
                    }
                    for effect in effects { await self.perform(effect) }
                }
            }
            // Always sleep, if only briefly: the loop must never hold a thread of the shared pool.
            let target = max(min(wake ?? now + idleLimit, now + idleLimit), ContinuousClock.now + .microseconds(100))
            await alarm.sleep(until: target)
        }
    }

    /// Changes the table and wakes the scheduler when the change brought work due before it means to wake.
    private func changeTable<T>(_ change: (inout HealthTable) -> T) -> T {
        let (result, wake) = table.withLock { table in
            let result = change(&table)
            let room = max(0, configuration.maximumConcurrentProbes - probesInFlight.load(ordering: .relaxed))
            return (result, table.nextWake(after: .now, room: room))
        }
        alarm.wake(before: wake)
        return result
    }

    /// Carries out one decision of the table.
    /// Carries out what the table decided; `by` is the API caller whose heartbeat caused it (the audit trail).
    private func perform(_ effect: HealthEffect, by: AuditRecord? = nil) async {
        switch effect {
        case .status(let update):
            do {
                let outcome = try await catalog.submit(.checkStatus(update), by: by)
                if outcome.event != nil {
                    metrics.transitions(update.status).increment()
                    logger.info(
                        "check status changed",
                        metadata: [
                            "service": "\(update.key.service)", "instance": "\(update.key.id)",
                            "check": "\(update.checkID)", "status": "\(update.status.rawValue)",
                            "output": "\(update.output.prefix(200))",
                        ]
                    )
                }
            } catch {
                // The instance went away, or the agent is stopping; the next result retries what still applies.
                logger.debug("check status not written", metadata: ["check": "\(update.checkID)", "error": "\(error)"])
            }
        case .output(let update):
            catalog.replaceCheckOutput(
                update.key, checkID: update.checkID, definition: update.definition, status: update.status,
                output: update.output)
        case .expire(let key, let checkID, let definition):
            do {
                let outcome = try await catalog.submit(
                    .expire(service: key.service, id: key.id, checkID: checkID, definition: definition))
                if outcome.event != nil {
                    logger.info(
                        "instance removed after being critical longer than deregisterAfterCritical",
                        metadata: ["service": "\(key.service)", "instance": "\(key.id)", "check": "\(checkID)"]
                    )
                }
            } catch {
                logger.debug("expiry not written", metadata: ["instance": "\(key.id)", "error": "\(error)"])
            }
        case .selfPreservation(let active, let missing, let population):
            metrics.selfPreservation.set(to: active ? 1.0 : 0.0)
            selfPreservationSince.withLock { $0 = active ? Date() : nil }
            if active {
                logger.warning(
                    """
                    self-preservation on: too many TTL instances missed their heartbeat at once; TTL expiry paused \
                    until heartbeats recover (the agent's own network is the likely fault)
                    """,
                    metadata: ["missing": "\(missing)", "instances": "\(population)"]
                )
            } else {
                logger.warning(
                    "self-preservation off: heartbeats recovered; TTL expiry resumed",
                    metadata: ["overdue": "\(missing)", "instances": "\(population)"]
                )
            }
        }
    }

    /// What `GET /v1/agent` reports about health checking.
    public func report() -> HealthReport {
        let (counts, state, skipped) = table.withLock { ($0.checkCounts, $0.selfPreservation, $0.skippedProbes) }
        let policy = configuration.selfPreservation
        return HealthReport(
            checks: HealthReport.CheckCounts(
                ttl: counts[.ttl] ?? 0, http: counts[.http] ?? 0, tcp: counts[.tcp] ?? 0),
            probesInFlight: probesInFlight.load(ordering: .relaxed),
            skippedProbes: skipped,
            probeLateness: lateness.withLock { $0.summary() },
            selfPreservation: HealthReport.SelfPreservation(
                enabled: policy.enabled,
                active: state.active,
                since: state.active ? selfPreservationSince.withLock { $0 } : nil,
                share: policy.share,
                missing: state.missing,
                instances: state.population
            ),
            heartbeats: heartbeatsReceived.load(ordering: .relaxed)
        )
    }
}

/// The latest lateness samples, in a ring, for percentiles on demand.
struct LatenessSamples: Sendable {
    private var samples: [Double] = []
    private var next = 0
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        samples.reserveCapacity(capacity)
    }

    mutating func append(_ lateness: Duration) {
        let milliseconds = Double(lateness.components.seconds) * 1000 + Double(lateness.components.attoseconds) / 1e15
        if samples.count < capacity {
            samples.append(milliseconds)
        } else {
            samples[next] = milliseconds
        }
        next = (next + 1) % capacity
    }

    func summary() -> LatenessSummary {
        guard !samples.isEmpty else { return LatenessSummary(samples: 0, p50Ms: 0, p99Ms: 0, maxMs: 0) }
        let sorted = samples.sorted()
        func percentile(_ p: Double) -> Double {
            sorted[min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)]
        }
        return LatenessSummary(
            samples: sorted.count, p50Ms: percentile(0.5), p99Ms: percentile(0.99), maxMs: sorted.last ?? 0)
    }
}

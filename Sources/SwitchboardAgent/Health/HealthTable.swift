import HeapModule
import SwitchboardCatalog
import SwitchboardCore

/// One check of one instance, as the health checker knows it.
struct CheckKey: Hashable, Sendable {
    var instance: InstanceKey
    var checkID: String
}

/// What the health checker must carry out after the table moved: writes to the catalog, and news for operators.
enum HealthEffect: Sendable, Equatable {
    /// The check's status changed after its thresholds: write the transition (a change event, a new index).
    case status(CheckStatusUpdate)
    /// Only the output changed: replace it in memory, with no event and no new index.
    case output(CheckStatusUpdate)
    /// The check has been critical longer than its `deregisterAfterCritical`: remove the instance.
    case expire(InstanceKey, checkID: String, definition: CheckDefinition)
    /// Self-preservation started (`true`) or ended (`false`).
    case selfPreservation(active: Bool, missing: Int, population: Int)
}

/// A probe the scheduler must run now.
struct ProbeOrder: Sendable {
    var key: CheckKey
    var generation: UInt64
    var definition: CheckDefinition
    /// When the probe was due: the scheduler's lateness is measured against it.
    var scheduledAt: ContinuousClock.Instant
}

/// The answer to a heartbeat.
enum HeartbeatOutcome: Sendable, Equatable {
    /// No such instance: the client must register again.
    case unknownInstance
    /// The instance has no TTL check to heartbeat.
    case noTTLCheck
    /// Recorded; the effects are what the heartbeat changed.
    case recorded([HealthEffect])
}

/// Where self-preservation stands.
struct SelfPreservationState: Sendable, Hashable {
    /// Whether TTL expiry is paused.
    var active: Bool
    /// When it last started (while active).
    var since: ContinuousClock.Instant?
    /// Instances with a TTL check whose heartbeat is overdue or was missed within the window.
    var missing: Int
    /// Instances with a TTL check.
    var population: Int
}

/// Every check the agent watches, with thresholds, TTL deadlines, probe schedules and self-preservation, as a plain
/// value driven by an injected clock.
///
/// The ``HealthChecker`` owns one behind a lock and carries out the ``HealthEffect``s it returns; keeping all the
/// timing rules here (and none of the I/O) is what lets the tests step through a TTL expiry, a flap or a mass
/// heartbeat loss in microseconds. Three heaps hold the next moment each check needs attention: its TTL deadline,
/// its next probe and the end of its `deregisterAfterCritical`. Entries are never updated in place: a heartbeat
/// only moves the check's own deadline, and a stale entry is recognised (by deadline or generation) when it pops.
struct HealthTable: Sendable {
    /// Rules for pausing TTL expiry when heartbeats are lost en masse.
    struct SelfPreservationPolicy: Sendable, Hashable {
        var enabled = true
        /// More than this share of TTL instances missing within `window` starts self-preservation.
        var share = 0.5
        var window: Duration = .seconds(10)
        /// How long a missed heartbeat waits before it counts, so misses that happen together are judged together.
        var hold: Duration = .milliseconds(50)
        /// Below this many TTL instances self-preservation never starts (one instance dying is not an outage).
        var minimumInstances = 10
    }

    private struct TrackedCheck: Sendable {
        var definition: CheckDefinition
        var generation: UInt64
        var progress: CheckProgress
        /// The status the catalog holds (from its change events); a result that differs from it is written.
        var catalogStatus: HealthStatus
        var lastOutput: String
        /// TTL checks: when the check misses its heartbeat.
        var deadline: ContinuousClock.Instant?
        /// Active checks: a probe is running, so a due one is skipped rather than run twice at once.
        var probing = false
        var criticalSince: ContinuousClock.Instant?
    }

    private struct TimedEntry: Comparable, Sendable {
        var at: ContinuousClock.Instant
        var key: CheckKey
        var generation: UInt64

        static func < (lhs: TimedEntry, rhs: TimedEntry) -> Bool { lhs.at < rhs.at }
    }

    let policy: SelfPreservationPolicy
    /// Active checks start within this long of being tracked, spread at random so thousands of checks registered
    /// at once (or restored at start-up) do not probe in one burst.
    let maximumStartJitter: Duration
    private let jitter: @Sendable (Duration) -> Duration

    private var checks: [CheckKey: TrackedCheck] = [:]
    private var checkIDsByInstance: [InstanceKey: [String]] = [:]
    private var ttlInstances: Set<InstanceKey> = []
    private var ttlDeadlines = Heap<TimedEntry>()
    private var probeSchedule = Heap<TimedEntry>()
    private var reapTimers = Heap<TimedEntry>()
    private var pendingMisses: [CheckKey: ContinuousClock.Instant] = [:]
    /// Instances whose TTL expired within the window: when, and whether a heartbeat came since.
    private var recentMisses: [InstanceKey: (at: ContinuousClock.Instant, recovered: Bool)] = [:]
    private var nextGeneration: UInt64 = 1
    /// Where self-preservation stands.
    private(set) var selfPreservation = SelfPreservationState(active: false, missing: 0, population: 0)
    /// Cluster mode: the other agents' TTL instances and misses, which self-preservation judges with this one's.
    var peerCounts = TTLCounts()
    /// This table's own TTL instances and misses at the last judgement (what the member key publishes).
    private(set) var localCounts = TTLCounts()
    /// Probes skipped because the previous probe of the same check was still running.
    private(set) var skippedProbes = 0

    /// `jitter(limit)` returns a delay in `0..<limit`; tests pass one that returns zero.
    init(
        policy: SelfPreservationPolicy = SelfPreservationPolicy(),
        maximumStartJitter: Duration = .seconds(1),
        jitter: @escaping @Sendable (Duration) -> Duration = HealthTable.randomJitter
    ) {
        self.policy = policy
        self.maximumStartJitter = maximumStartJitter
        self.jitter = jitter
    }

    /// A uniformly random delay in `0..<limit`.
    static func randomJitter(_ limit: Duration) -> Duration {
        let milliseconds = Int64(limit / .milliseconds(1))
        return milliseconds > 0 ? .milliseconds(Int64.random(in: 0..<milliseconds)) : .zero
    }

    /// The number of checks watched, by kind.
    var checkCounts: [CheckKind: Int] {
        checks.values.reduce(into: [:]) { $0[$1.definition.type, default: 0] += 1 }
    }

    /// The status the thresholds stand at for a check (for tests and diagnostics).
    func status(of key: CheckKey) -> HealthStatus? { checks[key]?.progress.status }

    // MARK: Following the catalog

    /// Follows the catalog's changes: starts watching new checks, forgets removed ones, keeps the progress of checks
    /// whose definition did not change.
    mutating func apply(_ events: [ChangeEvent], now: ContinuousClock.Instant) {
        for event in events where event.changesCatalog {
            if event.kind == .removed {
                untrack(InstanceKey(service: event.service, id: event.id))
            } else {
                track(event.instance, now: now)
            }
        }
    }

    /// Starts watching `instance`'s checks. A TTL check gets one full TTL from `now` before it can miss (the grace
    /// after a restart, and the time a new instance has for its first heartbeat); an active check is first probed
    /// within ``maximumStartJitter``.
    mutating func track(_ instance: Instance, now: ContinuousClock.Instant) {
        let instanceKey = InstanceKey(service: instance.service, id: instance.id)
        let previousIDs = checkIDsByInstance[instanceKey] ?? []
        let currentIDs = instance.checks.map(\.id)
        for stale in previousIDs where !currentIDs.contains(stale) {
            forget(CheckKey(instance: instanceKey, checkID: stale))
        }
        checkIDsByInstance[instanceKey] = currentIDs
        if instance.checks.contains(where: { $0.definition.type == .ttl }) {
            ttlInstances.insert(instanceKey)
        } else {
            ttlInstances.remove(instanceKey)
        }
        for state in instance.checks {
            let key = CheckKey(instance: instanceKey, checkID: state.id)
            if var existing = checks[key], existing.definition == state.definition {
                existing.catalogStatus = state.status
                checks[key] = existing
                continue
            }
            forget(key)
            var check = TrackedCheck(
                definition: state.definition,
                generation: nextGeneration,
                progress: CheckProgress(definition: state.definition, status: state.status),
                catalogStatus: state.status,
                lastOutput: state.output
            )
            nextGeneration += 1
            switch state.definition.type {
            case .ttl:
                let deadline = now + (state.definition.ttl ?? .seconds(10)).duration
                check.deadline = deadline
                ttlDeadlines.insert(TimedEntry(at: deadline, key: key, generation: check.generation))
            case .http, .tcp:
                let interval = (state.definition.interval ?? .seconds(10)).duration
                let first = now + jitter(min(interval, maximumStartJitter))
                probeSchedule.insert(TimedEntry(at: first, key: key, generation: check.generation))
            }
            if state.status == .critical { startCriticalTimer(&check, key: key, now: now) }
            checks[key] = check
        }
    }

    /// Gives every TTL check at least one full TTL from `now` before it can miss: called once heartbeats can arrive
    /// (the API listens), so the grace after a restart is not spent while the agent was still starting.
    mutating func extendTTLDeadlines(from now: ContinuousClock.Instant) {
        for (key, var check) in checks where check.definition.type == .ttl {
            let deadline = now + (check.definition.ttl ?? .seconds(10)).duration
            guard let current = check.deadline, current < deadline else { continue }
            check.deadline = deadline
            checks[key] = check
            // The check's heap entry finds the later deadline when it pops and goes back in; a miss already found
            // consumed its entry, so it gets a new one.
            if pendingMisses.removeValue(forKey: key) != nil {
                ttlDeadlines.insert(TimedEntry(at: deadline, key: key, generation: check.generation))
            }
        }
    }

    /// Whether `instance`'s checks are watched here.
    func isTracking(_ instance: InstanceKey) -> Bool {
        checkIDsByInstance[instance] != nil
    }

    /// The instances whose checks are watched here.
    var trackedInstances: [InstanceKey] { Array(checkIDsByInstance.keys) }

    /// Stops watching every check of `instance`.
    mutating func untrack(_ instance: InstanceKey) {
        for id in checkIDsByInstance.removeValue(forKey: instance) ?? [] {
            forget(CheckKey(instance: instance, checkID: id))
        }
        ttlInstances.remove(instance)
        recentMisses[instance] = nil
    }

    private mutating func forget(_ key: CheckKey) {
        // Heap entries of a forgotten check are dropped when they pop: their generation no longer matches.
        checks[key] = nil
        pendingMisses[key] = nil
    }

    // MARK: Results

    /// A heartbeat for `instance`: every TTL check it has (or only the one with id `checkID`) gets `status`
    /// (passing unless the client says otherwise) and a new deadline one TTL from `now`.
    mutating func heartbeat(
        _ instance: InstanceKey, checkID: String? = nil, status: HealthStatus = .passing, output: String = "",
        now: ContinuousClock.Instant
    ) -> HeartbeatOutcome {
        guard let ids = checkIDsByInstance[instance] else { return .unknownInstance }
        var effects: [HealthEffect] = []
        var found = false
        for id in ids where checkID == nil || id == checkID {
            let key = CheckKey(instance: instance, checkID: id)
            guard var check = checks[key], check.definition.type == .ttl else { continue }
            found = true
            let deadline = now + (check.definition.ttl ?? .seconds(10)).duration
            check.deadline = deadline
            checks[key] = check
            if recentMisses[instance] != nil { recentMisses[instance]?.recovered = true }
            if pendingMisses.removeValue(forKey: key) != nil {
                // The entry that found the miss was consumed; the check needs a new one.
                ttlDeadlines.insert(TimedEntry(at: deadline, key: key, generation: check.generation))
            }
            effects += record(status, output: output, for: key, now: now)
        }
        return found ? .recorded(effects) : .noTTLCheck
    }

    /// The result of a probe ordered by ``dueProbes(now:)``; ignored when the check was redefined or removed since.
    mutating func recordProbe(
        _ order: ProbeOrder, status: HealthStatus, output: String, now: ContinuousClock.Instant
    ) -> [HealthEffect] {
        guard var check = checks[order.key], check.generation == order.generation else { return [] }
        check.probing = false
        checks[order.key] = check
        return record(status, output: output, for: order.key, now: now)
    }

    /// Applies the thresholds to one result and says what the catalog must learn.
    private mutating func record(
        _ result: HealthStatus, output: String, for key: CheckKey, now: ContinuousClock.Instant
    ) -> [HealthEffect] {
        guard var check = checks[key] else { return [] }
        let before = check.progress.status
        let after = check.progress.record(result)
        if after != before {
            if after == .critical {
                startCriticalTimer(&check, key: key, now: now)
            } else {
                check.criticalSince = nil
            }
        }
        let update = CheckStatusUpdate(
            key: key.instance, checkID: key.checkID, definition: check.definition, status: after, output: output)
        var effects: [HealthEffect] = []
        // Written whenever the catalog holds another status, not only on a transition: a write that failed (or
        // lost a race with a re-registration) is retried by the next result instead of leaving the two apart.
        if after != check.catalogStatus {
            effects.append(.status(update))
            check.lastOutput = update.output
        } else if update.output != check.lastOutput {
            effects.append(.output(update))
            check.lastOutput = update.output
        }
        checks[key] = check
        return effects
    }

    private mutating func startCriticalTimer(
        _ check: inout TrackedCheck, key: CheckKey, now: ContinuousClock.Instant
    ) {
        check.criticalSince = now
        if let after = check.definition.deregisterAfterCritical {
            reapTimers.insert(TimedEntry(at: now + after.duration, key: key, generation: check.generation))
        }
    }

    // MARK: Time

    /// The probes due at `now`, each check's next one scheduled one interval after the one due now (so the
    /// schedule does not drift by the time probes take or by the scheduler's own lateness).
    ///
    /// At most `limit` probes are ordered; the rest stay due (and late) until there is room.
    mutating func dueProbes(now: ContinuousClock.Instant, limit: Int = .max) -> [ProbeOrder] {
        var orders: [ProbeOrder] = []
        while orders.count < limit, let top = probeSchedule.min, top.at <= now {
            probeSchedule.removeMin()
            guard var check = checks[top.key], check.generation == top.generation else { continue }
            let interval = max(.milliseconds(100), (check.definition.interval ?? .seconds(10)).duration)
            var next = top.at + interval
            if next <= now {
                // Far behind (a stalled process, a suspended machine): skip the missed rounds rather than burst them.
                let missed = Int64((now - top.at) / interval)
                next = top.at + interval * missed + interval
            }
            probeSchedule.insert(TimedEntry(at: next, key: top.key, generation: top.generation))
            if check.probing {
                skippedProbes += 1
                continue
            }
            check.probing = true
            checks[top.key] = check
            orders.append(
                ProbeOrder(key: top.key, generation: top.generation, definition: check.definition, scheduledAt: top.at))
        }
        return orders
    }

    /// Expires missed TTL checks (unless self-preservation holds them back) and removes instances critical for
    /// longer than their `deregisterAfterCritical`.
    mutating func tick(now: ContinuousClock.Instant) -> [HealthEffect] {
        var effects: [HealthEffect] = []
        findMissedHeartbeats(now: now, effects: &effects)
        effects += judgeSelfPreservation(now: now)
        if !selfPreservation.active {
            effects += expireHeldMisses(now: now)
        }
        effects += reapCriticalInstances(now: now)
        return effects
    }

    /// The earliest moment after which ``tick(now:)`` or ``dueProbes(now:)`` has work that can be done.
    ///
    /// Due probes count only when there is `room` for them, and held misses only while expiry is not paused:
    /// otherwise the answer would be a moment already past, and the scheduler would spin instead of sleeping.
    /// While self-preservation is on, what ends it is heartbeats coming back, not a deadline: the table is then
    /// looked at every 10 ms.
    func nextWake(after now: ContinuousClock.Instant, room: Int) -> ContinuousClock.Instant? {
        var candidates = [ttlDeadlines.min?.at, reapTimers.min?.at].compactMap { $0 }
        if room > 0, let probe = probeSchedule.min?.at { candidates.append(probe) }
        if selfPreservation.active {
            candidates.append(now + .milliseconds(10))
        } else if let oldest = pendingMisses.values.min() {
            candidates.append(oldest + policy.hold)
        }
        return candidates.min()
    }

    private mutating func findMissedHeartbeats(now: ContinuousClock.Instant, effects: inout [HealthEffect]) {
        while let top = ttlDeadlines.min, top.at <= now {
            ttlDeadlines.removeMin()
            guard var check = checks[top.key], check.generation == top.generation, let deadline = check.deadline
            else { continue }
            if deadline > now {
                ttlDeadlines.insert(TimedEntry(at: deadline, key: top.key, generation: top.generation))
                continue
            }
            if check.progress.status == .critical {
                // Already critical: look again one TTL later, and write the status again if the catalog never
                // took it (the write failed), since no other result will come to retry it.
                let next = now + (check.definition.ttl ?? .seconds(10)).duration
                check.deadline = next
                checks[top.key] = check
                ttlDeadlines.insert(TimedEntry(at: next, key: top.key, generation: top.generation))
                if check.catalogStatus != .critical {
                    effects.append(
                        .status(
                            CheckStatusUpdate(
                                key: top.key.instance, checkID: top.key.checkID, definition: check.definition,
                                status: .critical, output: check.lastOutput)))
                }
                continue
            }
            pendingMisses[top.key] = now
        }
    }

    /// Starts self-preservation when more than the share of TTL instances missed within the window (overdue now,
    /// or expired lately); ends it when the instances still missing (overdue, or expired and silent since) are down
    /// to half of that. The gap keeps a fleet of slow heartbeaters near the threshold from switching it on and off
    /// on every tick. While it lasts the window is frozen, so only heartbeats end it, never the passing of time.
    private mutating func judgeSelfPreservation(now: ContinuousClock.Instant) -> [HealthEffect] {
        if !selfPreservation.active, !recentMisses.isEmpty {
            recentMisses = recentMisses.filter { $0.value.at + policy.window >= now }
        }
        let population = ttlInstances.count + peerCounts.instances
        let overdue = Set(pendingMisses.keys.map(\.instance))
        let limit = policy.share * Double(population)
        if !selfPreservation.active {
            let localMissing = overdue.union(recentMisses.keys).count
            localCounts = TTLCounts(instances: ttlInstances.count, missing: localMissing)
            let missing = localMissing + peerCounts.missing
            selfPreservation.missing = missing
            selfPreservation.population = population
            guard policy.enabled, population >= policy.minimumInstances, Double(missing) > limit else { return [] }
            selfPreservation.active = true
            selfPreservation.since = now
            return [.selfPreservation(active: true, missing: missing, population: population)]
        }
        let localMissing = overdue.union(recentMisses.filter { !$0.value.recovered }.keys).count
        localCounts = TTLCounts(instances: ttlInstances.count, missing: localMissing)
        let stillMissing = localMissing + peerCounts.missing
        selfPreservation.missing = stillMissing
        selfPreservation.population = population
        guard Double(stillMissing) <= limit / 2 || population < policy.minimumInstances || !policy.enabled else {
            return []
        }
        // Heartbeats are back. Forget the window that tripped it, so the few misses still overdue expire normally
        // without tripping it again at once.
        selfPreservation.active = false
        selfPreservation.since = nil
        recentMisses.removeAll()
        return [.selfPreservation(active: false, missing: stillMissing, population: population)]
    }

    private mutating func expireHeldMisses(now: ContinuousClock.Instant) -> [HealthEffect] {
        var effects: [HealthEffect] = []
        for (key, detected) in pendingMisses where detected + policy.hold <= now {
            pendingMisses[key] = nil
            guard var check = checks[key] else { continue }
            let ttl = check.definition.ttl ?? .seconds(10)
            let next = now + ttl.duration
            check.deadline = next
            checks[key] = check
            ttlDeadlines.insert(TimedEntry(at: next, key: key, generation: check.generation))
            recentMisses[key.instance] = (now, false)
            effects += record(.critical, output: "no heartbeat within the TTL of \(ttl)", for: key, now: now)
        }
        return effects
    }

    private mutating func reapCriticalInstances(now: ContinuousClock.Instant) -> [HealthEffect] {
        var effects: [HealthEffect] = []
        var postponed: [TimedEntry] = []
        while let top = reapTimers.min, top.at <= now {
            reapTimers.removeMin()
            guard let check = checks[top.key], check.generation == top.generation, let since = check.criticalSince,
                let after = check.definition.deregisterAfterCritical, since + after.duration <= now
            else { continue }
            // While TTL expiry is paused, so is removing TTL instances; and a critical status still being written
            // is waited for, so the instance is never removed before readers saw it critical.
            if (selfPreservation.active && check.definition.type == .ttl) || check.catalogStatus != .critical {
                postponed.append(TimedEntry(at: now + .milliseconds(100), key: top.key, generation: top.generation))
                continue
            }
            effects.append(.expire(top.key.instance, checkID: top.key.checkID, definition: check.definition))
            // Looked at again in a second in case the removal failed; a removed check's entry is simply dropped.
            postponed.append(TimedEntry(at: now + .seconds(1), key: top.key, generation: top.generation))
        }
        for entry in postponed { reapTimers.insert(entry) }
        return effects
    }
}

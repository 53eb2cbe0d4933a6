import SwitchboardCore

/// Chooses the instance for one call to a service, and learns from how calls ended: the one pick a
/// ``ServiceClient`` and the gateway both make.
///
/// A pick forgets what it knew of instances that left the service (when the discovery snapshot's generation
/// changes), leaves out instances the ``OutlierDetector`` ejected, prefers instances the call has not tried yet
/// (while one remains), skips instances whose ``CircuitBreaker`` is open, lets the balancer choose, and takes a
/// permit from the chosen instance's breaker; a breaker that refuses (half-open with every trial slot taken) sends
/// the balancer back to the rest. Every call's outcome goes back through ``record(_:on:permit:knownInstances:at:)``,
/// or its permit through ``abandon(_:on:)`` when the call ended without a verdict.
///
/// The picker holds one service's outlier detector and breakers; the balancer stays with the caller, which may keep
/// several per service (the gateway keeps one per route target) and counts calls on it itself (`callStarted`,
/// `callFinished`). A value taking `at now:`, like the policies it holds: keep one per service behind a lock.
///
/// ```swift
/// var picker = InstancePicker(outlierDetection: .init(), circuitBreaker: .init())
/// var balancer = RoundRobinBalancer()
/// let all = snapshot.instances
/// if let pick = picker.pick(from: all, outOf: all, avoiding: [], balancer: &balancer, at: .now) {
///     let succeeded = await call(pick.instance)
///     let effects = picker.record(
///         succeeded, on: pick.instance.id, permit: pick.permit, knownInstances: all.count, at: .now)
///     if let ejection = effects.ejection { report(ejection) }
/// }
/// ```
public struct InstancePicker: Sendable {
    /// The instance chosen for a call, and its breaker's leave to call it (nil without breakers).
    public struct Pick: Sendable {
        /// The instance to call.
        public let instance: Instance
        /// Handed back with the call's outcome, so the breaker can tell a trial call from an earlier one.
        public let permit: CircuitBreaker.Permit?
    }

    /// What a call's outcome changed, for the caller to log, count and report.
    public struct Effects: Sendable, Hashable {
        /// The instance's circuit opened or closed.
        public var transition: CircuitBreaker.Transition?
        /// The instance was ejected from the picks for a while.
        public var ejection: OutlierDetector.Ejection?
    }

    /// The breakers' configuration; nil when calls go through no breaker.
    public let circuitBreaker: CircuitBreaker.Configuration?
    /// Nil when no instance is ever ejected.
    public private(set) var outliers: OutlierDetector?
    private var breakers: [InstanceID: CircuitBreaker] = [:]
    /// The generation of the service's instance set the tables were last pruned for (sets start at 1).
    private var prunedGeneration: UInt64 = 0
    /// Whether some breaker may not be closed. While none is, a pick asks no breaker before the balancer: breakers
    /// trip rarely, and a scan of them all on every pick would cost every call.
    private var someBreakerTripped = false
    /// The last set without its open circuits, kept while neither its source nor the open circuits change, so the
    /// balancer sees one set (one generation) from pick to pick and keeps its per-set state.
    private var withoutOpenCircuits: (source: UInt64, open: Set<InstanceID>, set: InstanceSet)?

    /// A picker ejecting instances as `outlierDetection` says and guarding each with a breaker configured by
    /// `circuitBreaker`; nil turns either off.
    public init(
        outlierDetection: OutlierDetector.Configuration?, circuitBreaker: CircuitBreaker.Configuration?
    ) {
        self.outliers = outlierDetection.map { OutlierDetector(configuration: $0) }
        self.circuitBreaker = circuitBreaker
    }

    /// Forgets the instances that are not in `all` (the service's whole current set) when `all` is a generation the
    /// picker has not seen, so the tables do not grow and a returning id starts clean; returns whether it did.
    ///
    /// ``pick(from:outOf:avoiding:balancer:context:at:)`` prunes itself; callers keeping tables of their own per
    /// instance (metric handles) call this first to learn when to prune theirs.
    @discardableResult
    public mutating func prune(to all: InstanceSet) -> Bool {
        guard prunedGeneration != all.generation else { return false }
        prunedGeneration = all.generation
        let present = Set(all.instances.map(\.id))
        breakers = breakers.filter { present.contains($0.key) }
        outliers?.retain(only: present)
        return true
    }

    /// The instance for one call out of `candidates`, or nil when none may be called.
    ///
    /// `all` is the service's whole current set (what the tables are pruned to); `candidates` the part of it the
    /// call may go to (the same set, or a route's share of it). `tried` are the instances this call tried already.
    /// The balancer is asked with `context`; counting the call on it is left to the caller.
    public mutating func pick(
        from candidates: InstanceSet, outOf all: InstanceSet, avoiding tried: Set<InstanceID>,
        balancer: inout some LoadBalancer, context: PickContext = PickContext(), at now: ContinuousClock.Instant
    ) -> Pick? {
        prune(to: all)
        var candidates = candidates
        if outliers != nil { candidates = outliers!.excludingEjected(from: candidates, at: now) }
        candidates = candidates.preferringOthers(than: tried)
        guard let configuration = circuitBreaker else {
            return balancer.pick(from: candidates, context: context).map { Pick(instance: $0, permit: nil) }
        }
        if someBreakerTripped { candidates = excludingOpenCircuits(from: candidates, at: now) }
        while !candidates.isEmpty {
            guard let instance = balancer.pick(from: candidates, context: context) else { return nil }
            if let permit = acquirePermit(for: instance.id, configuration: configuration, at: now) {
                return Pick(instance: instance, permit: permit)
            }
            // Half-open with every trial slot taken: the others may still be called.
            candidates = InstanceSet(candidates.instances.filter { $0.id != instance.id })
        }
        return nil
    }

    /// Records how a call to `instance` ended (a failure: no connection, a reset, a 5xx, a timeout; the caller
    /// decides), with the permit its pick came with; returns what that changed.
    ///
    /// `knownInstances` is how many instances the service has now, which bounds how many may be ejected at once.
    @discardableResult
    public mutating func record(
        _ succeeded: Bool, on instance: InstanceID, permit: CircuitBreaker.Permit?, knownInstances: Int,
        at now: ContinuousClock.Instant
    ) -> Effects {
        var effects = Effects()
        if let permit, let index = breakers.index(forKey: instance) {
            effects.transition = breakers.values[index].record(succeeded, for: permit, at: now)
            if effects.transition == .opened { someBreakerTripped = true }
        }
        effects.ejection = outliers?.record(succeeded, on: instance, knownInstances: knownInstances, at: now)
        return effects
    }

    /// Gives back the permit of a call to `instance` that ended without a verdict (the caller cancelled it or went
    /// away), so a half-open breaker's trial slot is free again.
    public mutating func abandon(_ permit: CircuitBreaker.Permit, on instance: InstanceID) {
        if let index = breakers.index(forKey: instance) { breakers.values[index].abandon(permit) }
    }

    /// Where `instance`'s breaker stands at `now` (closed when it has none yet).
    public func circuitState(of instance: InstanceID, at now: ContinuousClock.Instant) -> CircuitBreaker.State {
        breakers[instance]?.state(at: now) ?? .closed
    }

    /// A permit from `instance`'s breaker, made on its first call.
    ///
    /// Reached through the table's index, changed in place: `breakers[id, default: ...]` and `breakers[id]?` go
    /// through the dictionary's modify coroutines, which here allocate (the default's closure, the coroutine's
    /// frame) on every call, and this runs on every pick.
    private mutating func acquirePermit(
        for instance: InstanceID, configuration: CircuitBreaker.Configuration, at now: ContinuousClock.Instant
    ) -> CircuitBreaker.Permit? {
        if let index = breakers.index(forKey: instance) { return breakers.values[index].acquire(at: now) }
        var breaker = CircuitBreaker(configuration: configuration)
        let permit = breaker.acquire(at: now)
        breakers[instance] = breaker
        return permit
    }

    /// `candidates` without the instances whose circuit is open at `now`: the same set (same generation, so the
    /// balancer keeps its per-set state) when none of them is. Clears ``someBreakerTripped`` once every breaker is
    /// closed again.
    private mutating func excludingOpenCircuits(
        from candidates: InstanceSet, at now: ContinuousClock.Instant
    ) -> InstanceSet {
        someBreakerTripped = breakers.values.contains { $0.state(at: now) != .closed }
        guard someBreakerTripped else { return candidates }
        var open: Set<InstanceID> = []
        for instance in candidates.instances {
            if case .open = breakers[instance.id]?.state(at: now) { open.insert(instance.id) }
        }
        guard !open.isEmpty else { return candidates }
        if let cached = withoutOpenCircuits, cached.source == candidates.generation, cached.open == open {
            return cached.set
        }
        let set = InstanceSet(candidates.instances.filter { !open.contains($0.id) })
        withoutOpenCircuits = (candidates.generation, open, set)
        return set
    }
}

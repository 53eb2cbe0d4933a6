import SwitchboardCore

/// Passive outlier detection: takes an instance out of this client's picks after consecutive failed calls,
/// before the registry's health checks notice (or when only this client's path to it is broken).
///
/// Envoy's consecutive-errors rule: ``Configuration/consecutiveFailures`` failures in a row (connect failures,
/// 5xx, timeouts: the caller decides what counts) eject the instance for ``Configuration/baseEjection`` times the
/// number of times it was ejected, up to ``Configuration/maximumEjection``; each quiet ``Configuration/baseEjection``
/// after an ejection ends takes one off that count. No more than ``Configuration/maximumEjectedShare`` of the
/// instances are out at once (at least one may be), so a fault on the caller's side cannot empty the list. An
/// ejection changes nothing in the registry: the caller reports it as an observation.
///
/// A value: keep one per service behind a lock.
public struct OutlierDetector: Sendable {
    /// When an instance is ejected and for how long.
    public struct Configuration: Sendable, Hashable {
        /// Failures in a row that eject an instance.
        public var consecutiveFailures: Int
        /// The first ejection's length; the n-th lasts n times this.
        public var baseEjection: Duration
        /// No ejection lasts longer.
        public var maximumEjection: Duration
        /// The largest share of known instances out at once (0...1); one is always allowed.
        public var maximumEjectedShare: Double

        public init(
            consecutiveFailures: Int = 5, baseEjection: Duration = .seconds(30),
            maximumEjection: Duration = .seconds(300),
            maximumEjectedShare: Double = 0.5
        ) {
            self.consecutiveFailures = consecutiveFailures
            self.baseEjection = baseEjection
            self.maximumEjection = maximumEjection
            self.maximumEjectedShare = maximumEjectedShare
        }
    }

    /// One ejection, to log and report to the agent.
    public struct Ejection: Sendable, Hashable {
        public var instance: InstanceID
        /// How many times in a row (with decay) this instance has been ejected, this one included.
        public var count: Int
        public var until: ContinuousClock.Instant
        public var duration: Duration
    }

    private struct Record: Sendable {
        var consecutiveFailures = 0
        var ejections = 0
        var ejectedUntil: ContinuousClock.Instant?
    }

    public let configuration: Configuration
    private var records: [InstanceID: Record] = [:]
    /// The last filtered set, kept while neither its source nor the ejections change (see ``excludingEjected(from:at:)``).
    private var filtered: (source: UInt64, ejected: Set<InstanceID>, set: InstanceSet)?
    /// When the last ejection made so far ends: until then some instance may be out, after it none is. Spares each
    /// pick a walk through the records (and the set it built) in the usual case of no ejection at all.
    private var ejectionsEnd: ContinuousClock.Instant?

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
    }

    /// Records a call's outcome on `instance`; returns the ejection it caused, if any. `knownInstances` is how many
    /// instances the service has now (for the share limit).
    @discardableResult
    public mutating func record(
        _ succeeded: Bool, on instance: InstanceID, knownInstances: Int, at now: ContinuousClock.Instant
    ) -> Ejection? {
        var record = records[instance] ?? Record()
        defer { records[instance] = record }
        decay(&record, at: now)
        guard !succeeded else {
            record.consecutiveFailures = 0
            return nil
        }
        record.consecutiveFailures += 1
        guard record.consecutiveFailures >= max(1, configuration.consecutiveFailures),
            !isEjected(record, at: now),
            ejectedCount(at: now) < allowedEjections(knownInstances: knownInstances)
        else { return nil }
        record.ejections += 1
        record.consecutiveFailures = 0
        let length = min(configuration.maximumEjection, configuration.baseEjection * record.ejections)
        record.ejectedUntil = now + length
        ejectionsEnd = max(ejectionsEnd ?? now + length, now + length)
        return Ejection(instance: instance, count: record.ejections, until: now + length, duration: length)
    }

    /// Whether `instance` is out of the picks at `now`.
    public func isEjected(_ instance: InstanceID, at now: ContinuousClock.Instant) -> Bool {
        records[instance].map { isEjected($0, at: now) } ?? false
    }

    /// The instances ejected at `now`.
    public func ejected(at now: ContinuousClock.Instant) -> Set<InstanceID> {
        Set(records.lazy.filter { self.isEjected($0.value, at: now) }.map(\.key))
    }

    /// `candidates` without the instances ejected at `now`: the same set when none of them is, and the same
    /// filtered set (same generation) while neither the candidates nor the ejections change, so balancers keep
    /// their per-set state from pick to pick.
    public mutating func excludingEjected(from candidates: InstanceSet, at now: ContinuousClock.Instant) -> InstanceSet
    {
        guard let ejectionsEnd, now < ejectionsEnd else { return candidates }
        let ejected = ejected(at: now)
        guard candidates.instances.contains(where: { ejected.contains($0.id) }) else { return candidates }
        if let filtered, filtered.source == candidates.generation, filtered.ejected == ejected { return filtered.set }
        let set = InstanceSet(candidates.instances.filter { !ejected.contains($0.id) })
        filtered = (candidates.generation, ejected, set)
        return set
    }

    /// Forgets instances that left the service, so a returning id starts clean and the table does not grow.
    public mutating func retain(only instances: Set<InstanceID>) {
        records = records.filter { instances.contains($0.key) }
    }

    private func isEjected(_ record: Record, at now: ContinuousClock.Instant) -> Bool {
        record.ejectedUntil.map { now < $0 } ?? false
    }

    private func ejectedCount(at now: ContinuousClock.Instant) -> Int {
        records.values.count { isEjected($0, at: now) }
    }

    private func allowedEjections(knownInstances: Int) -> Int {
        max(1, Int(Double(knownInstances) * configuration.maximumEjectedShare))
    }

    /// Each full base interval since the last ejection ended takes one ejection off the count.
    private func decay(_ record: inout Record, at now: ContinuousClock.Instant) {
        guard let until = record.ejectedUntil, now >= until, record.ejections > 0 else { return }
        let base = max(1, configuration.baseEjection.nanoseconds)
        let quietIntervals = Int((now - until).nanoseconds / base)
        guard quietIntervals > 0 else { return }
        record.ejections = max(0, record.ejections - quietIntervals)
        record.ejectedUntil = record.ejections == 0 ? nil : until + configuration.baseEjection * quietIntervals
    }
}

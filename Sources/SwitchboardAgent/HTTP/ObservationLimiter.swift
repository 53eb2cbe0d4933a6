import SwitchboardCatalog
import SwitchboardCore
import Synchronization

/// At most one observation per instance per interval: when many callers see the same failure at once (a zone going
/// down), each reports it, and without a bound their reports would push real changes out of the event ring that
/// watch streams resume from.
final class ObservationLimiter: Sendable {
    let interval: Duration
    private let lastAccepted = Mutex<[InstanceKey: ContinuousClock.Instant]>([:])

    init(interval: Duration = .seconds(1)) {
        self.interval = interval
    }

    /// Takes the instance's slot and returns nil, or returns how long until the next one opens.
    func admit(_ key: InstanceKey, at now: ContinuousClock.Instant = .now) -> Duration? {
        lastAccepted.withLock { last in
            if let previous = last[key], now - previous < interval { return interval - (now - previous) }
            if last.count >= 10_000 {
                // Entries past their interval block nothing: drop them so the table stays bounded.
                last = last.filter { now - $0.value < interval }
            }
            last[key] = now
            return nil
        }
    }
}

import SwitchboardCore

/// Counts over the last `window` of time, kept in `bucketCount` buckets: old buckets fall out as time moves on,
/// so a burst of failures an hour ago says nothing about now. Time is passed in, so tests drive it.
struct SlidingWindow<Counts: AdditiveArithmetic & Sendable>: Sendable {
    private struct Bucket: Sendable {
        var tick: Int64
        var counts: Counts
    }

    let window: Duration
    private let bucketWidth: Int64
    private var buckets: [Bucket]
    private var origin: ContinuousClock.Instant?

    init(window: Duration, bucketCount: Int = 10) {
        self.window = window
        let count = max(1, bucketCount)
        bucketWidth = max(1, window.nanoseconds / Int64(count))
        buckets = Array(repeating: Bucket(tick: -1, counts: .zero), count: count)
    }

    /// Adds `counts` to the bucket of `now`.
    mutating func add(_ counts: Counts, at now: ContinuousClock.Instant) {
        // The first use fixes the time origin, so ticks are small positive numbers.
        if origin == nil { origin = now }
        let tick = self.tick(at: now)
        let slot = Int(tick % Int64(buckets.count))
        if buckets[slot].tick != tick { buckets[slot] = Bucket(tick: tick, counts: .zero) }
        buckets[slot].counts += counts
    }

    /// The sum over the window ending at `now`.
    func total(at now: ContinuousClock.Instant) -> Counts {
        let current = tick(at: now)
        var sum = Counts.zero
        for bucket in buckets where bucket.tick >= 0 && current - bucket.tick < Int64(buckets.count) {
            sum += bucket.counts
        }
        return sum
    }

    /// Forgets everything (a circuit that closes starts afresh).
    mutating func reset() {
        for index in buckets.indices { buckets[index] = Bucket(tick: -1, counts: .zero) }
    }

    private func tick(at now: ContinuousClock.Instant) -> Int64 {
        guard let origin else { return 0 }
        return max(0, (now - origin).nanoseconds / bucketWidth)
    }
}

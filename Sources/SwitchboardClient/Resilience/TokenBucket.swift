import SwitchboardCore

/// A rate limiter that allows bursts up to a capacity and a steady rate after that.
///
/// The bucket holds up to ``capacity`` tokens and gains ``refillPerSecond`` a second; a call takes one, and with
/// none left it is refused, with the time until the next token (a `Retry-After`). A value: keep one per limited
/// thing behind a lock.
public struct TokenBucket: Sendable {
    /// The largest burst.
    public let capacity: Double
    /// The steady rate.
    public let refillPerSecond: Double
    private var tokens: Double
    private var updated: ContinuousClock.Instant?

    /// A full bucket.
    public init(capacity: Double, refillPerSecond: Double) {
        self.capacity = max(1, capacity)
        self.refillPerSecond = max(0, refillPerSecond)
        tokens = self.capacity
    }

    /// Takes a token if there is one.
    public mutating func tryTake(at now: ContinuousClock.Instant) -> Bool {
        tryTake(1, at: now)
    }

    /// Takes `count` tokens (at most the capacity) if there are that many: a call that stands for several, as when
    /// one of N limiters sharing a rate charges N per call.
    public mutating func tryTake(_ count: Double, at now: ContinuousClock.Instant) -> Bool {
        refill(at: now)
        let cost = min(max(count, 0), capacity)
        guard tokens >= cost else { return false }
        tokens -= cost
        return true
    }

    /// Tokens available at `now`.
    public mutating func available(at now: ContinuousClock.Instant) -> Double {
        refill(at: now)
        return tokens
    }

    /// How long until `count` tokens (one by default, at most the capacity) are available (zero if they are); nil
    /// if the bucket never refills.
    public mutating func timeUntilAvailable(_ count: Double = 1, at now: ContinuousClock.Instant) -> Duration? {
        refill(at: now)
        let cost = min(max(count, 0), capacity)
        if tokens >= cost { return .zero }
        guard refillPerSecond > 0 else { return nil }
        return .nanoseconds(Int64(((cost - tokens) / refillPerSecond * 1e9).rounded(.up)))
    }

    private mutating func refill(at now: ContinuousClock.Instant) {
        guard let last = updated else {
            updated = now
            return
        }
        guard now > last else { return }
        tokens = min(capacity, tokens + Double((now - last).nanoseconds) / 1e9 * refillPerSecond)
        updated = now
    }
}

import SwitchboardCore

/// How long to wait before a retry: exponential growth with full jitter.
///
/// Attempt n waits a random time between zero and `min(maximum, initial * multiplier^n)`. The randomness spreads
/// the retries of many callers that failed together (AWS's "full jitter"), so they do not arrive together again.
public struct Backoff: Sendable, Hashable {
    /// The ceiling of the first retry's wait.
    public var initial: Duration
    /// No wait is longer than this.
    public var maximum: Duration
    /// How much the ceiling grows per attempt.
    public var multiplier: Double

    public init(initial: Duration = .milliseconds(25), maximum: Duration = .seconds(1), multiplier: Double = 2) {
        self.initial = initial
        self.maximum = maximum
        self.multiplier = multiplier
    }

    /// The ceiling of the wait before retry `attempt` (0 for the first retry).
    public func ceiling(forAttempt attempt: Int) -> Duration {
        let limit = Double(maximum.nanoseconds)
        var nanoseconds = min(limit, Double(initial.nanoseconds))
        for _ in 0..<max(0, attempt) where nanoseconds < limit {
            nanoseconds = min(limit, nanoseconds * max(1, multiplier))
        }
        return .nanoseconds(Int64(nanoseconds))
    }

    /// The wait before retry `attempt`: uniformly random up to its ceiling.
    public func delay(forAttempt attempt: Int, using random: inout some RandomNumberGenerator) -> Duration {
        let ceiling = ceiling(forAttempt: attempt).nanoseconds
        guard ceiling > 0 else { return .zero }
        return .nanoseconds(Int64.random(in: 0...ceiling, using: &random))
    }

    /// The wait before retry `attempt`, with the system's randomness.
    public func delay(forAttempt attempt: Int) -> Duration {
        var random = SystemRandomNumberGenerator()
        return delay(forAttempt: attempt, using: &random)
    }
}

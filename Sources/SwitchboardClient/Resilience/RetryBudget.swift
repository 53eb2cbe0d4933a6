import SwitchboardCore

/// Caps retries at a share of the calls a client makes, so that when a service struggles its callers do not
/// multiply the load on it (every caller retrying three times turns an overload into a 4x overload).
///
/// Finagle's and Envoy's rule: over a sliding window, retries may add at most ``Configuration/ratio`` of the
/// original calls, with a floor of ``Configuration/minimumPerSecond`` so a caller with little traffic can still
/// retry. A value: keep one per call site behind a lock; call ``recordCall(at:)`` for every original call and
/// ``tryRetry(at:)`` before each retry.
public struct RetryBudget: Sendable {
    /// How much extra load retries may add.
    public struct Configuration: Sendable, Hashable {
        /// Retries allowed per original call over the window (0.2: at most 20% extra load).
        public var ratio: Double
        /// Retries per second always allowed, whatever the traffic.
        public var minimumPerSecond: Double
        /// How far back calls and retries count.
        public var window: Duration

        public init(ratio: Double = 0.2, minimumPerSecond: Double = 10, window: Duration = .seconds(10)) {
            self.ratio = ratio
            self.minimumPerSecond = minimumPerSecond
            self.window = window
        }
    }

    struct Counts: AdditiveArithmetic, Sendable {
        var calls = 0
        var retries = 0
        static var zero: Self { Self() }
        static func + (lhs: Self, rhs: Self) -> Self {
            Self(calls: lhs.calls + rhs.calls, retries: lhs.retries + rhs.retries)
        }
        static func - (lhs: Self, rhs: Self) -> Self {
            Self(calls: lhs.calls - rhs.calls, retries: lhs.retries - rhs.retries)
        }
    }

    public let configuration: Configuration
    private var window: SlidingWindow<Counts>

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        window = SlidingWindow(window: configuration.window)
    }

    /// Counts an original call (not a retry).
    public mutating func recordCall(at now: ContinuousClock.Instant) {
        window.add(Counts(calls: 1), at: now)
    }

    /// Whether one more retry fits the budget; if it does, it is counted.
    public mutating func tryRetry(at now: ContinuousClock.Instant) -> Bool {
        let counts = window.total(at: now)
        let seconds = Double(configuration.window.nanoseconds) / 1e9
        let allowed = max(configuration.minimumPerSecond * seconds, configuration.ratio * Double(counts.calls))
        guard Double(counts.retries) + 1 <= allowed else { return false }
        window.add(Counts(retries: 1), at: now)
        return true
    }
}

/// A per-instance circuit breaker: stops sending calls to an instance whose recent calls mostly fail, lets a few
/// trial calls through after a pause, and resumes when they succeed.
///
/// Closed, it counts outcomes over a sliding window; once at least ``Configuration/minimumCalls`` calls are in the
/// window and the failure rate reaches ``Configuration/failureRateThreshold``, it opens. Open, it refuses calls
/// for ``Configuration/openDuration``. Then it is half-open: up to ``Configuration/halfOpenProbes`` trial calls go
/// through at once; that many successes close it, one failure opens it again.
///
/// A value: keep one per instance behind a lock. Every call asks ``acquire(at:)`` for a ``Permit`` and hands it back
/// with the outcome to ``record(_:for:at:)``, so the result of a call started before the circuit opened is not
/// mistaken for a trial call's.
public struct CircuitBreaker: Sendable {
    /// When a breaker opens and how it recovers.
    public struct Configuration: Sendable, Hashable {
        /// The share of failed calls in the window (0...1) that opens the circuit.
        public var failureRateThreshold: Double
        /// Fewer calls than this in the window never open it (one failure out of one says little).
        public var minimumCalls: Int
        /// How far back outcomes count.
        public var window: Duration
        /// How long an open circuit refuses calls before trying again.
        public var openDuration: Duration
        /// Trial calls let through at once when half-open, and the successes that close it.
        public var halfOpenProbes: Int

        public init(
            failureRateThreshold: Double = 0.5, minimumCalls: Int = 10, window: Duration = .seconds(10),
            openDuration: Duration = .seconds(5), halfOpenProbes: Int = 3
        ) {
            self.failureRateThreshold = failureRateThreshold
            self.minimumCalls = minimumCalls
            self.window = window
            self.openDuration = openDuration
            self.halfOpenProbes = halfOpenProbes
        }
    }

    /// Where a breaker stands.
    public enum State: Sendable, Hashable {
        case closed
        case open(until: ContinuousClock.Instant)
        case halfOpen
    }

    /// Leave to make one call; give it back with the outcome.
    ///
    /// A permit belongs to the period it was given in (closed, or one half-open spell): its outcome is ignored
    /// once the breaker has moved on, so a slow call cannot count in a period it did not start in.
    public struct Permit: Sendable, Hashable {
        /// Whether it is a trial call of a half-open breaker (else a call while closed).
        public let isProbe: Bool
        let period: UInt64
    }

    /// What a call's outcome did to the breaker, for logs and metrics.
    public enum Transition: Sendable, Hashable {
        case opened
        case closed
    }

    struct Outcomes: AdditiveArithmetic, Sendable {
        var successes = 0
        var failures = 0
        static var zero: Self { Self() }
        static func + (lhs: Self, rhs: Self) -> Self {
            Self(successes: lhs.successes + rhs.successes, failures: lhs.failures + rhs.failures)
        }
        static func - (lhs: Self, rhs: Self) -> Self {
            Self(successes: lhs.successes - rhs.successes, failures: lhs.failures - rhs.failures)
        }
    }

    public let configuration: Configuration
    private var window: SlidingWindow<Outcomes>
    private var openUntil: ContinuousClock.Instant?
    private var halfOpen = false
    private var probesInFlight = 0
    private var probeSuccesses = 0
    /// Bumped on every change of state; permits carry the period they were given in.
    private var period: UInt64 = 0

    public init(configuration: Configuration = Configuration()) {
        self.configuration = configuration
        window = SlidingWindow(window: configuration.window)
    }

    /// The state at `now` (an open circuit whose pause is over reads as half-open).
    public func state(at now: ContinuousClock.Instant) -> State {
        if halfOpen { return .halfOpen }
        if let openUntil { return now < openUntil ? .open(until: openUntil) : .halfOpen }
        return .closed
    }

    /// Leave to call now, or nil while open (or while half-open with every trial slot taken).
    public mutating func acquire(at now: ContinuousClock.Instant) -> Permit? {
        switch state(at: now) {
        case .closed:
            return Permit(isProbe: false, period: period)
        case .open:
            return nil
        case .halfOpen:
            if !halfOpen {
                halfOpen = true
                openUntil = nil
                period += 1
            }
            guard probesInFlight < max(1, configuration.halfOpenProbes) else { return nil }
            probesInFlight += 1
            return Permit(isProbe: true, period: period)
        }
    }

    /// Records how a call made under `permit` ended; returns the transition it caused, if any.
    @discardableResult
    public mutating func record(_ succeeded: Bool, for permit: Permit, at now: ContinuousClock.Instant) -> Transition? {
        // The breaker moved on since this call started: its outcome says nothing about the current period.
        guard permit.period == period else { return nil }
        if permit.isProbe {
            probesInFlight = max(0, probesInFlight - 1)
            guard succeeded else { return open(at: now) }
            probeSuccesses += 1
            guard probeSuccesses >= max(1, configuration.halfOpenProbes) else { return nil }
            halfOpen = false
            probesInFlight = 0
            probeSuccesses = 0
            period += 1
            window.reset()
            return .closed
        } else {
            window.add(succeeded ? Outcomes(successes: 1) : Outcomes(failures: 1), at: now)
            guard !succeeded else { return nil }
            let totals = window.total(at: now)
            let calls = totals.successes + totals.failures
            guard calls >= configuration.minimumCalls,
                Double(totals.failures) >= configuration.failureRateThreshold * Double(calls)
            else { return nil }
            return open(at: now)
        }
    }

    /// Gives back a permit whose call ended without a verdict (the caller cancelled it).
    public mutating func abandon(_ permit: Permit) {
        if permit.isProbe, permit.period == period { probesInFlight = max(0, probesInFlight - 1) }
    }

    private mutating func open(at now: ContinuousClock.Instant) -> Transition {
        period += 1
        openUntil = now + configuration.openDuration
        halfOpen = false
        probesInFlight = 0
        probeSuccesses = 0
        window.reset()
        return .opened
    }
}

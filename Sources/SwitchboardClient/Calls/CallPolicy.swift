/// The resilience of one call site: how long to wait, when to retry, when to stop calling an instance.
///
/// Every part is optional and composes with the others: a call passes the rate limiter and the bulkhead, then
/// each attempt goes to an instance that is neither ejected by outlier detection nor behind an open circuit, with
/// its own timeout; a failed attempt is retried on another instance while the retry budget allows.
public struct CallPolicy: Sendable {
    /// How long one attempt may take, until the answer's body has arrived whole: an instance that answers the head
    /// and then stalls is as failed as one that never answers. Raise it for call sites that fetch large bodies.
    public var attemptTimeout: Duration
    /// Retries after the first attempt (0: none).
    public var maximumRetries: Int
    /// Waits between attempts.
    public var retryBackoff: Backoff
    /// The share of extra load retries may add; nil: no budget (not recommended).
    public var retryBudget: RetryBudget.Configuration?
    /// Per-instance circuit breakers; nil: none.
    public var circuitBreaker: CircuitBreaker.Configuration?
    /// Passive outlier detection; nil: none.
    public var outlierDetection: OutlierDetector.Configuration?
    /// Calls under way at once through this call site (a bulkhead); more are refused at once. nil: no limit.
    public var maximumConcurrentCalls: Int?
    /// A token bucket on calls through this call site; nil: no limit.
    public var rateLimit: RateLimit?
    /// The largest response body read.
    public var maximumResponseBytes: Int

    /// A token bucket's size.
    public struct RateLimit: Sendable, Hashable {
        public var burst: Double
        public var perSecond: Double

        public init(burst: Double, perSecond: Double) {
            self.burst = burst
            self.perSecond = perSecond
        }
    }

    public init(
        attemptTimeout: Duration = .seconds(2), maximumRetries: Int = 2,
        retryBackoff: Backoff = Backoff(initial: .milliseconds(5), maximum: .milliseconds(200)),
        retryBudget: RetryBudget.Configuration? = RetryBudget.Configuration(),
        circuitBreaker: CircuitBreaker.Configuration? = CircuitBreaker.Configuration(),
        outlierDetection: OutlierDetector.Configuration? = OutlierDetector.Configuration(),
        maximumConcurrentCalls: Int? = nil, rateLimit: RateLimit? = nil, maximumResponseBytes: Int = 16 * 1024 * 1024
    ) {
        self.attemptTimeout = attemptTimeout
        self.maximumRetries = maximumRetries
        self.retryBackoff = retryBackoff
        self.retryBudget = retryBudget
        self.circuitBreaker = circuitBreaker
        self.outlierDetection = outlierDetection
        self.maximumConcurrentCalls = maximumConcurrentCalls
        self.rateLimit = rateLimit
        self.maximumResponseBytes = maximumResponseBytes
    }
}

import Foundation
import HTTPTypes
import NIOCore
import Prometheus
import SwitchboardCore
import Synchronization

/// The limits that keep one caller from taking the agent down: a rate of writes per caller, and a ceiling on
/// requests held open (blocking queries and watch streams).
public struct RequestLimitsConfiguration: Sendable, Hashable {
    /// Writes per second each caller may make (its token's accessor, or without one its IP address); 0: no
    /// limit. Heartbeats are not counted: they touch memory only.
    public var writesPerSecond: Double
    /// How many writes a caller may make at once after being idle.
    public var writeBurst: Int
    /// How many blocking queries and watch streams the agent holds at once; beyond, 429 with `Retry-After`.
    public var maximumHeldRequests: Int
    /// How many connections the agent keeps open at once (its listeners together); beyond, new ones are closed as
    /// they arrive.
    public var maximumConnections: Int

    public init(
        writesPerSecond: Double = 1000, writeBurst: Int = 2000, maximumHeldRequests: Int = 10_000,
        maximumConnections: Int = 10_000
    ) {
        self.maximumConnections = maximumConnections
        self.writesPerSecond = writesPerSecond
        self.writeBurst = writeBurst
        self.maximumHeldRequests = maximumHeldRequests
    }
}

/// Enforces ``RequestLimitsConfiguration`` and counts what it refused, for `/metrics`.
public final class RequestLimits: Sendable {
    public let configuration: RequestLimitsConfiguration
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    private let buckets = Mutex<[String: Bucket]>([:])
    private let held = Atomic<Int>(0)
    /// Where refusals are counted.
    private let metrics: AgentMetrics?

    public init(configuration: RequestLimitsConfiguration = RequestLimitsConfiguration(), metrics: AgentMetrics? = nil)
    {
        self.configuration = configuration
        self.metrics = metrics
    }

    /// Blocking queries and streams held now.
    public var heldRequests: Int { held.load(ordering: .relaxed) }

    /// Takes one write from the caller's allowance, or throws 429 saying when to retry.
    func admitWrite(from context: AgentRequestContext) throws(APIError) {
        let rate = configuration.writesPerSecond
        guard rate > 0 else { return }
        // A token's writes share its allowance wherever they come from; callers without one (anonymous, or ACLs
        // off) are told apart by their address.
        let accessor = context.authority.accessorID.flatMap { $0 == ACLToken.anonymousAccessorID ? nil : $0 }
        let caller =
            accessor.map { "token:\($0)" } ?? context.remoteAddress?.ipAddress.map { "address:\($0)" } ?? "unknown"
        let now = ContinuousClock.now
        let burst = Double(max(1, configuration.writeBurst))
        let wait: Double? = buckets.withLock { buckets in
            var bucket = buckets[caller] ?? Bucket(tokens: burst, updated: now)
            let elapsed = now - bucket.updated
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket.tokens = min(burst, bucket.tokens + seconds * rate)
            bucket.updated = now
            defer {
                buckets[caller] = bucket
                // Callers idle long enough to be full again are forgotten, so the table stays small.
                if buckets.count > 10_000 {
                    let refill = Duration.seconds(burst / rate)
                    buckets = buckets.filter { now - $0.value.updated < refill }
                }
            }
            guard bucket.tokens >= 1 else { return (1 - bucket.tokens) / rate }
            bucket.tokens -= 1
            return nil
        }
        guard let wait else { return }
        metrics?.writesRateLimited.increment()
        throw APIError(
            .tooManyRequests, .rateLimited,
            "too many writes from this caller: at most \(Self.format(rate)) per second (burst \(Int(burst)))",
            retryAfter: max(1, Int(wait.rounded(.up))))
    }

    /// Holds one blocking query or stream for the duration of `body`, or throws 429 when the agent holds its
    /// maximum.
    func holding<Result>(_ body: () async throws -> Result) async throws -> Result {
        try beginHolding()
        defer { endHolding() }
        return try await body()
    }

    /// Counts one more request held (429 when the agent holds its maximum); ``endHolding()`` when it ends.
    func beginHolding() throws(APIError) {
        let now = held.wrappingAdd(1, ordering: .relaxed).newValue
        guard now <= configuration.maximumHeldRequests else {
            held.wrappingSubtract(1, ordering: .relaxed)
            throw heldMaximumReached()
        }
    }

    /// A 429 now when the agent already holds its maximum: for a stream, whose own count is taken only once its
    /// answer has started, too late for a status.
    func refuseIfHoldingMaximum() throws(APIError) {
        if heldRequests >= configuration.maximumHeldRequests { throw heldMaximumReached() }
    }

    func endHolding() {
        held.wrappingSubtract(1, ordering: .relaxed)
    }

    private func heldMaximumReached() -> APIError {
        metrics?.heldRequestsRefused.increment()
        return APIError(
            .tooManyRequests, .rateLimited,
            "the agent holds its maximum of \(configuration.maximumHeldRequests) blocking queries and streams;"
                + " retry later or raise --max-held-requests", retryAfter: 1)
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(value)
    }
}

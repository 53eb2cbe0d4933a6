import NIOCore
import SwitchboardClient
import SwitchboardCore
import Synchronization

/// What a route does to the requests it takes, besides sending them on.
struct RoutePolicies: Sendable {
    var authentication: AuthenticationRequirement?
    var rateLimit: RateLimiter?
    var cache: ResponseCache?
    var requestHeaders = HeaderEdits()
    var responseHeaders = HeaderEdits()
    var cors: CORSPolicy?
}

/// Headers set (replacing any of the same name) and removed on one side of a route.
struct HeaderEdits: Sendable {
    /// Set: name as written in the file, value.
    var fields: [(name: String, value: String)] = []
    /// Lower-cased names.
    var remove: Set<String> = []

    var isEmpty: Bool { fields.isEmpty && remove.isEmpty }

    /// Whether a field of this (lower-cased) name is dropped from the message: removed, or replaced by a set one.
    func drops(_ lowercasedName: String) -> Bool {
        remove.contains(lowercasedName) || fields.contains { $0.name.lowercased() == lowercasedName }
    }

    func writeSetFields(to buffer: inout ByteBuffer) {
        for field in fields {
            buffer.writeString(field.name)
            buffer.writeStaticString(": ")
            buffer.writeString(field.value)
            buffer.writeStaticString("\r\n")
        }
    }
}

/// A token bucket per caller (API key, user or client address) on one route: `burst` requests at once, then
/// `rate` a second. Shared by every event loop; the table of buckets is bounded, forgetting full buckets first.
///
/// A ``shared`` limit is the limit of all the gateways together, split evenly across those the registry lists as
/// live: with N of them, each request here costs N tokens, so each gateway lets a caller through at `rate / N`
/// (with bursts of `burst / N`), and the split follows gateways as they come and go. Gateways count nothing
/// between them: a caller spread unevenly over them gets less than the whole limit, never more than it per
/// gateway.
final class RateLimiter: Sendable {
    enum Key: String, Sendable {
        case apiKey = "api-key"
        case user
        case clientIP = "client-ip"
    }

    /// What a request was told.
    struct Decision: Sendable {
        var allowed: Bool
        var remaining: Int
        /// Whole seconds until a request would be let through (for `Retry-After`), when refused.
        var retryAfter: Int
    }

    let key: Key
    let rate: Double
    let burst: Int
    /// Whether the limit is split across the live gateways.
    let shared: Bool
    private let buckets = Mutex<[String: TokenBucket]>([:])
    private static let bucketLimit = 100_000

    init(key: Key, rate: Double, burst: Int, shared: Bool = false) {
        self.key = key
        self.rate = rate
        self.burst = burst
        self.shared = shared
    }

    /// Takes over `previous`'s buckets when it limits the same way: a reloaded route file must not hand every
    /// caller a full burst again. (Requests still counted on `previous` until the new table is in force are lost:
    /// a reload's moment.)
    func keepBuckets(of previous: RateLimiter) {
        guard previous !== self, previous.key == key, previous.rate == rate, previous.burst == burst,
            previous.shared == shared
        else { return }
        let kept = previous.buckets.withLock { $0 }
        buckets.withLock { $0 = kept }
    }

    /// Whether `caller` may go on; `gateways` is how many gateways share the limit (1 unless ``shared``).
    func decide(for caller: String, gateways: Int = 1, at now: ContinuousClock.Instant = .now) -> Decision {
        let cost = Double(shared ? max(1, gateways) : 1)
        return buckets.withLock { buckets in
            if buckets[caller] == nil {
                if buckets.count >= Self.bucketLimit {
                    // Full buckets hold no information: a new bucket is full too.
                    buckets = buckets.filter {
                        var bucket = $0.value; return bucket.available(at: now) < Double(burst)
                    }
                    if buckets.count >= Self.bucketLimit { buckets.removeAll(keepingCapacity: true) }
                }
                buckets[caller] = TokenBucket(capacity: Double(burst), refillPerSecond: rate)
            }
            let allowed = buckets[caller]!.tryTake(cost, at: now)
            let remaining = Int(buckets[caller]!.available(at: now) / cost)
            var retryAfter = 0
            if !allowed, let wait = buckets[caller]!.timeUntilAvailable(cost, at: now) {
                retryAfter = max(1, Int(wait.seconds.rounded(.up)))
            }
            return Decision(allowed: allowed, remaining: remaining, retryAfter: retryAfter)
        }
    }
}

/// Cross-origin rules for browser callers: preflight `OPTIONS` requests are answered by the gateway, and
/// responses to allowed origins carry the `Access-Control-*` headers.
struct CORSPolicy: Sendable {
    /// Allowed origins, exact; `*` allows any (never with credentials: the origin is then echoed).
    var origins: [String]
    var methods: [String]
    var headers: [String]
    var exposedHeaders: [String]
    var credentials: Bool
    var maxAge: Int

    func allows(origin: String) -> Bool {
        origins.contains("*") || origins.contains(origin)
    }

    /// The `Access-Control-Allow-Origin` value for an allowed `origin`.
    func allowOrigin(_ origin: String) -> String {
        origins.contains("*") && !credentials ? "*" : origin
    }

    /// Headers added to an actual (not preflight) response to `origin`.
    func writeResponseHeaders(origin: String, to buffer: inout ByteBuffer) {
        buffer.writeString("Access-Control-Allow-Origin: \(allowOrigin(origin))\r\n")
        if allowOrigin(origin) != "*" { buffer.writeStaticString("Vary: Origin\r\n") }
        if credentials { buffer.writeStaticString("Access-Control-Allow-Credentials: true\r\n") }
        if !exposedHeaders.isEmpty {
            buffer.writeString("Access-Control-Expose-Headers: \(exposedHeaders.joined(separator: ", "))\r\n")
        }
    }

    /// The headers of the answer to a preflight from `origin`.
    func preflightHeaders(origin: String, requestedHeaders: String?) -> [(String, String)] {
        var headers = [("Access-Control-Allow-Origin", allowOrigin(origin))]
        if allowOrigin(origin) != "*" { headers.append(("Vary", "Origin")) }
        headers.append(("Access-Control-Allow-Methods", methods.joined(separator: ", ")))
        if !self.headers.isEmpty {
            headers.append(("Access-Control-Allow-Headers", self.headers.joined(separator: ", ")))
        } else if let requestedHeaders, !requestedHeaders.isEmpty {
            headers.append(("Access-Control-Allow-Headers", requestedHeaders))
        }
        if credentials { headers.append(("Access-Control-Allow-Credentials", "true")) }
        headers.append(("Access-Control-Max-Age", String(maxAge)))
        return headers
    }
}

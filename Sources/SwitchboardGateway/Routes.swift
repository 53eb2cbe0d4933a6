import SwitchboardClient
import SwitchboardCore

/// Which instances one route (or one side of a weighted split) sends to: a service, narrowed by tags and metadata
/// (a canary is the same service with another tag).
struct RouteTarget: Hashable, Sendable {
    var service: ServiceName
    var query: InstanceQuery
    /// Its share of a weighted split.
    var weight: Int
}

/// How a route picks among its target's instances.
enum BalancerKind: String, Sendable, CaseIterable {
    case roundRobin = "round-robin"
    case random
    case weighted
    case leastRequests = "least-requests"
    /// The client library's hash ring, keyed by a route's ``StickySessions`` (not named in route files: `sticky`
    /// chooses it).
    case consistentHash = "consistent-hash"

    /// The kinds a route file's `balancer` may name.
    static let named: [BalancerKind] = [.roundRobin, .random, .weighted, .leastRequests]

    func make() -> any LoadBalancer {
        switch self {
        case .roundRobin: RoundRobinBalancer()
        case .random: RandomBalancer()
        case .weighted: WeightedRoundRobinBalancer()
        case .leastRequests: LeastRequestsBalancer()
        case .consistentHash: ConsistentHashBalancer()
        }
    }
}

/// How a route keeps a caller on one instance: the key its requests are hashed by on the client library's ring
/// (``ConsistentHashBalancer``), so the same key reaches the same instance while it is healthy, and only the keys of
/// an instance that leaves move (to the next instance on the ring).
enum StickySessions: Sendable, Equatable {
    /// A cookie of this name; the gateway sets one (a random token, `HttpOnly`, `Path=/`, `SameSite=Lax`, with
    /// `Max-Age` when given) on the answer to a caller that sent none, when `sets`.
    case cookie(name: String, sets: Bool, maxAge: Duration?)
    /// A request header's value (a user or session id the caller sends).
    case header(String)
}

/// One route of the route file: what requests it takes, where they go, and what is done on the way.
final class Route: Sendable {
    let name: String
    /// The path prefix, matched on segment boundaries (`/api/cart` takes `/api/cart/1` and `/api/cart?x`, not
    /// `/api/carts`) unless it ends with `/`.
    let prefix: String
    /// Host names (lower-cased, no port); `*.example.com` takes any subdomain. Empty: any host.
    let hosts: [String]
    /// Empty: any method.
    let methods: Set<String>
    /// Header conditions: the lower-cased name and the exact value, or nil for "present".
    let headers: [(name: String, value: String?)]
    let targets: [RouteTarget]
    /// What replaces the matched prefix; nil keeps the path as it came.
    let rewrite: String?
    let timeout: Duration?
    let retries: Int?
    let balancer: BalancerKind
    /// Sticky sessions; nil: every request is balanced on its own.
    let sticky: StickySessions?
    let policies: RoutePolicies
    /// For a route answered by several services at once; ``targets`` then holds the first part's, for logs.
    let aggregate: AggregateSpec?

    init(
        name: String, prefix: String, hosts: [String] = [], methods: Set<String> = [],
        headers: [(name: String, value: String?)] = [], targets: [RouteTarget], rewrite: String? = nil,
        timeout: Duration? = nil, retries: Int? = nil, balancer: BalancerKind = .roundRobin,
        sticky: StickySessions? = nil, policies: RoutePolicies = RoutePolicies(), aggregate: AggregateSpec? = nil
    ) {
        self.sticky = sticky
        self.aggregate = aggregate
        self.name = name
        self.prefix = prefix
        self.hosts = hosts
        self.methods = methods
        self.headers = headers
        self.targets = targets
        self.rewrite = rewrite
        self.timeout = timeout
        self.retries = retries
        self.balancer = sticky == nil ? balancer : .consistentHash
        self.policies = policies
    }

    /// Whether `other` takes the same requests (its targets and policies aside).
    func matchesAlike(_ other: Route) -> Bool {
        prefix == other.prefix && hosts == other.hosts && methods == other.methods
            && headers.elementsEqual(other.headers) { $0.name == $1.name && $0.value == $1.value }
    }

    /// The rest of `path` after the prefix when the route takes `request`, else nil.
    func match(_ request: RequestHead, path: Substring) -> Substring? {
        guard let rest = Self.afterPrefix(prefix, of: path) else { return nil }
        if !methods.isEmpty, !methods.contains(request.method) {
            // A PURGE goes where the GET it purges went, on a route whose cache takes purges.
            guard request.method == "PURGE", methods.contains("GET"), policies.cache?.allowsPurge == true else {
                return nil
            }
        }
        if !hosts.isEmpty {
            guard let host = request.fields.first("host").map(Self.hostName),
                hosts.contains(where: { Self.host(host, matches: $0) })
            else { return nil }
        }
        for condition in headers {
            let values = request.fields.values(named: condition.name)
            if let wanted = condition.value {
                guard values.contains(wanted) else { return nil }
            } else if values.isEmpty {
                return nil
            }
        }
        return rest
    }

    /// The path the instance receives for a request whose path after the prefix is `rest` (query included).
    func upstreamPath(original: String, rest: Substring) -> String {
        guard let rewrite else { return original }
        if rest.isEmpty || rest.first == "?" { return rewrite + rest }
        if rewrite.hasSuffix("/") && rest.first == "/" { return rewrite + rest.dropFirst() }
        // A prefix ending in "/" leaves a rest without one: the rewrite's last segment must not swallow it.
        if !rewrite.hasSuffix("/") && rest.first != "/" { return rewrite + "/" + rest }
        return rewrite + rest
    }

    static func afterPrefix(_ prefix: String, of path: Substring) -> Substring? {
        guard path.hasPrefix(prefix) else { return nil }
        let rest = path.dropFirst(prefix.count)
        if prefix.hasSuffix("/") || rest.isEmpty || rest.first == "/" || rest.first == "?" { return rest }
        return nil
    }

    /// `Host` without its port, lower-cased.
    static func hostName(_ header: String) -> String {
        var host = Substring(header)
        if host.hasPrefix("[") {
            if let close = host.firstIndex(of: "]") { host = host[...close] }
        } else if let colon = host.lastIndex(of: ":") {
            host = host[..<colon]
        }
        if host.hasSuffix(".") { host = host.dropLast() }
        return host.lowercased()
    }

    static func host(_ host: String, matches pattern: String) -> Bool {
        if pattern.hasPrefix("*.") { return host.hasSuffix(pattern.dropFirst(1)) && host.count > pattern.count - 1 }
        return host == pattern
    }
}

/// A request's route and where it goes.
struct RouteMatch: Sendable {
    /// Nil for the routing without a route file (`/<service>/...`).
    var route: Route?
    var target: RouteTarget
    /// The path and query the instance receives.
    var path: String
    /// What followed the route's prefix in the path (no query).
    var rest: Substring = ""
}

/// The routes of a gateway, in the order they are tried; the first that takes a request wins (as in Envoy).
final class RouteTable: Sendable {
    let routes: [Route]
    let authentication: Authentication
    /// Where the table came from (`default` without a route file), for logs.
    let source: String

    init(routes: [Route], authentication: Authentication = Authentication(), source: String) {
        self.routes = routes
        self.authentication = authentication
        self.source = source
    }

    /// Carries over from the table in force what a reload must not reset: the rate-limit buckets of each route
    /// whose limit is unchanged. A route is the same one when its name and what it matches are: an unnamed route
    /// is named by its place, and routes inserted before it must not hand it another route's buckets.
    func keepState(of previous: RouteTable) {
        var before: [String: (route: Route, limiter: RateLimiter)] = [:]
        for route in previous.routes {
            if let limiter = route.policies.rateLimit { before[route.name] = (route, limiter) }
        }
        for route in routes {
            guard let limiter = route.policies.rateLimit, let old = before[route.name], old.route.matchesAlike(route)
            else { continue }
            limiter.keepBuckets(of: old.limiter)
        }
    }

    /// The route of `request`, with one target picked by weight (`roll` in 0..<total weight).
    func match(_ request: RequestHead, roll: (Int) -> Int) -> RouteMatch? {
        let target = request.target
        guard target.hasPrefix("/") else { return nil }
        let pathEnd = target.firstIndex(of: "?") ?? target.endIndex
        for route in routes {
            guard let rest = route.match(request, path: target[..<pathEnd]) else { continue }
            // The rest shares the target's indices: from it on, the query included.
            let fullRest = target[rest.startIndex...]
            let picked: RouteTarget
            if route.targets.count == 1 {
                picked = route.targets[0]
            } else {
                var point = roll(route.targets.reduce(0) { $0 + $1.weight })
                picked =
                    route.targets.first { target in
                        point -= target.weight
                        return point < 0
                    } ?? route.targets[route.targets.count - 1]
            }
            return RouteMatch(
                route: route, target: picked, path: route.upstreamPath(original: target, rest: fullRest), rest: rest)
        }
        return nil
    }

    /// The shortest time any route gives an instance to answer, for how often connections check deadlines.
    var shortestTimeout: Duration? { routes.compactMap(\.timeout).min() }
}

extension HeaderFields {
    /// Every value of the field called `name` (lower-cased), as sent.
    func values(named name: String) -> [String] {
        fields.indices.filter { lowercasedName(at: $0) == name }.map { value(at: $0) }
    }
}

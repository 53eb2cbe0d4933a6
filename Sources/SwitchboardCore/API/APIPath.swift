/// The paths of the agent's native HTTP API (v1), built in one place.
///
/// Every part that calls the API (the client library, the CLI, the gateway) builds its paths here, and the agent's
/// route definitions are checked against them by the test suite, so a path changes in one place or not at all.
/// Path segments are percent-encoded (an instance id may hold ':' or '/'); service names never need it.
///
/// ```swift
/// let path = APIPath.instance(payment, id: p1)        // "/v1/services/payment/instances/p1"
/// let target = APIPath.target(APIPath.service(payment), APIQuery(InstanceQuery(tags: ["v2"])))
/// ```
public enum APIPath {
    /// `GET`: the agent itself.
    public static let agent = "/v1/agent"
    /// `GET`: every service with its counts.
    public static let services = "/v1/services"
    /// `GET`: the whole catalog's event stream.
    public static let catalogWatch = "/v1/watch"
    /// `GET`: the change log.
    public static let events = "/v1/events"
    /// `GET`: the API's OpenAPI document.
    public static let openAPIDocument = "/v1/openapi.yaml"
    /// `GET`: metrics in the Prometheus text format.
    public static let metrics = "/metrics"

    /// `PUT`: creates the first management token, once.
    public static let aclBootstrap = "/v1/acl/bootstrap"
    /// `GET`: every token (without secrets); `POST`: a new token.
    public static let aclTokens = "/v1/acl/tokens"
    /// `GET`: the token the request presents.
    public static let aclTokenSelf = "/v1/acl/token/self"
    /// `GET`: what the request's token may do (`?service=` names the services to answer for).
    public static let aclRights = "/v1/acl/rights"
    /// `GET`: every policy; `POST`: a new policy.
    public static let aclPolicies = "/v1/acl/policies"

    /// `GET`, `PUT` (its description and policies), `DELETE`: one token, by accessor id.
    public static func aclToken(accessorID: String) -> String {
        "\(aclTokens)/\(PercentEncoding.component(accessorID))"
    }

    /// `GET`, `PUT`, `DELETE`: one policy.
    public static func aclPolicy(name: String) -> String {
        "\(aclPolicies)/\(PercentEncoding.component(name))"
    }

    /// `GET`: the instances of `service`.
    public static func service(_ service: ServiceName) -> String {
        "\(services)/\(service.rawValue)"
    }

    /// `GET`: the event stream of `service`.
    public static func serviceWatch(_ service: ServiceName) -> String {
        "\(Self.service(service))/watch"
    }

    /// `GET`, `PUT` (register), `DELETE` (deregister): one instance.
    public static func instance(_ service: ServiceName, id: InstanceID) -> String {
        "\(Self.service(service))/instances/\(PercentEncoding.component(id.rawValue))"
    }

    /// `PUT`: a heartbeat for the instance's TTL checks.
    public static func heartbeat(_ service: ServiceName, id: InstanceID) -> String {
        "\(instance(service, id: id))/heartbeat"
    }

    /// `PUT`: maintenance (drain) on or off.
    public static func maintenance(_ service: ServiceName, id: InstanceID) -> String {
        "\(instance(service, id: id))/maintenance"
    }

    /// `POST`: what a client saw of the instance.
    public static func observations(_ service: ServiceName, id: InstanceID) -> String {
        "\(instance(service, id: id))/observations"
    }

    /// `path` with `query` (left out when empty).
    public static func target(_ path: String, _ query: APIQuery) -> String {
        query.isEmpty ? path : "\(path)?\(query)"
    }
}

/// The query string of an API request, escaped as the agent reads it.
public struct APIQuery: Sendable, Hashable, CustomStringConvertible {
    private var items: [String] = []

    public init() {}

    /// A lookup's or a watch's filters: `status=…&tag=…&meta=key:value`.
    public init(_ query: InstanceQuery) {
        items = [query.parameters]
    }

    /// Adds `name=value`, escaped.
    public mutating func add(_ name: String, _ value: String) {
        items.append("\(name)=\(PercentEncoding.component(value))")
    }

    /// Adds a blocking query's `index` and `wait` (in milliseconds).
    public mutating func add(_ blocking: BlockingQuery) {
        add("index", String(blocking.index))
        add("wait", "\(max(0, blocking.wait.nanoseconds / 1_000_000))ms")
    }

    public var isEmpty: Bool { items.isEmpty }

    /// `a=1&b=2`.
    public var description: String { items.joined(separator: "&") }
}

/// A read held by the agent until something newer than `index` exists, or `wait` passes (`?index=N&wait=D`).
public struct BlockingQuery: Sendable, Hashable {
    /// The `X-Switchboard-Index` of the caller's last answer.
    public var index: UInt64
    /// How long the agent may hold the request (it cuts waits longer than its maximum, and adds up to 1/16 jitter).
    public var wait: Duration

    public init(index: UInt64, wait: Duration) {
        self.index = index
        self.wait = wait
    }
}

/// The health of a check or an instance, as every part of Switchboard reports it.
///
/// One definition of "healthy" (passing or warning) is shared by the API, DNS, the client library and the gateway,
/// so an instance never looks alive to one caller and dead to another.
public enum HealthStatus: String, Codable, Sendable, Hashable, CaseIterable, Comparable {
    /// Every check passes.
    case passing
    /// Degraded but serving (HTTP 429, or a check that reported a warning); still receives traffic.
    case warning
    /// Failing; receives no traffic.
    case critical
    /// Drained by an operator: registered, but out of every lookup.
    case maintenance

    /// Whether callers may send traffic to an instance in this status.
    public var isHealthy: Bool { self == .passing || self == .warning }

    private var severity: Int {
        switch self {
        case .passing: 0
        case .warning: 1
        case .critical: 2
        case .maintenance: 3
        }
    }

    /// Orders statuses from best to worst, so `max` of several checks gives the instance's status.
    public static func < (lhs: HealthStatus, rhs: HealthStatus) -> Bool { lhs.severity < rhs.severity }
}

/// How many instances are in each status, as `GET /v1/services` and `GET /v1/agent` report them.
public struct StatusCounts: Codable, Hashable, Sendable {
    public var passing = 0
    public var warning = 0
    public var critical = 0
    public var maintenance = 0

    public init() {}

    /// The number of instances counted, in any status.
    public var total: Int { passing + warning + critical + maintenance }

    /// Adds `delta` instances in `status`.
    public mutating func add(_ status: HealthStatus, _ delta: Int = 1) {
        switch status {
        case .passing: passing += delta
        case .warning: warning += delta
        case .critical: critical += delta
        case .maintenance: maintenance += delta
        }
    }
}

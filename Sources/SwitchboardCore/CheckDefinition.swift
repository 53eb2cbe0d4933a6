/// The three ways Switchboard can tell whether an instance is alive.
public enum CheckKind: String, Codable, Sendable, Hashable, CaseIterable {
    /// The instance proves it is alive by heartbeating before its TTL runs out.
    case ttl
    /// The agent polls an HTTP URL: 2xx passing, 429 warning, anything else critical.
    case http
    /// The agent opens a TCP connection: connected within the timeout means passing.
    case tcp
}

/// A validated health-check definition, as registered with an instance and kept in the store.
///
/// One flat shape for all kinds mirrors the JSON users write; validation guarantees that only the fields of the
/// check's own kind are set and that every default has been filled in, so the health checker never has to guess.
public struct CheckDefinition: Hashable, Sendable, Codable {
    public var type: CheckKind
    /// A display name for operators; optional.
    public var name: String?
    /// TTL checks: how long a heartbeat keeps the check passing.
    public var ttl: HumanDuration?
    /// HTTP checks: the URL to poll.
    public var url: String?
    /// HTTP checks: the request method (default GET).
    public var method: String?
    /// HTTP checks: extra request headers.
    public var headers: [String: String]?
    /// HTTP checks: a substring the response body must contain to pass.
    public var expectBody: String?
    /// TCP checks: `host:port` (or `[v6]:port`) to connect to.
    public var target: String?
    /// HTTP and TCP checks: time between probes.
    public var interval: HumanDuration?
    /// HTTP and TCP checks: how long one probe may take.
    public var timeout: HumanDuration?
    /// Consecutive successes needed to turn passing (damps flapping).
    public var successesBeforePassing: Int
    /// Consecutive failures needed to turn critical (damps flapping).
    public var failuresBeforeCritical: Int
    /// The status before the first result: critical by default, so no traffic reaches an instance that never answered.
    public var initialStatus: HealthStatus
    /// Remove the instance after the check has been critical this long.
    public var deregisterAfterCritical: HumanDuration?

    /// Creates a definition; prefer ``CheckRequest/validated(field:)`` for user input, which checks every rule.
    public init(
        type: CheckKind,
        name: String? = nil,
        ttl: HumanDuration? = nil,
        url: String? = nil,
        method: String? = nil,
        headers: [String: String]? = nil,
        expectBody: String? = nil,
        target: String? = nil,
        interval: HumanDuration? = nil,
        timeout: HumanDuration? = nil,
        successesBeforePassing: Int = 1,
        failuresBeforeCritical: Int = 1,
        initialStatus: HealthStatus = .critical,
        deregisterAfterCritical: HumanDuration? = nil
    ) {
        self.type = type
        self.name = name
        self.ttl = ttl
        self.url = url
        self.method = method
        self.headers = headers
        self.expectBody = expectBody
        self.target = target
        self.interval = interval
        self.timeout = timeout
        self.successesBeforePassing = successesBeforePassing
        self.failuresBeforeCritical = failuresBeforeCritical
        self.initialStatus = initialStatus
        self.deregisterAfterCritical = deregisterAfterCritical
    }
}

extension Character {
    var isControlCharacter: Bool {
        unicodeScalars.contains { $0.properties.generalCategory == .control }
    }
}

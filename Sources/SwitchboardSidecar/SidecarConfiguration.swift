import SwitchboardClient
import SwitchboardCore

/// What a sidecar registers, how it checks the service beside it, and what it runs.
///
/// The service knows nothing of Switchboard: the sidecar probes it itself (an HTTP path or a TCP connect, with
/// thresholds like the agent's checks), registers it with a TTL check, and reports each probe's outcome as a heartbeat
/// with its status, so the registry follows the service's health at the probe's pace, and an instance whose sidecar
/// died expires by its TTL.
public struct SidecarConfiguration: Sendable {
    /// How the sidecar checks the service.
    public enum Health: Sendable, Hashable {
        /// `GET http://address:port<path>`: 2xx passing, 429 warning, anything else critical (the agent's rule).
        case http(path: String)
        /// A TCP connect to `address:port`.
        case tcp
    }

    public var service: ServiceName
    public var id: InstanceID
    /// Where callers reach the service (and where the sidecar probes it).
    public var address: String
    public var port: Int
    public var tags: [String]
    public var meta: [String: String]
    public var weight: Int
    public var health: Health
    /// Time between probes; the TTL check's TTL is three of them (at least 1 s).
    public var interval: Duration
    /// How long one probe may take (at most the interval).
    public var timeout: Duration
    /// Consecutive passing probes before a critical service is reported passing again.
    public var successesBeforePassing: Int
    /// Consecutive failing probes before a passing service is reported critical.
    public var failuresBeforeCritical: Int
    /// On SIGTERM: how long the instance stays in maintenance (callers stop picking it, calls under way finish)
    /// before it deregisters and the child is told to stop.
    public var drainTime: Duration
    /// How long the child may take to exit after SIGTERM before it gets SIGKILL.
    public var stopTimeout: Duration
    /// The service's command and arguments, started and supervised by the sidecar; empty: the service runs already
    /// and the sidecar only watches it.
    public var command: [String]
    /// The agents, and how to reach them.
    public var agents: AgentConnectionConfiguration

    public init(
        service: ServiceName, id: InstanceID, address: String = "127.0.0.1", port: Int, tags: [String] = [],
        meta: [String: String] = [:], weight: Int = 1, health: Health = .tcp, interval: Duration = .seconds(1),
        timeout: Duration? = nil, successesBeforePassing: Int = 1, failuresBeforeCritical: Int = 1,
        drainTime: Duration = .seconds(2), stopTimeout: Duration = .seconds(10), command: [String] = [],
        agents: AgentConnectionConfiguration = AgentConnectionConfiguration()
    ) {
        self.service = service
        self.id = id
        self.address = address
        self.port = port
        self.tags = tags
        self.meta = meta
        self.weight = weight
        self.health = health
        self.interval = interval
        self.timeout = min(timeout ?? .seconds(1), interval)
        self.successesBeforePassing = successesBeforePassing
        self.failuresBeforeCritical = failuresBeforeCritical
        self.drainTime = drainTime
        self.stopTimeout = stopTimeout
        self.command = command
        self.agents = agents
    }

    /// The TTL of the registered check: three probe intervals, at least a second.
    public var ttl: Duration { max(.seconds(1), interval * 3) }

    /// The probe as a check definition the client library's prober runs; a bad path or address is refused here,
    /// naming the flag.
    func probeDefinition() throws(ValidationError) -> CheckDefinition {
        var request: CheckRequest
        switch health {
        case .http(let path):
            guard path.hasPrefix("/") else {
                throw ValidationError(field: "health", message: "--health must be a path starting with '/' or 'tcp'")
            }
            request = CheckRequest(type: "http")
            request.url = "http://\(hostForURL):\(port)\(path)"
        case .tcp:
            request = CheckRequest(type: "tcp")
            request.target = "\(address):\(port)"
        }
        request.interval = "\(max(1, interval.milliseconds))ms"
        request.timeout = "\(max(1, timeout.milliseconds))ms"
        return try request.validated(field: "health")
    }

    /// The registration the agent gets: the TTL check the sidecar heartbeats, starting critical until a probe passes.
    var registration: RegistrationRequest {
        var check = CheckRequest(type: "ttl")
        check.name = "sidecar probe"
        check.ttl = "\(ttl.milliseconds)ms"
        return RegistrationRequest(
            address: address, port: port, tags: tags, meta: meta, weight: weight, checks: [check])
    }

    private var hostForURL: String { address.contains(":") ? "[\(address)]" : address }
}

extension Duration {
    var milliseconds: Int64 { components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000 }
}

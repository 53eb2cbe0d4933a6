import SwitchboardClient
import SwitchboardCore

/// How a gateway registers itself in the registry: so callers find the gateways through DNS or the client library
/// like any other service, and operators see them, with their routes, on the agent's dashboard.
///
/// The instance carries a TTL check the gateway heartbeats and, with an admin address, an HTTP check the agent runs
/// on the admin `/health`; its meta names the admin address (`gateway-admin`), where `/routes` tells what traffic goes
/// where. On graceful shutdown the gateway drains (maintenance), so callers stop picking it while it still answers,
/// then deregisters before it stops listening.
public struct GatewayRegistration: Sendable {
    /// The meta key holding the admin address (`host:port`), which the dashboard reads the routes from.
    public static let adminMetaKey = "gateway-admin"
    /// The tag every registered gateway carries, whatever its service is called.
    public static let tag = "gateway"

    /// The service the gateway registers as (`gateway`, say).
    public var service: ServiceName
    /// The host other processes reach the gateway at; nil: the listen host, or 127.0.0.1 when the gateway listens
    /// on every interface.
    public var advertisedHost: String?
    /// How long the instance stays in maintenance before it deregisters on shutdown.
    public var drainTime: Duration

    public init(service: ServiceName, advertisedHost: String? = nil, drainTime: Duration = .seconds(2)) {
        self.service = service
        self.advertisedHost = advertisedHost
        self.drainTime = drainTime
    }

    /// The client library's registration of a gateway listening on `port` (and on `adminPort`, when it has an admin
    /// address), with TLS to its callers or not.
    func configuration(
        listenHost: String, port: Int, adminPort: Int?, tls: Bool
    ) throws -> ServiceRegistration.Configuration {
        let host = advertisedHost ?? (["0.0.0.0", "::", ""].contains(listenHost) ? "127.0.0.1" : listenHost)
        var meta: [String: String] = [:]
        var checks: [CheckRequest] = []
        if let adminPort {
            meta[Self.adminMetaKey] = "\(host):\(adminPort)"
            var check = CheckRequest(type: "http")
            check.name = "gateway admin /health"
            check.url = "http://\(host):\(adminPort)/health"
            check.interval = "1s"
            check.timeout = "500ms"
            checks.append(check)
        }
        if tls { meta["scheme"] = "https" }
        return ServiceRegistration.Configuration(
            service: service, id: try InstanceID("\(service.rawValue)-\(host):\(port)"), address: host, port: port,
            tags: [Self.tag], meta: meta, extraChecks: checks, drainTime: drainTime)
    }
}

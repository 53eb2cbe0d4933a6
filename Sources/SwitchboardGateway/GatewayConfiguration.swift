import SwitchboardClient
import SwitchboardTLS

/// How a gateway listens, finds services and talks to their instances.
public struct GatewayConfiguration: Sendable {
    /// The address callers send every request to.
    public var host: String
    /// 0 picks a free port.
    public var port: Int
    /// The agents the gateway learns instances from.
    public var agents: [String]
    /// Without a route file, `/<service>/...` goes to `<service>`'s instances carrying this tag, and only those:
    /// a service is not exposed to callers by accident.
    public var publicTag: String
    /// How long connecting to an instance may take before another instance is tried.
    public var connectTimeout: Duration
    /// How long an instance may take to start answering (the response head) before the caller gets a 504.
    public var responseTimeout: Duration
    /// Connections to other instances tried after the first one failed to connect.
    public var connectRetries: Int
    /// Idle keep-alive connections kept per instance and event loop.
    public var idleConnectionsPerInstance: Int
    /// A caller's connection idle this long between requests is closed.
    public var clientIdleTimeout: Duration
    /// An upgraded (WebSocket) connection through which nothing passed either way for this long is closed.
    public var webSocketIdleTimeout: Duration
    /// The CA file that verifies instances reached over TLS (tagged `tls`, or with meta `scheme: https`); nil: the
    /// system's trust roots.
    public var upstreamCAFile: String?
    /// Passive outlier detection on the instances behind the gateway.
    public var outlierDetection: OutlierDetector.Configuration
    /// At shutdown, how long callers' exchanges under way may take to finish.
    public var shutdownGrace: Duration
    /// A circuit breaker per instance: an instance whose recent calls mostly fail gets none for a while; nil
    /// turns them off.
    public var circuitBreaker: CircuitBreaker.Configuration?
    /// The route file (YAML); nil routes `/<service>/...` to services tagged ``publicTag``.
    public var routeFile: String?
    /// How often the route file is read again; a changed, valid file replaces the routes without dropping a
    /// connection, a broken one is reported and the routes in force stay.
    public var routeReloadInterval: Duration
    /// Where the access log goes: one JSON line per request.
    public var accessLog: AccessLogDestination
    /// The admin address (`/metrics`, `/routes`, `/health`), as host and port; nil serves none.
    public var admin: (host: String, port: Int)?
    /// TLS on the listener (certificates re-read when they change); nil: plain HTTP.
    public var tls: TLSSettings?
    /// How the gateway trusts `https://` agents (its CA file, a client certificate); nil: the system's CAs.
    public var agentTLS: AgentTLSConfiguration?
    /// The ACL token the gateway presents to agents with ACLs on (it needs read on the services it routes to).
    public var agentToken: String?
    /// The gateway registers itself as an instance of a service (and then needs write on it); nil: it does not.
    public var registration: GatewayRegistration?

    /// Where the access log goes.
    public enum AccessLogDestination: Sendable, Equatable {
        case off
        case standardOutput
        /// A file, appended to.
        case file(String)
    }

    /// A configuration; every default is the command line's, except the access log (off here, standard output
    /// for `switchboard gateway`) and the admin address (none here, 127.0.0.1:7081 there).
    public init(
        host: String = "127.0.0.1", port: Int = 7080, agents: [String] = ["http://127.0.0.1:7500"],
        publicTag: String = "public", connectTimeout: Duration = .seconds(1), responseTimeout: Duration = .seconds(30),
        connectRetries: Int = 2, idleConnectionsPerInstance: Int = 64, clientIdleTimeout: Duration = .seconds(60),
        outlierDetection: OutlierDetector.Configuration = OutlierDetector.Configuration(),
        circuitBreaker: CircuitBreaker.Configuration? = CircuitBreaker.Configuration(),
        shutdownGrace: Duration = .seconds(10), routeFile: String? = nil,
        routeReloadInterval: Duration = .seconds(1), accessLog: AccessLogDestination = .off,
        admin: (host: String, port: Int)? = nil, tls: TLSSettings? = nil, agentTLS: AgentTLSConfiguration? = nil,
        agentToken: String? = nil, registration: GatewayRegistration? = nil,
        webSocketIdleTimeout: Duration = .seconds(300), upstreamCAFile: String? = nil
    ) {
        self.upstreamCAFile = upstreamCAFile
        self.webSocketIdleTimeout = webSocketIdleTimeout
        self.registration = registration
        self.agentToken = agentToken
        self.tls = tls
        self.agentTLS = agentTLS
        self.host = host
        self.port = port
        self.agents = agents
        self.publicTag = publicTag
        self.connectTimeout = connectTimeout
        self.responseTimeout = responseTimeout
        self.connectRetries = connectRetries
        self.idleConnectionsPerInstance = idleConnectionsPerInstance
        self.clientIdleTimeout = clientIdleTimeout
        self.outlierDetection = outlierDetection
        self.circuitBreaker = circuitBreaker
        self.shutdownGrace = shutdownGrace
        self.routeFile = routeFile
        self.routeReloadInterval = routeReloadInterval
        self.accessLog = accessLog
        self.admin = admin
    }
}

/// How the agent answers DNS.
public struct DNSConfiguration: Sendable, Hashable {
    /// The address UDP and TCP listen on.
    public var host: String
    /// 0 picks a free port (the same one for UDP and TCP).
    public var port: Int
    /// The zone answered for: `payment.service.<domain>`.
    public var domain: DNSName
    /// The TTL of answers, in seconds. 0 (the default) keeps resolvers from caching an instance that just died.
    public var ttl: UInt32
    /// How long a resolver may cache "no such name" (the SOA's minimum, RFC 2308), in seconds.
    public var negativeTTL: UInt32
    /// The most address or SRV records in one answer (nil: as many as fit; below 1 counts as 1). The records kept
    /// differ from answer to answer, since answers are shuffled first.
    public var answerLimit: Int?
    /// The UDP payload size this server announces and answers up to with EDNS0.
    public var maximumUDPPayload: Int
    /// A TCP connection silent this long is closed.
    public var tcpIdleTimeout: Duration
    /// TCP connections open at once; more are closed as they arrive.
    public var maximumTCPConnections: Int

    public init(
        host: String = "127.0.0.1", port: Int = 7553, domain: DNSName = DNSConfiguration.defaultDomain,
        ttl: UInt32 = 0, negativeTTL: UInt32 = 0, answerLimit: Int? = nil, maximumUDPPayload: Int = 1232,
        tcpIdleTimeout: Duration = .seconds(10), maximumTCPConnections: Int = 512
    ) {
        self.host = host
        self.port = port
        self.domain = domain
        self.ttl = ttl
        self.negativeTTL = negativeTTL
        self.answerLimit = answerLimit
        self.maximumUDPPayload = maximumUDPPayload
        self.tcpIdleTimeout = tcpIdleTimeout
        self.maximumTCPConnections = maximumTCPConnections
    }

    /// `switchboard.`
    public static let defaultDomain = DNSName(validatedLabels: [Array("switchboard".utf8)])
}

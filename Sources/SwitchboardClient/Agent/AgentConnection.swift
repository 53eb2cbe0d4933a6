import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import SwitchboardCore
import Synchronization

/// How a client reaches its agents.
public struct AgentConnectionConfiguration: Sendable {
    /// Base URLs of the agents to use, in order of preference (`http://127.0.0.1:7500`).
    public var agents: [String]
    /// How long a connection attempt may take before the next agent is tried.
    public var connectTimeout: Duration
    /// How long a plain request (not a watch) may take.
    public var requestTimeout: Duration
    /// How long a watch stream may stay silent before it counts as dead (the agent sends a comment every 15 s).
    public var streamIdleTimeout: Duration
    /// For `https://` agents: the CA to trust and a client certificate to present; nil trusts the system's CAs.
    public var tls: AgentTLSConfiguration?
    /// The ACL token's secret every request presents (`X-Switchboard-Token`), for agents with ACLs on; nil: none.
    public var token: String?

    public init(
        agents: [String] = ["http://127.0.0.1:7500"], connectTimeout: Duration = .seconds(1),
        requestTimeout: Duration = .seconds(5), streamIdleTimeout: Duration = .seconds(40),
        tls: AgentTLSConfiguration? = nil, token: String? = nil
    ) {
        self.token = token
        self.agents = agents
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
        self.streamIdleTimeout = streamIdleTimeout
        self.tls = tls
    }
}

/// How a client trusts agents served over TLS, and proves who it is to agents that require client certificates.
///
/// The files are read when this is made, so a file that does not load is reported there, naming it.
public struct AgentTLSConfiguration: Sendable {
    /// A PEM file of the CA(s) that sign the agents' certificates; nil: the system's trust store.
    public let caFile: String?
    /// A PEM client certificate (chain) and its key, for agents that require one (`--tls-client-ca`).
    public let clientCertificateFile: String?
    public let clientKeyFile: String?
    /// What AsyncHTTPClient is given (the agent's own client of other agents uses it too).
    package let configuration: TLSConfiguration

    public init(
        caFile: String? = nil, clientCertificateFile: String? = nil, clientKeyFile: String? = nil
    ) throws(SwitchboardClientError) {
        self.caFile = caFile
        self.clientCertificateFile = clientCertificateFile
        self.clientKeyFile = clientKeyFile
        var tls = TLSConfiguration.makeClientConfiguration()
        if let caFile {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            } catch {
                throw SwitchboardClientError(
                    .invalidConfiguration, "the CA file \(caFile) is not a PEM certificate: \(error)")
            }
        }
        switch (clientCertificateFile, clientKeyFile) {
        case (let certificateFile?, let keyFile?):
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
            } catch {
                throw SwitchboardClientError(
                    .invalidConfiguration,
                    "the client certificate \(certificateFile) or key \(keyFile) does not load: \(error)")
            }
        case (nil, nil):
            break
        default:
            throw SwitchboardClientError(
                .invalidConfiguration, "a client certificate and its key go together: give both files")
        }
        configuration = tls
    }
}

/// An agent's answer as it came: status, the catalog index it was current at, and the body.
struct AgentAnswer: Sendable {
    var status: HTTPResponseStatus
    /// `X-Switchboard-Index`, when the answer carried one.
    var index: UInt64?
    var body: ByteBuffer
    /// The agent that answered.
    var agent: String

    /// Decodes the body as `type` with Switchboard's JSON conventions.
    func decode<Answer: Decodable>(_ type: Answer.Type) throws(SwitchboardClientError) -> Answer {
        do {
            return try SwitchboardJSON.decoder().decode(type, from: Data(body.readableBytesView))
        } catch {
            throw SwitchboardClientError(
                .invalidAnswer, "the agent at \(agent) sent an answer that could not be read: \(error)")
        }
    }

    /// The agent's error body, when the answer is one.
    var apiError: APIErrorBody? {
        try? SwitchboardJSON.decoder().decode(APIErrorBody.self, from: Data(body.readableBytesView))
    }
}

/// The client's link to one or more agents: every request goes to the agent that answered last, and moves on to
/// the next when that one cannot be reached or is shutting down.
///
/// It owns its HTTP clients (short connect timeouts, so a dead agent costs a second, not AsyncHTTPClient's
/// default ten); call ``shutdown()`` when done. The calls themselves are made through ``AgentClient``, which
/// speaks the API's types over this connection.
public final class AgentConnection: Sendable {
    public let configuration: AgentConnectionConfiguration
    let httpClient: HTTPClient
    /// For watch streams: the same, plus a read timeout, since a stream that stays silent past the agent's
    /// keep-alive comments is a dead connection.
    let streamClient: HTTPClient
    private let preferred = Mutex(0)
    private let logger: Logger

    public init(configuration: AgentConnectionConfiguration = AgentConnectionConfiguration(), logger: Logger? = nil) {
        precondition(!configuration.agents.isEmpty, "AgentConnectionConfiguration.agents needs at least one agent URL")
        self.configuration = configuration
        self.logger = logger ?? Logger(label: "switchboard.client", factory: { _ in SwiftLogNoOpLogHandler() })
        var http = HTTPClient.Configuration()
        http.tlsConfiguration = configuration.tls?.configuration
        http.timeout.connect = .nanoseconds(configuration.connectTimeout.nanoseconds)
        // The client retries on another agent itself; AsyncHTTPClient retrying connects until the deadline would
        // hold a request on a dead agent.
        http.connectionPool.retryConnectionEstablishment = false
        httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
        http.timeout.read = .nanoseconds(configuration.streamIdleTimeout.nanoseconds)
        streamClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
    }

    /// A connection dropped without ``shutdown()`` (an error thrown between its creation and the owner's shutdown)
    /// still closes its HTTP clients: otherwise they would leak, and in a debug build AsyncHTTPClient traps in their
    /// deinit, taking the whole process down for one caller's mistake. After ``shutdown()`` this does nothing.
    deinit {
        httpClient.shutdown { _ in }
        streamClient.shutdown { _ in }
    }

    /// Closes the HTTP connections. Requests after this fail.
    public func shutdown() async throws {
        try await httpClient.shutdown()
        try await streamClient.shutdown()
    }

    /// A request to `agent` for `target` (a path and query from `APIPath`): the one place every call to an agent is
    /// made, so what each must carry (the ACL token) is added here once.
    func request(_ method: HTTPMethod, _ target: String, to agent: String) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: agent + target)
        request.method = method
        if let token = configuration.token { request.headers.add(name: "X-Switchboard-Token", value: token) }
        return request
    }

    /// Moves on from `agent` (if it is still the first choice): a stream to it failed.
    public func reportUnreachable(_ agent: String) {
        let agents = configuration.agents
        preferred.withLock { preferred in
            if agents[preferred % agents.count] == agent { preferred = (preferred + 1) % agents.count }
        }
    }

    /// The agent requests go to first.
    public var currentAgent: String {
        configuration.agents[preferred.withLock { $0 } % configuration.agents.count]
    }

    /// Sends a request, moving on to the next agent when one cannot be reached or answers 5xx; returns the first
    /// other answer (4xx included: what 404 means is the caller's business). `timeout` (default
    /// ``AgentConnectionConfiguration/requestTimeout``) covers every agent tried. `target` is a path with its
    /// query, from `APIPath`.
    func send(
        _ method: HTTPMethod, _ target: String, body: ByteBuffer?, timeout: Duration? = nil
    ) async throws(SwitchboardClientError) -> AgentAnswer {
        let agents = configuration.agents
        let first = preferred.withLock { $0 }
        var failures: [String] = []
        var lastServerError: AgentAnswer?
        var lastTransport: TransportFailure?
        // The timeout covers the whole request, however many agents it takes.
        let deadline = ContinuousClock.now + (timeout ?? configuration.requestTimeout)
        for attempt in 0..<agents.count {
            let remaining = deadline - .now
            guard remaining > .zero else {
                failures.append("no time left for \(agents[(first + attempt) % agents.count])")
                break
            }
            let position = (first + attempt) % agents.count
            let agent = agents[position]
            var request = self.request(method, target, to: agent)
            if let body {
                request.headers.add(name: "Content-Type", value: "application/json")
                request.body = .bytes(body)
            }
            do {
                let response = try await httpClient.execute(request, timeout: .nanoseconds(remaining.nanoseconds))
                let answerBody = try await response.body.collect(upTo: 64 * 1024 * 1024)
                if response.status.code >= 500 {
                    failures.append("\(agent) answered \(response.status.code)")
                    lastServerError = AgentAnswer(
                        status: response.status, index: nil, body: answerBody, agent: agent)
                    lastTransport = nil
                    continue
                }
                if attempt > 0 {
                    preferred.withLock { $0 = position }
                    logger.info("moved to another agent", metadata: ["agent": "\(agent)"])
                }
                let index = response.headers.first(name: "X-Switchboard-Index").flatMap { UInt64($0) }
                return AgentAnswer(status: response.status, index: index, body: answerBody, agent: agent)
            } catch {
                if Task.isCancelled { throw SwitchboardClientError(.timedOut, "the request was cancelled") }
                let failure = TransportFailure(error)
                lastTransport = failure
                lastServerError = nil
                failures.append("\(agent): \(failure)")
            }
        }
        throw SwitchboardClientError(
            .agentUnreachable, "no agent answered \(method) \(target): " + failures.joined(separator: "; "),
            status: lastServerError?.status, apiError: lastServerError?.apiError, transport: lastTransport)
    }
}

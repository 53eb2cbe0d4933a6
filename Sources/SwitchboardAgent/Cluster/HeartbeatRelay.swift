import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardCatalog
import SwitchboardClient
import SwitchboardCore
import Synchronization

/// Sends a heartbeat that reached this agent to the agent that runs the instance's checks, through the same API a
/// client would use, marked as relayed so the owner records it whatever its own view of the members says.
///
/// A heartbeat never costs an etcd write: it moves between agents only.
final class HeartbeatRelay: Sendable {
    /// The header that marks a relayed heartbeat, naming the agent that relayed it.
    static let relayedByHeader = "X-Switchboard-Relayed-By"

    let agentID: String
    let logger: Logger
    /// How long the owner has to answer before the heartbeat is answered here from the catalog.
    let timeout: Duration
    /// Owners that just failed to answer, until when they are not tried again: a dead agent stays a member until
    /// its lease runs out, and every heartbeat meanwhile must not wait for it in turn.
    private let unreachableUntil = Mutex<[String: ContinuousClock.Instant]>([:])
    /// `https` when the agents serve their API over TLS, else `http`.
    private let scheme: String
    /// With TLS: a client of its own, trusting the agents' CA and presenting this agent's certificate; shut down by
    /// ``shutdown()``. Without: the shared client.
    private let ownClient: HTTPClient?

    init(agentID: String, logger: Logger, timeout: Duration = .milliseconds(500), tls: AgentTLSConfiguration? = nil) {
        self.agentID = agentID
        self.logger = logger
        self.timeout = timeout
        scheme = tls == nil ? "http" : "https"
        ownClient = tls.map { tls in
            var configuration = HTTPClient.Configuration()
            configuration.tlsConfiguration = tls.configuration
            configuration.timeout.connect = .milliseconds(Int64(timeout / .milliseconds(1)))
            return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        }
    }

    /// Closes the TLS client's connections (the health checker calls it as it stops).
    func shutdown() async {
        try? await ownClient?.shutdown()
    }

    /// Relays one heartbeat; `nil` when the owner could not be reached or answered something unexpected.
    func send(
        _ key: InstanceKey, checkID: String? = nil, status: HealthStatus, output: String, to owner: ClusterMember,
        token: String? = nil
    ) async -> HealthChecker.HeartbeatResult? {
        let now = ContinuousClock.now
        if let until = unreachableUntil.withLock({ $0[owner.id] }), until > now { return nil }
        var request = HTTPClientRequest(
            url: "\(scheme)://\(owner.address)\(APIPath.heartbeat(key.service, id: key.id))")
        request.method = .PUT
        request.headers.add(name: Self.relayedByHeader, value: agentID)
        // The caller's own token: the owner checks it as this agent did (the ACLs are shared through etcd).
        if let token { request.headers.add(name: "X-Switchboard-Token", value: token) }
        if status != .passing || !output.isEmpty || checkID != nil {
            guard
                let body = try? SwitchboardJSON.encoder().encode(
                    HeartbeatRequest(status: status, output: output, check: checkID))
            else { return nil }
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        do {
            let response = try await (ownClient ?? HTTPClient.shared).execute(
                request, timeout: .nanoseconds(timeout.nanoseconds))
            let body = try await response.body.collect(upTo: 64 * 1024)
            switch response.status.code {
            case 200:
                let answer = try SwitchboardJSON.decoder().decode(
                    HeartbeatAnswer.self, from: Data(body.readableBytesView))
                return .recorded(status: answer.status)
            case 404: return .unknownInstance
            case 409: return .noTTLCheck
            default: return nil
            }
        } catch {
            unreachableUntil.withLock { $0[owner.id] = ContinuousClock.now + .seconds(1) }
            logger.debug(
                "could not relay a heartbeat to its owner",
                metadata: [
                    "owner": "\(owner.id)", "address": "\(owner.address)", "error": "\(TransportFailure(error))",
                ])
            return nil
        }
    }
}

import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardCore

/// The agent's native HTTP API as typed calls, over an ``AgentConnection`` (which moves on to another agent when
/// one cannot be reached).
///
/// Every part that talks to the agent (``ServiceRegistration``, ``ServiceDiscovery``, the gateway, the CLI) does so
/// through this one client: paths come from `APIPath`, bodies and answers are the API's own
/// `Codable` types, and a refusal arrives as a ``SwitchboardClientError`` carrying the agent's error body (its
/// code, message and field).
///
/// ```swift
/// let agent = AgentClient(connection: AgentConnection())
/// let payment = try await agent.lookup("payment", matching: InstanceQuery(tags: ["v2"]))
/// _ = try await agent.setMaintenance(payment.service, id: payment.instances[0].id, enabled: true, reason: "deploy")
/// ```
public struct AgentClient: Sendable {
    /// The agents this client talks to.
    public let connection: AgentConnection

    public init(connection: AgentConnection) {
        self.connection = connection
    }

    // MARK: Reads

    /// `GET /v1/agent`: the agent itself.
    public func agentInfo() async throws(SwitchboardClientError) -> AgentInfo {
        try await call(.agentInfo()).value
    }

    /// `GET /v1/services`: every service with its counts; with `blocking`, held until the catalog changes.
    public func services(blocking: BlockingQuery? = nil) async throws(SwitchboardClientError) -> ServiceList {
        try await call(.services(blocking: blocking)).value
    }

    /// `GET /v1/services/{service}`: the instances that pass `query` (healthy ones by default), with the service's
    /// index; with `blocking`, held until the service changes.
    public func lookup(
        _ service: ServiceName, matching query: InstanceQuery = InstanceQuery(), blocking: BlockingQuery? = nil,
        timeout: Duration? = nil
    ) async throws(SwitchboardClientError) -> ServiceLookup {
        try await call(.lookup(service, matching: query, blocking: blocking, timeout: timeout)).value
    }

    /// `GET /v1/services/{service}/instances/{id}`: one instance, whatever its status.
    public func instance(_ service: ServiceName, id: InstanceID) async throws(SwitchboardClientError) -> Instance {
        try await call(.instance(service, id: id)).value
    }

    /// `GET /v1/events`: the change log after `since`.
    public func events(since: UInt64, limit: Int? = nil) async throws(SwitchboardClientError) -> EventPage {
        try await call(.events(since: since, limit: limit)).value
    }

    // MARK: Writes

    /// `PUT /v1/services/{service}/instances/{id}`: registers or updates the instance; with `cas`, only while its
    /// modify index is still `cas` (0: only create).
    public func register(
        _ registration: RegistrationRequest, service: ServiceName, id: InstanceID, cas: UInt64? = nil
    ) async throws(SwitchboardClientError) -> Instance {
        try await call(.register(registration, service: service, id: id, cas: cas)).value
    }

    /// `DELETE /v1/services/{service}/instances/{id}`: removes the instance; answers it as it was.
    public func deregister(_ service: ServiceName, id: InstanceID) async throws(SwitchboardClientError) -> Instance {
        try await call(.deregister(service, id: id)).value
    }

    /// `PUT .../heartbeat`: a heartbeat for the instance's TTL checks. A refusal with status 404 means the agent
    /// does not know the instance: register it again.
    public func heartbeat(
        _ service: ServiceName, id: InstanceID, status: HealthStatus? = nil, output: String? = nil,
        timeout: Duration? = nil
    ) async throws(SwitchboardClientError) -> HeartbeatAnswer {
        try await call(.heartbeat(service, id: id, status: status, output: output, timeout: timeout)).value
    }

    /// `PUT .../maintenance`: drains the instance (out of every lookup, still registered), or brings it back.
    public func setMaintenance(
        _ service: ServiceName, id: InstanceID, enabled: Bool, reason: String? = nil
    ) async throws(SwitchboardClientError) -> Instance {
        try await call(.maintenance(service, id: id, enabled: enabled, reason: reason)).value
    }

    /// `POST .../observations`: tells the agent what this process saw of the instance; answers the logged event.
    public func report(
        _ observation: Observation, about service: ServiceName, id: InstanceID
    ) async throws(SwitchboardClientError) -> ChangeEvent {
        try await call(.observation(observation, about: service, id: id)).value
    }

    // MARK: Any call

    /// Sends `request` and decodes its answer; the answer's index and raw body come along (the CLI prints the body
    /// as the agent sent it).
    ///
    /// Throws ``SwitchboardClientError/Code/refused`` (with the status and the agent's error body) for an answer
    /// outside 2xx, ``SwitchboardClientError/Code/agentUnreachable`` when no agent answered (or every one answered
    /// 5xx), ``SwitchboardClientError/Code/invalidAnswer`` for a body that is not the expected type.
    public func call<Value>(
        _ request: AgentRequest<Value>
    ) async throws(SwitchboardClientError) -> AgentResponse<Value> {
        let answer = try await connection.send(
            request.method, request.target, body: request.body, timeout: request.timeout)
        guard (200..<300).contains(answer.status.code) else {
            let apiError = answer.apiError
            throw SwitchboardClientError(
                .refused,
                "the agent at \(answer.agent) refused \(request.method) \(request.target): "
                    + (apiError?.description ?? "\(answer.status.code) \(answer.status.reasonPhrase)"),
                status: answer.status, apiError: apiError)
        }
        return AgentResponse(
            value: try answer.decode(Value.self), index: answer.index, status: answer.status, body: answer.body,
            agent: answer.agent)
    }
}

/// One call of the agent's API: method, target and body, and the type of its answer.
///
/// Made by the static functions (one per endpoint), sent with ``AgentClient/call(_:)``.
public struct AgentRequest<Value: Decodable & Sendable>: Sendable {
    /// The HTTP method.
    public var method: HTTPMethod
    /// The path and query, built by `APIPath`.
    public var target: String
    /// The JSON body.
    public var body: ByteBuffer?
    /// How long the call may take over every agent tried (default: the connection's request timeout).
    public var timeout: Duration?

    init(_ method: HTTPMethod, _ target: String, body: (some Encodable)? = nil as String?, timeout: Duration? = nil) {
        self.method = method
        self.target = target
        self.timeout = timeout
        // Encoding the API's own request types cannot fail: every field is a string, number, array or object.
        self.body = body.flatMap { try? SwitchboardJSON.encoder().encode($0) }.map { ByteBuffer(bytes: $0) }
    }

    private init(method: HTTPMethod, target: String, encodedBody: ByteBuffer?, timeout: Duration?) {
        self.method = method
        self.target = target
        self.body = encodedBody
        self.timeout = timeout
    }

    /// The same call, its answer's body left unread: for a caller that needs only to know it succeeded, so that an
    /// answer from a newer agent it could not decode still counts as the success it is.
    public func ignoringAnswer() -> AgentRequest<IgnoredAnswer> {
        AgentRequest<IgnoredAnswer>(method: method, target: target, encodedBody: body, timeout: timeout)
    }
}

/// The answer of a call made with ``AgentRequest/ignoringAnswer()``: nothing of it is read.
public struct IgnoredAnswer: Decodable, Sendable {
    public init(from decoder: any Decoder) throws {}
}

extension AgentRequest where Value == AgentInfo {
    /// `GET /v1/agent`.
    public static func agentInfo() -> Self { Self(.GET, APIPath.agent) }
}

extension AgentRequest where Value == ServiceList {
    /// `GET /v1/services`, held until the catalog changes when `blocking`.
    public static func services(blocking: BlockingQuery? = nil) -> Self {
        var query = APIQuery()
        if let blocking { query.add(blocking) }
        return Self(.GET, APIPath.target(APIPath.services, query), timeout: blocking.map(Self.timeout(for:)))
    }
}

extension AgentRequest where Value == ServiceLookup {
    /// `GET /v1/services/{service}` with `query`'s filters, held until the service changes when `blocking`.
    public static func lookup(
        _ service: ServiceName, matching query: InstanceQuery = InstanceQuery(), blocking: BlockingQuery? = nil,
        timeout: Duration? = nil
    ) -> Self {
        var parameters = APIQuery(query)
        if let blocking { parameters.add(blocking) }
        return Self(
            .GET, APIPath.target(APIPath.service(service), parameters),
            timeout: timeout ?? blocking.map(Self.timeout(for:)))
    }
}

extension AgentRequest {
    /// A blocking query's time: its wait, the agent's jitter (up to a sixteenth) and a margin.
    static func timeout(for blocking: BlockingQuery) -> Duration {
        blocking.wait + blocking.wait / 16 + .seconds(2)
    }
}

extension AgentRequest where Value == Instance {
    /// `GET /v1/services/{service}/instances/{id}`.
    public static func instance(_ service: ServiceName, id: InstanceID) -> Self {
        Self(.GET, APIPath.instance(service, id: id))
    }

    /// `PUT /v1/services/{service}/instances/{id}`, with `?cas=` when `cas` is given.
    public static func register(
        _ registration: RegistrationRequest, service: ServiceName, id: InstanceID, cas: UInt64? = nil
    ) -> Self {
        var query = APIQuery()
        if let cas { query.add("cas", String(cas)) }
        return Self(.PUT, APIPath.target(APIPath.instance(service, id: id), query), body: registration)
    }

    /// `DELETE /v1/services/{service}/instances/{id}`.
    public static func deregister(_ service: ServiceName, id: InstanceID) -> Self {
        Self(.DELETE, APIPath.instance(service, id: id))
    }

    /// `PUT .../maintenance`.
    public static func maintenance(
        _ service: ServiceName, id: InstanceID, enabled: Bool, reason: String? = nil
    ) -> Self {
        Self(.PUT, APIPath.maintenance(service, id: id), body: MaintenanceRequest(enabled: enabled, reason: reason))
    }
}

extension AgentRequest where Value == HeartbeatAnswer {
    /// A heartbeat; a bare one (no status, no output) goes without a body, the cheapest request the agent takes.
    public static func heartbeat(
        _ service: ServiceName, id: InstanceID, status: HealthStatus? = nil, output: String? = nil,
        timeout: Duration? = nil
    ) -> Self {
        let body = status == nil && output == nil ? nil : HeartbeatRequest(status: status, output: output)
        return Self(.PUT, APIPath.heartbeat(service, id: id), body: body, timeout: timeout)
    }
}

extension AgentRequest where Value == ChangeEvent {
    /// `POST .../observations`.
    public static func observation(_ observation: Observation, about service: ServiceName, id: InstanceID) -> Self {
        Self(.POST, APIPath.observations(service, id: id), body: ObservationRequest(observation))
    }
}

extension AgentRequest where Value == EventPage {
    /// `GET /v1/events?since=&limit=`.
    public static func events(since: UInt64, limit: Int? = nil) -> Self {
        var query = APIQuery()
        query.add("since", String(since))
        if let limit { query.add("limit", String(limit)) }
        return Self(.GET, APIPath.target(APIPath.events, query))
    }
}

/// An agent's answer to an ``AgentRequest``: the decoded value, with what came with it.
public struct AgentResponse<Value: Sendable>: Sendable {
    /// The answer, decoded.
    public var value: Value
    /// `X-Switchboard-Index`: the catalog index the answer is current at.
    public var index: UInt64?
    /// The answer's status (2xx: other statuses are thrown as refusals).
    public var status: HTTPResponseStatus
    /// The body as the agent sent it.
    public var body: ByteBuffer
    /// The agent that answered.
    public var agent: String
}

import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SwitchboardCore

/// What the agent knows about one request while it is handled: who sent it, its id, and how its errors are told.
///
/// Every route of the agent's HTTP API (the native one today; the Consul and Eureka layers and the dashboard
/// later) runs with this context, so a middleware can establish the caller once (an ACL token, when ACLs come)
/// and a compatibility layer can have the same domain errors rendered its own way.
public struct AgentRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The `X-Request-ID` the caller sent, when it is a sane one.
    public var sentRequestID: String?
    /// Who is calling.
    public var caller: CallerIdentity
    /// How errors are rendered for the API the request was made to.
    public var errorRendering: any AgentErrorRendering
    /// What the caller may do, established by the ACL middleware from its token (everything, with ACLs off).
    public var authority: ACLAuthority
    /// The client's address, for the audit trail and the per-client write limit.
    public let remoteAddress: SocketAddress?
    /// The client's address as users write it (`127.0.0.1:53122`).
    public var clientAddress: String? { remoteAddress.map(hostAndPort) }

    public init(source: ApplicationRequestContextSource) {
        coreContext = CoreRequestContextStorage(source: source)
        caller = .anonymous
        errorRendering = NativeErrorRendering()
        authority = .unrestricted
        remoteAddress = source.channel.remoteAddress
    }

    /// Who is making this request, as the audit trail records a write: the accessor, never the secret.
    public var audit: AuditRecord {
        AuditRecord(accessorID: authority.accessorID ?? caller.accessorID, address: clientAddress, requestID: requestID)
    }

    /// The request's id: the caller's `X-Request-ID` when it sent one, else the one the server gave it. It goes
    /// into the logs of the request (and, with ACLs, into the audit trail). Worked out when asked: most requests
    /// never need it.
    public var requestID: String { sentRequestID ?? id }

    /// Request bodies are collected by the handlers themselves, with the API's own limit.
    public var maxUploadSize: Int { AgentHTTPAPI.maximumBodySize }
}

/// The caller of a request, as far as the agent has established it.
///
/// Anonymous until ACL tokens arrive; then a middleware resolves the request's token to its accessor and policies.
public struct CallerIdentity: Sendable, Hashable, CustomStringConvertible {
    /// The token's public accessor id, when the caller presented a known token.
    public var accessorID: String?
    /// The secret token the caller presented (Consul's `X-Consul-Token`, `?token=` or `Authorization: Bearer`), not
    /// yet checked: ACLs resolve it to an accessor. Never logged nor shown (``description`` leaves it out).
    public var presentedToken: String?

    public init(accessorID: String? = nil, presentedToken: String? = nil) {
        self.accessorID = accessorID
        self.presentedToken = presentedToken
    }

    /// A caller who presented no token.
    public static let anonymous = CallerIdentity()

    public var description: String { accessorID ?? "anonymous" }
}

/// Turns an error into the response an API answers with.
///
/// The native API answers `{"error", "message", "field"}` with the error's own status; a compatibility layer (Consul
/// answers plain text, Eureka XML or nothing) sets its own rendering on the context of its routes.
public protocol AgentErrorRendering: Sendable {
    /// The response for an error with `status` and `body`.
    func response(status: HTTPResponse.Status, body: APIErrorBody, request: Request) -> Response
}

/// The native API's errors: the error body as JSON, with the error's status.
public struct NativeErrorRendering: AgentErrorRendering {
    public init() {}

    public func response(status: HTTPResponse.Status, body: APIErrorBody, request: Request) -> Response {
        var buffer = ByteBuffer()
        buffer.writeBytes((try? SwitchboardJSON.encoder().encode(body)) ?? Data())
        buffer.writeString("\n")
        return Response(
            status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: buffer))
    }
}

/// Errors as Consul's and Eureka's servers tell them: the message as plain text, with the error's status.
public struct PlainTextErrorRendering: AgentErrorRendering {
    public init() {}

    public func response(status: HTTPResponse.Status, body: APIErrorBody, request: Request) -> Response {
        Self.response(body.message, status: status)
    }

    static func response(_ message: String, status: HTTPResponse.Status) -> Response {
        Response(
            status: status, headers: [.contentType: "text/plain; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(string: message)))
    }
}

extension AgentRequestContext {
    static let requestIDHeader = HTTPField.Name("X-Request-ID")!

    /// Takes the caller's `X-Request-ID` (when it is a sane one: printable ASCII, at most 128 bytes) as the request's
    /// id, in the logs too.
    mutating func identify(_ request: Request) {
        guard let sent = request.headers[Self.requestIDHeader], !sent.isEmpty, sent.utf8.count <= 128,
            sent.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        else { return }
        sentRequestID = sent
        logger[metadataKey: "request-id"] = "\(sent)"
    }
}

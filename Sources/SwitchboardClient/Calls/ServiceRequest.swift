import NIOCore
import NIOHTTP1
import SwitchboardCore

/// A call to a service: what `execute` sends to whichever instance it picks.
///
/// The body is a buffer, not a stream, so a failed attempt can be sent again to another instance.
public struct ServiceRequest: Sendable {
    public var method: HTTPMethod
    /// The path and query (`/orders/42?expand=items`), kept as they are.
    public var path: String
    /// Sent as they are (hop-by-hop headers aside, which AsyncHTTPClient manages).
    public var headers: HTTPHeaders
    public var body: ByteBuffer?
    /// Whether sending it twice does no harm. GET, HEAD, PUT, DELETE and OPTIONS are by default; a POST is
    /// retried only when it never reached an instance (the connection was refused) unless this is set.
    public var isIdempotent: Bool

    public init(
        method: HTTPMethod = .GET, path: String, headers: HTTPHeaders = [:], body: ByteBuffer? = nil,
        isIdempotent: Bool? = nil
    ) {
        self.method = method
        self.path = path.hasPrefix("/") ? path : "/" + path
        self.headers = headers
        self.body = body
        self.isIdempotent = isIdempotent ?? [.GET, .HEAD, .PUT, .DELETE, .OPTIONS, .TRACE].contains(method)
    }
}

/// An instance's answer, with the instance that gave it (for logs).
public struct ServiceResponse: Sendable {
    public var status: HTTPResponseStatus
    public var headers: HTTPHeaders
    public var body: ByteBuffer
    /// The instance that answered; nil for an answer a fallback made up.
    public var instance: Instance?
    /// How many attempts the call took (1 when the first instance answered, 0 for a fallback's answer).
    public var attempts: Int

    /// An answer, as a fallback makes one.
    public init(
        status: HTTPResponseStatus, headers: HTTPHeaders = [:], body: ByteBuffer = ByteBuffer(),
        instance: Instance? = nil,
        attempts: Int = 0
    ) {
        self.status = status
        self.headers = headers
        self.body = body
        self.instance = instance
        self.attempts = attempts
    }
}

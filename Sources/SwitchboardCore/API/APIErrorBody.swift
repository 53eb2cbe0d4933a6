/// The body of every error the API answers: `{"error": CODE, "message": ..., "field": ...}`.
///
/// Clients switch on ``error``; people read ``message``, which states the rule that was broken; ``field`` names the
/// request field at fault (as a JSON path such as `checks[0].interval`) when there is one.
public struct APIErrorBody: Codable, Sendable, Hashable, CustomStringConvertible {
    public var error: APIErrorCode
    public var message: String
    public var field: String?

    public init(error: APIErrorCode, message: String, field: String? = nil) {
        self.error = error
        self.message = message
        self.field = field
    }

    public var description: String {
        field.map { "\(message) (field: \($0))" } ?? message
    }
}

/// The machine-readable code of an API error. Open: a newer agent may send codes an older client does not know.
public struct APIErrorCode: RawRepresentable, Codable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String

    public init(rawValue: String) {
        self.rawValue = rawValue
    }

    public init(from decoder: any Decoder) throws {
        rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }

    public var description: String { rawValue }

    /// A field or parameter breaks a rule (400 or 422).
    public static let invalidArgument = APIErrorCode(rawValue: "invalid_argument")
    /// The body is not JSON, or not of the expected shape (400).
    public static let malformedJSON = APIErrorCode(rawValue: "malformed_json")
    /// No ACL token where one is required, or one the agent does not know (401).
    public static let unauthorized = APIErrorCode(rawValue: "unauthorized")
    /// The ACL token lacks the permission the request needs; the message names it (403).
    public static let permissionDenied = APIErrorCode(rawValue: "permission_denied")
    /// No such instance, service or route (404).
    public static let notFound = APIErrorCode(rawValue: "not_found")
    /// The path is served, but not with this method (405).
    public static let methodNotAllowed = APIErrorCode(rawValue: "method_not_allowed")
    /// A compare-and-set found another modify index, or the instance cannot take the request (409).
    public static let conflict = APIErrorCode(rawValue: "conflict")
    /// The body is larger than the agent accepts (413).
    public static let payloadTooLarge = APIErrorCode(rawValue: "payload_too_large")
    /// The body is not JSON by its content type (415).
    public static let unsupportedMediaType = APIErrorCode(rawValue: "unsupported_media_type")
    /// Too many requests of this kind (429).
    public static let rateLimited = APIErrorCode(rawValue: "rate_limited")
    /// The agent cannot take the request now (shutting down, store unreachable) (503).
    public static let unavailable = APIErrorCode(rawValue: "unavailable")
    /// Something failed inside the agent (500).
    public static let `internal` = APIErrorCode(rawValue: "internal")
}

/// An error that knows how the API reports it: the HTTP status and the body.
///
/// Domain errors (a broken validation rule, an unknown instance, a compare-and-set conflict) conform where they are
/// defined, so each decides its own status; the agent renders them, in its native form or, for a compatibility
/// layer, in another API's.
package protocol APIReportableError: Error {
    /// The HTTP status code the API answers with.
    var apiStatus: Int { get }
    /// The body the native API answers with.
    var apiErrorBody: APIErrorBody { get }
}

extension ValidationError: APIReportableError {
    /// A rule broken by a request's body: 422, naming the field.
    package var apiStatus: Int { 422 }

    package var apiErrorBody: APIErrorBody {
        APIErrorBody(error: .invalidArgument, message: message, field: field.isEmpty ? nil : field)
    }
}

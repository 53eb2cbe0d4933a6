import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SwitchboardCore

/// An error of the HTTP layer itself: a parameter that breaks a rule, a body that is not JSON, a method a path
/// does not serve, a rate limit.
///
/// Domain errors (`ValidationError`, `CatalogError`) decide their own status and body through
/// `APIReportableError` where they are defined; this type covers what only the HTTP layer knows,
/// and the errors of the frameworks beneath it (decoding, body limits, unknown routes), in ``init(converting:)``.
/// Whatever the source, the request context's ``AgentErrorRendering`` renders it, so a compatibility layer answers
/// the same mistake its own way.
public struct APIError: Error, HTTPResponseError, APIReportableError, Sendable {
    public var status: HTTPResponse.Status
    public var body: APIErrorBody
    /// For a 429: seconds until a retry may succeed (the `Retry-After` header).
    public var retryAfter: Int?

    public init(
        _ status: HTTPResponse.Status, _ code: APIErrorCode, _ message: String, field: String? = nil,
        retryAfter: Int? = nil
    ) {
        self.status = status
        self.body = APIErrorBody(error: code, message: message, field: field)
        self.retryAfter = retryAfter
    }

    public var apiStatus: Int { status.code }
    public var apiErrorBody: APIErrorBody { body }

    /// A path or query parameter that breaks a rule: 400, naming the parameter.
    public static func badParameter(_ error: ValidationError) -> APIError {
        APIError(.badRequest, .invalidArgument, error.message, field: error.field)
    }

    /// Any error a handler throws, as the API reports it.
    public init(converting error: any Error) {
        switch error {
        case let error as APIError:
            self = error
        case let error as any APIReportableError:
            self.init(HTTPResponse.Status(code: error.apiStatus), body: error.apiErrorBody)
        case let error as DecodingError:
            self = Self.converting(error)
        case is NIOTooManyBytesError:
            self.init(.contentTooLarge, .payloadTooLarge, "the request body is larger than the limit of 64 KiB")
        case let error as HTTPError:
            switch error.status {
            case .notFound:
                self.init(.notFound, .notFound, "no such route; see GET \(APIPath.openAPIDocument) for the API")
            case .methodNotAllowed:
                self.init(.methodNotAllowed, .methodNotAllowed, "this method is not allowed on this path")
            case .contentTooLarge:
                self.init(.contentTooLarge, .payloadTooLarge, "the request body is larger than the limit of 64 KiB")
            default:
                self.init(error.status, .invalidArgument, error.body ?? error.status.reasonPhrase)
            }
        default:
            self.init(.internalServerError, .internal, "internal error: \(error)")
        }
    }

    private init(_ status: HTTPResponse.Status, body: APIErrorBody) {
        self.status = status
        self.body = body
    }

    private static func converting(_ error: DecodingError) -> APIError {
        func subject(_ field: String) -> String { field.isEmpty ? "the body" : field }
        switch error {
        case .typeMismatch(let type, let context):
            let field = JSONPath.render(context.codingPath)
            return APIError(
                .badRequest, .malformedJSON, "\(subject(field)) must be \(describe(type))",
                field: field.isEmpty ? nil : field)
        case .valueNotFound(let type, let context):
            let field = JSONPath.render(context.codingPath)
            return APIError(
                .badRequest, .malformedJSON, "\(subject(field)) must be \(describe(type)), not null",
                field: field.isEmpty ? nil : field)
        case .keyNotFound(let key, let context):
            let field = JSONPath.render(context.codingPath + [key])
            return APIError(.badRequest, .malformedJSON, "\(field) is required", field: field)
        case .dataCorrupted(let context):
            let field = JSONPath.render(context.codingPath)
            if field.isEmpty {
                return APIError(.badRequest, .malformedJSON, "the body is not valid JSON")
            }
            return APIError(
                .badRequest, .malformedJSON, "\(field) is invalid: \(context.debugDescription)", field: field)
        @unknown default:
            return APIError(.badRequest, .malformedJSON, "the body could not be decoded")
        }
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: "a string"
        case is Int.Type, is UInt64.Type, is Double.Type: "a number"
        case is Bool.Type: "true or false"
        case is [String].Type, is [CheckRequest].Type: "an array"
        default: String(describing: type).contains("Dictionary") ? "an object" : "a JSON object"
        }
    }

    /// `error` in its API form as `context` renders errors; an internal error is logged first.
    static func response(to error: any Error, request: Request, context: AgentRequestContext) throws -> Response {
        let apiError = APIError(converting: error)
        apiError.logIfInternal(error, request: request, context: context)
        return try apiError.response(from: request, context: context)
    }

    /// Logs `error` when it is this server's own fault (a 500): nobody else will see it.
    func logIfInternal(_ error: any Error, request: Request, context: AgentRequestContext) {
        guard status == .internalServerError else { return }
        context.logger.error("request failed", metadata: ["error": "\(error)", "path": "\(request.uri.path)"])
    }

    /// Rendered by the request context's error rendering when there is one, else in the native form.
    public func response(from request: Request, context: some RequestContext) throws -> Response {
        let rendering = (context as? AgentRequestContext)?.errorRendering ?? NativeErrorRendering()
        var response = rendering.response(status: status, body: body, request: request)
        if let retryAfter { response.headers[.retryAfter] = String(retryAfter) }
        return response
    }
}

/// Establishes the request's identity on its context, turns every thrown error into its API form (as the request's
/// context renders errors) and stamps the catalog index on every response, unknown routes included. One middleware,
/// not one per concern: each costs every request a call.
struct APIResponseMiddleware: RouterMiddleware {
    typealias Context = AgentRequestContext

    let indexHeader: HTTPField.Name
    let currentIndex: @Sendable () -> UInt64
    /// Cluster mode: how old the agent's view of the shared store is (nil: never confirmed), for the last-contact
    /// header; `nil` for a store of the agent's own.
    let viewAge: (@Sendable () -> Duration?)?
    /// The methods served on a path no route matched, for a `405` instead of a `404`.
    let allowedMethods: @Sendable (String) -> [HTTPRequest.Method]

    func handle(
        _ request: Request, context: AgentRequestContext,
        next: (Request, AgentRequestContext) async throws -> Response
    ) async throws -> Response {
        var context = context
        context.identify(request)
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            var apiError = APIError(converting: error)
            var allow: String?
            if (error as? HTTPError)?.status == .notFound {
                let allowed = allowedMethods(request.uri.path)
                if !allowed.isEmpty {
                    let names = allowed.map(\.rawValue).joined(separator: ", ")
                    allow = names
                    apiError = APIError(
                        .methodNotAllowed, .methodNotAllowed, "\(request.method) is not served here; use \(names)")
                }
            }
            apiError.logIfInternal(error, request: request, context: context)
            response = try apiError.response(from: request, context: context)
            if let allow { response.headers[.allow] = allow }
        }
        if response.headers[indexHeader] == nil {
            response.headers[indexHeader] = String(currentIndex())
        }
        if let viewAge {
            // Never confirmed reads as "as old as can be": a client comparing ages must not take it for fresh.
            let milliseconds = viewAge().map(\.milliseconds)
            response.headers[AgentHTTPAPI.lastContactHeader] = String(milliseconds ?? Int64.max)
        }
        return response
    }
}

import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SwitchboardCatalog
import SwitchboardCore

/// An error as the HTTP API reports it: a status and the body `{"error": CODE, "message": ..., "field": ...}`.
///
/// Domain errors (validation, catalog, decoding) are turned into this in one place, ``init(converting:)``, so every
/// endpoint answers the same way for the same mistake.
public struct APIError: Error, HTTPResponseError, Sendable {
    /// Machine-readable error codes; clients switch on these, people read the message.
    public struct Code: RawRepresentable, Hashable, Sendable, Codable {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        public static let invalidArgument = Code(rawValue: "invalid_argument")
        public static let malformedJSON = Code(rawValue: "malformed_json")
        public static let notFound = Code(rawValue: "not_found")
        public static let methodNotAllowed = Code(rawValue: "method_not_allowed")
        public static let conflict = Code(rawValue: "conflict")
        public static let payloadTooLarge = Code(rawValue: "payload_too_large")
        public static let unsupportedMediaType = Code(rawValue: "unsupported_media_type")
        public static let rateLimited = Code(rawValue: "rate_limited")
        public static let unavailable = Code(rawValue: "unavailable")
        public static let `internal` = Code(rawValue: "internal")
    }

    /// The JSON body of an error response.
    public struct Body: Codable, Sendable, Hashable {
        public var error: Code
        public var message: String
        public var field: String?
    }

    public var status: HTTPResponse.Status
    public var body: Body

    public init(_ status: HTTPResponse.Status, _ code: Code, _ message: String, field: String? = nil) {
        self.status = status
        self.body = Body(error: code, message: message, field: field)
    }

    /// A path or query parameter that breaks a rule: 400, naming the parameter.
    public static func badParameter(_ error: ValidationError) -> APIError {
        APIError(.badRequest, .invalidArgument, error.message, field: error.field)
    }

    /// Maps any error a handler throws to its API form.
    public init(converting error: any Error) {
        switch error {
        case let error as APIError:
            self = error
        case let error as ValidationError:
            self.init(
                .unprocessableContent, .invalidArgument, error.message, field: error.field.isEmpty ? nil : error.field)
        case let error as CatalogError:
            if error.isInstanceNotFound {
                self.init(.notFound, .notFound, error.message)
            } else if error.isConflict {
                self.init(.conflict, .conflict, error.message, field: error.field)
            } else if error.isInvalid {
                self.init(.unprocessableContent, .invalidArgument, error.message, field: error.field)
            } else if error.isUnavailable {
                self.init(.serviceUnavailable, .unavailable, error.message)
            } else {
                self.init(.internalServerError, .internal, error.message)
            }
        case let error as DecodingError:
            self = Self.converting(error)
        case is NIOTooManyBytesError:
            self.init(.contentTooLarge, .payloadTooLarge, "the request body is larger than the limit of 64 KiB")
        case let error as HTTPError:
            switch error.status {
            case .notFound:
                self.init(.notFound, .notFound, "no such route; see GET /v1/openapi.yaml for the API")
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

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var buffer = ByteBuffer()
        buffer.writeBytes((try? SwitchboardJSON.encoder().encode(body)) ?? Data())
        buffer.writeString("\n")
        return Response(
            status: status, headers: [.contentType: "application/json"], body: ResponseBody(byteBuffer: buffer))
    }
}

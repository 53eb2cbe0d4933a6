import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SwitchboardCore

/// Reading requests: path parameters, query parameters and JSON bodies, each mistake reported naming its field.
extension AgentHTTPAPI {

    func serviceName(_ context: AgentRequestContext) throws -> ServiceName {
        // Path parameters arrive as sent; a client may percent-encode any character (':' in an id, say).
        let raw = context.parameters.get("service").map(Self.percentDecoded) ?? ""
        do {
            return try ServiceName(raw, field: "service")
        } catch {
            throw APIError.badParameter(error)
        }
    }

    func instanceID(_ context: AgentRequestContext) throws -> InstanceID {
        let raw = context.parameters.get("id").map(Self.percentDecoded) ?? ""
        do {
            return try InstanceID(raw, field: "id")
        } catch {
            throw APIError.badParameter(error)
        }
    }

    /// The query's parameters as Consul's and Eureka's servers read them (form encoding: `+` is a space, then
    /// percent-escapes decoded), in order; a parameter without `=` has an empty value.
    static func formQueryPairs(_ request: Request) -> [(name: String, value: String)] {
        guard let query = request.uri.query else { return [] }
        func decoded(_ text: Substring) -> String {
            let spaced = text.replacingOccurrences(of: "+", with: " ")
            return spaced.removingPercentEncoding ?? spaced
        }
        return query.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            return (decoded(parts[0]), parts.count > 1 ? decoded(parts[1]) : "")
        }
    }

    /// The values of form-encoded query parameter `name`, in order.
    static func formQuery(_ request: Request, _ name: String) -> [String] {
        formQueryPairs(request).filter { $0.name == name }.map(\.value)
    }

    /// `text` with percent-escapes decoded; left as it is when it is not valid percent-encoding (validation then
    /// rejects the '%').
    static func percentDecoded(_ text: String) -> String {
        text.contains("%") ? (text.removingPercentEncoding ?? text) : text
    }

    func instanceQuery(_ request: Request) throws -> InstanceQuery {
        let parameters = request.uri.queryParameters
        do throws(ValidationError) {
            var query = InstanceQuery()
            if let status = parameters["status"] {
                query.status = try InstanceQuery.StatusFilter(parsing: String(status))
            }
            query.tags = parameters.getAll("tag").map { String($0) }
            for condition in parameters.getAll("meta") {
                query.meta.append(try InstanceQuery.MetaCondition(parsing: String(condition)))
            }
            return query
        } catch {
            throw APIError.badParameter(error)
        }
    }

    func integerParameter(
        _ request: Request, _ name: String, default value: UInt64, range: ClosedRange<UInt64>
    )
        throws -> UInt64
    {
        guard let text = request.uri.queryParameters[Substring(name)] else { return value }
        guard let number = UInt64(text), range.contains(number) else {
            let message = "\(name) must be a whole number in \(range.lowerBound)...\(range.upperBound)"
            throw APIError.badParameter(ValidationError(field: name, message: message))
        }
        return number
    }

    func decodeBody<Body: Decodable>(
        _ type: Body.Type, from request: Request, context: AgentRequestContext
    )
        async throws -> Body
    {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > Self.maximumBodySize {
            throw NIOTooManyBytesError(maxBytes: Self.maximumBodySize)
        }
        let buffer = try await request.body.collect(upTo: Self.maximumBodySize)
        guard buffer.readableBytes > 0 else {
            throw APIError(.badRequest, .malformedJSON, "a JSON object body is required")
        }
        return try decodeJSON(type, from: buffer, request: request)
    }

    /// Decodes a collected body, after checking that it says it is JSON.
    func decodeJSON<Body: Decodable>(
        _ type: Body.Type, from buffer: ByteBuffer, request: Request
    ) throws -> Body {
        if let contentType = request.headers[.contentType] {
            let mediaType =
                contentType.split(separator: ";").first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
                ?? ""
            guard mediaType == "application/json" || mediaType.hasSuffix("+json") else {
                throw APIError(
                    .unsupportedMediaType,
                    .unsupportedMediaType,
                    "the body must be JSON: send Content-Type: application/json, not \(contentType)"
                )
            }
        }
        let data = Data(buffer.readableBytesView)
        do {
            return try SwitchboardJSON.decoder().decode(Body.self, from: data)
        } catch DecodingError.dataCorrupted(let context) where context.codingPath.isEmpty {
            // Foundation reports a number that does not fit its field (80.5 or 1e30 for a port) as invalid JSON
            // without a path; find the number so the user learns which field it was.
            if let parsed = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]),
                let field = Self.firstUnrepresentableNumber(in: parsed, path: [])
            {
                throw APIError(.badRequest, .malformedJSON, "\(field) must be a whole number", field: field)
            }
            throw APIError(.badRequest, .malformedJSON, "the body is not valid JSON")
        }
    }

    /// The path of the first number in a parsed JSON value that is not a whole number within 64-bit range.
    private static func firstUnrepresentableNumber(in value: Any, path: [any CodingKey]) -> String? {
        switch value {
        case let object as [String: Any]:
            for key in object.keys.sorted() {
                if let found = firstUnrepresentableNumber(
                    in: object[key]!, path: path + [AnyCodingKey(stringValue: key)])
                {
                    return found
                }
            }
        case let array as [Any]:
            for (position, element) in array.enumerated() {
                if let found = firstUnrepresentableNumber(in: element, path: path + [AnyCodingKey(intValue: position)])
                {
                    return found
                }
            }
        case let number as NSNumber:
            let double = number.doubleValue
            if double != double.rounded() || abs(double) >= 9.2e18 { return JSONPath.render(path) }
        default:
            break
        }
        return nil
    }
}

import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import SwitchboardCore

/// An error of the Consul layer, told the way Consul tells it: a status and a plain-text message that Consul's
/// clients show (and some match: "Missing service name", "Unknown service ID").
struct ConsulError: Error, Equatable {
    var status: HTTPResponse.Status
    var message: String

    static func badRequest(_ message: String) -> ConsulError {
        ConsulError(status: .badRequest, message: message)
    }

    static func unknownService(_ id: String) -> ConsulError {
        ConsulError(
            status: .notFound,
            message: "Unknown service ID \"\(id)\". Ensure that the service ID is passed, not the service name.")
    }

    static func unknownCheck(_ id: String) -> ConsulError {
        ConsulError(
            status: .notFound,
            message: "Unknown check ID \"\(id)\". Ensure that the check ID is passed, not the check name.")
    }

    /// What Consul answers when a check that is not a TTL check is updated by hand.
    static func noTTL(_ id: String) -> ConsulError {
        ConsulError(status: .internalServerError, message: "CheckID \"\(id)\" does not have associated TTL")
    }
}

/// Runs the Consul layer's routes: their errors rendered as Consul renders them (before the native middleware
/// sees them), and Consul's headers on every answer.
struct ConsulResponseMiddleware: RouterMiddleware {
    typealias Context = AgentRequestContext

    /// Cluster mode: how old the agent's view is (Consul's `X-Consul-LastContact`); nil for a single agent.
    let viewAge: (@Sendable () -> Duration?)?

    func handle(
        _ request: Request, context: AgentRequestContext,
        next: (Request, AgentRequestContext) async throws -> Response
    ) async throws -> Response {
        var context = context
        context.errorRendering = PlainTextErrorRendering()
        if let token = Self.presentedToken(request) { context.caller.presentedToken = token }
        var response: Response
        do {
            response = try await next(request, context)
        } catch let error as ConsulError {
            response = PlainTextErrorRendering.response(error.message, status: error.status)
        } catch {
            response = try APIError.response(to: error, request: request, context: context)
        }
        // Cluster mode: a view never confirmed current with etcd has no known leader and an unbounded age, so a
        // client that bounds staleness (Consul's `?stale&max_stale`, say) does not take it as fresh.
        var knownLeader = true
        var lastContact: Int64 = 0
        if let viewAge {
            if let age = viewAge() {
                lastContact = age.milliseconds
            } else {
                knownLeader = false
                lastContact = Int64.max
            }
        }
        response.headers[ConsulResponses.knownLeaderHeader] = knownLeader ? "true" : "false"
        response.headers[ConsulResponses.lastContactHeader] = String(lastContact)
        return response
    }
}

extension ConsulResponseMiddleware {
    static let tokenHeader = HTTPField.Name("X-Consul-Token")!

    /// The token a Consul client sent, where Consul looks for it: `X-Consul-Token`, then `Authorization: Bearer`,
    /// then `?token=`.
    static func presentedToken(_ request: Request) -> String? {
        if let token = request.headers[tokenHeader], !token.isEmpty { return token }
        if let authorization = request.headers[.authorization], authorization.lowercased().hasPrefix("bearer ") {
            let token = authorization.dropFirst("bearer ".count).trimmingCharacters(in: .whitespaces)
            if !token.isEmpty { return token }
        }
        return AgentHTTPAPI.formQuery(request, "token").first.flatMap { $0.isEmpty ? nil : $0 }
    }
}

/// How the Consul layer writes its answers.
enum ConsulResponses {
    static let indexHeader = HTTPField.Name("X-Consul-Index")!
    static let knownLeaderHeader = HTTPField.Name("X-Consul-KnownLeader")!
    static let lastContactHeader = HTTPField.Name("X-Consul-LastContact")!

    /// `value` as JSON with Consul's index header (at least 1: Consul's clients treat 0 as "no index").
    static func json(_ value: some Encodable, index: UInt64?) throws -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var headers: HTTPFields = [.contentType: "application/json"]
        if let index { headers[indexHeader] = String(max(1, index)) }
        return Response(
            status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(bytes: try encoder.encode(value))))
    }

    /// Consul's answer to a write: 200 with an empty body.
    static func done() -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"], body: ResponseBody())
    }
}

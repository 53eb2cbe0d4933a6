import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Prometheus
import SwitchboardCatalog
import SwitchboardCore

/// Instance writes: register, deregister, maintenance, heartbeats and observations.
///
/// A write is acknowledged once the catalog has committed and applied it; what it answers is the instance as the
/// write left it, encoded once when committed.
extension AgentHTTPAPI {
    @Sendable func registerInstance(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let service = try serviceName(context)
        let id = try instanceID(context)
        var cas: UInt64?
        if let text = request.uri.queryParameters["cas"] {
            guard let value = UInt64(text) else {
                throw APIError.badParameter(
                    ValidationError(field: "cas", message: "cas must be a modify index (0 or more)"))
            }
            cas = value
        }
        let body = try await decodeBody(RegistrationRequest.self, from: request, context: context)
        let definition = try body.validated(service: service, id: id)
        metrics.registrations.increment()
        let outcome = try await catalog.register(definition, cas: cas, by: context.audit)
        let status: HTTPResponse.Status = outcome.event?.kind == .added ? .created : .ok
        return try json(outcome, status: status, request: request)
    }

    @Sendable func deregisterInstance(
        _ request: Request, _ context: AgentRequestContext
    ) async throws -> Response {
        let outcome = try await catalog.deregister(
            service: try serviceName(context), id: try instanceID(context), by: context.audit)
        return try json(outcome, request: request)
    }

    @Sendable func setMaintenance(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let service = try serviceName(context)
        let id = try instanceID(context)
        let body = try await decodeBody(MaintenanceRequest.self, from: request, context: context)
        let change = try body.validated()
        let outcome = try await catalog.setMaintenance(
            service: service, id: id, enabled: change.enabled, reason: change.reason, by: context.audit)
        return try json(outcome, request: request)
    }

    /// Logs a client's observation as an `observed` event: 201 with the event, 404 for an unknown instance.
    @Sendable func recordObservation(
        _ request: Request, _ context: AgentRequestContext
    ) async throws -> Response {
        let service = try serviceName(context)
        let id = try instanceID(context)
        let body = try await decodeBody(ObservationRequest.self, from: request, context: context)
        let observation = try body.validated()
        if let wait = observationLimiter.admit(InstanceKey(service: service, id: id)) {
            var response = try APIError(
                .tooManyRequests, .rateLimited,
                "\(service)/\(id) had an observation logged less than \(observationLimiter.interval) ago"
            ).response(from: request, context: context)
            let seconds = wait.components.seconds + (wait.components.attoseconds > 0 ? 1 : 0)
            response.headers[.retryAfter] = String(max(1, seconds))
            return response
        }
        let outcome = try await catalog.recordObservation(observation, service: service, id: id, by: context.audit)
        guard let event = outcome.event else { throw CatalogError.storeFailed("an observation planned no event") }
        return try json(event, status: .created, index: outcome.index, request: request)
    }

    @Sendable func heartbeat(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let service = try serviceName(context)
        let id = try instanceID(context)
        var status = HealthStatus.passing
        var output = ""
        var check: String?
        // The body is optional: a bare PUT is the cheapest heartbeat, and the common one.
        if request.headers[.contentLength] != "0" {
            let buffer = try await request.body.collect(upTo: Self.maximumBodySize)
            if buffer.readableBytes > 0 {
                let body = try decodeJSON(HeartbeatRequest.self, from: buffer, request: request)
                (status, output) = try body.validated()
                check = try body.validatedCheck()
            }
        }
        let relayedBy = request.headers[HTTPField.Name(HeartbeatRelay.relayedByHeader)!]
        let relayed = relayedBy != nil
        if let relayedBy, relayedBy == cluster?.membership.agentID {
            // The owner's advertised address leads back here: the relay must not count it as delivered.
            throw APIError(
                HTTPResponse.Status(code: 508, reasonPhrase: "Loop Detected"), .unavailable,
                "this agent relayed the heartbeat to itself: another agent advertises this agent's address; "
                    + "give every agent its own --advertise-addr")
        }
        switch await health.heartbeat(
            InstanceKey(service: service, id: id), checkID: check, status: status, output: output, relayed: relayed,
            by: context.audit, relayToken: CallerMiddleware.presentedSecret(request))
        {
        case .unknownInstance:
            throw APIError(
                .notFound, .notFound,
                "instance '\(id)' of service '\(service)' is not registered (it was removed, or the agent lost it):"
                    + " register it again with PUT \(APIPath.instance(service, id: id)), then resume heartbeats"
            )
        case .noTTLCheck:
            if let check {
                throw APIError(
                    .conflict, .conflict,
                    "instance '\(id)' of service '\(service)' has no ttl check '\(check)' to heartbeat", field: "check")
            }
            throw APIError(
                .conflict, .conflict,
                "instance '\(id)' of service '\(service)' has no ttl check to heartbeat; register it with a check"
                    + " such as {\"type\": \"ttl\", \"ttl\": \"10s\"}",
                field: "checks"
            )
        case .recorded(let current):
            var json = JSONText()
            json.append(#"{"id":"\#(id.rawValue)","service":"\#(service.rawValue)","status":"\#(current.rawValue)"}"#)
            return rawJSON(json.bytes, index: catalog.instance(service: service, id: id).index)
        }
    }
}

import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Prometheus
import SwitchboardCatalog
import SwitchboardCore
import XMLCoder

/// An error of the Eureka layer: a status and a short plain-text reason (Eureka's clients act on the status alone:
/// a 404 to a renewal makes them register again).
struct EurekaError: Error, Equatable {
    var status: HTTPResponse.Status
    var message: String

    static func badRequest(_ message: String) -> EurekaError { EurekaError(status: .badRequest, message: message) }
    static func notFound(_ message: String) -> EurekaError { EurekaError(status: .notFound, message: message) }
}

/// Runs the Eureka layer's routes with its error form: plain text, with the error's status.
struct EurekaResponseMiddleware: RouterMiddleware {
    typealias Context = AgentRequestContext

    func handle(
        _ request: Request, context: AgentRequestContext,
        next: (Request, AgentRequestContext) async throws -> Response
    ) async throws -> Response {
        var context = context
        context.errorRendering = PlainTextErrorRendering()
        do {
            return try await next(request, context)
        } catch let error as EurekaError {
            return PlainTextErrorRendering.response(error.message, status: error.status)
        } catch {
            return try APIError.response(to: error, request: request, context: context)
        }
    }
}

/// Eureka's REST API (the subset its clients use: register, renew, cancel, status overrides, metadata, the registry
/// and its delta) under `/eureka/` and `/eureka/v2/`, as a view of the same catalog. Answers are XML unless the
/// client asks for JSON (`Accept: application/json`), as Eureka's server does. See ``EurekaMapping``.
extension AgentHTTPAPI {
    static let eurekaRoutes: [RouteDefinition] = [
        RouteDefinition(.post, "/apps/{app}", .service(.write)) { $0.eurekaRegister },
        RouteDefinition(.put, "/apps/{app}/{id}", .service(.write)) { $0.eurekaRenew },
        RouteDefinition(.delete, "/apps/{app}/{id}", .service(.write)) { $0.eurekaCancel },
        RouteDefinition(.put, "/apps/{app}/{id}/status", .service(.write)) { $0.eurekaStatusOverride },
        RouteDefinition(.delete, "/apps/{app}/{id}/status", .service(.write)) { $0.eurekaRemoveOverride },
        RouteDefinition(.put, "/apps/{app}/{id}/metadata", .service(.write)) { $0.eurekaUpdateMetadata },
        RouteDefinition(.get, "/apps", .handler) { $0.eurekaApplications },
        RouteDefinition(.get, "/apps/delta", .handler) { $0.eurekaDelta },
        RouteDefinition(.get, "/apps/{app}", .service(.read)) { $0.eurekaApplication },
        RouteDefinition(.get, "/apps/{app}/{id}", .service(.read)) { $0.eurekaAppInstance },
        RouteDefinition(.get, "/instances/{id}", .handler) { $0.eurekaInstance },
        RouteDefinition(.get, "/vips/{vip}", .handler) { $0.eurekaVIP },
        RouteDefinition(.get, "/svips/{vip}", .handler) { $0.eurekaSecureVIP },
    ]

    /// Served under both prefixes Eureka's clients use.
    static let eurekaGroups: [RouteGroup] = ["/eureka", "/eureka/v2"].map {
        RouteGroup(prefix: $0, routes: eurekaRoutes)
    }

    // MARK: Writes

    @Sendable func eurekaRegister(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let appName = eurekaParameter(context, "app")
        let buffer = try await request.body.collect(upTo: Self.maximumBodySize)
        let info = try Self.eurekaDecodeInstance(Data(buffer.readableBytesView), request: request)
        // An override set on the registry outlives the client's registering again, as in Eureka.
        let existing = (try? ServiceName(appName.lowercased())).flatMap { service in
            info.instanceId.flatMap { try? InstanceID($0) }.flatMap {
                catalog.instance(service: service, id: $0).instance
            }
        }
        let override = existing?.definition.meta[EurekaMapping.metaPrefix + "overriddenstatus"]
        let definition = try EurekaMapping.definition(of: info, appName: appName, overriddenStatus: override)
        metrics.registrations.increment()
        _ = try await catalog.register(definition, by: context.audit)
        let drained = EurekaMapping.health(ofEurekaStatus: override ?? info.status ?? "UP") == .maintenance
        try await eurekaDrain(existing ?? Instance(definition: definition, createIndex: 0, modifyIndex: 0), drained)
        return Response(status: .noContent)
    }

    /// A lease renewal: a heartbeat of the lease check, and the client's `status` (unless overridden) reported to
    /// the status check; 404 for an instance the registry does not hold, so the client registers again.
    @Sendable func eurekaRenew(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let instance = try eurekaInstance(context)
        guard await eurekaReport(instance, status: Self.formQuery(request, "status").first, output: "renewed") else {
            throw EurekaError.notFound("no such instance: register it again")
        }
        return Response(status: .ok)
    }

    @Sendable func eurekaCancel(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let instance = try eurekaInstance(context)
        _ = try await catalog.deregister(service: instance.service, id: instance.id, by: context.audit)
        return Response(status: .ok)
    }

    /// `?value=`: an override of the instance's status that renewals do not undo (`OUT_OF_SERVICE` drains it,
    /// `DOWN` and `STARTING` make it critical, `UP` ends an override).
    @Sendable func eurekaStatusOverride(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let instance = try eurekaInstance(context)
        guard let value = Self.formQuery(request, "value").first?.uppercased(),
            EurekaMapping.health(ofEurekaStatus: value) != nil
        else { throw EurekaError.badRequest("value must be UP, DOWN, STARTING or OUT_OF_SERVICE") }
        try await eurekaOverride(instance, value == "UP" ? nil : value)
        return Response(status: .ok)
    }

    /// Ends an override: the instance's own status (what its renewals report) counts again.
    @Sendable func eurekaRemoveOverride(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try await eurekaOverride(try eurekaInstance(context), nil)
        return Response(status: .ok)
    }

    /// Sets (or with nil removes) the status override kept in the instance's meta, and applies it.
    private func eurekaOverride(_ instance: Instance, _ value: String?) async throws {
        let key = EurekaMapping.metaPrefix + "overriddenstatus"
        if instance.definition.meta[key] != value {
            var definition = instance.definition
            definition.meta[key] = value
            // Compared with the instance as read: a concurrent change makes the client retry, nothing is lost.
            _ = try await catalog.register(definition, cas: instance.modifyIndex)
        }
        try await eurekaDrain(instance, value.flatMap(EurekaMapping.health(ofEurekaStatus:)) == .maintenance)
        let current = catalog.instance(service: instance.service, id: instance.id).instance ?? instance
        _ = await eurekaReport(current, status: value ?? "UP", output: "status set", renew: false)
    }

    static let eurekaDrainReason = "OUT_OF_SERVICE (Eureka)"

    /// Drains the instance for Eureka's `OUT_OF_SERVICE`, or ends such a drain; an operator's own drain (another
    /// reason) is left alone.
    private func eurekaDrain(_ instance: Instance, _ drained: Bool) async throws {
        if drained, instance.maintenance == nil {
            _ = try await catalog.setMaintenance(
                service: instance.service, id: instance.id, enabled: true, reason: Self.eurekaDrainReason)
        } else if !drained, instance.maintenance?.reason == Self.eurekaDrainReason {
            _ = try await catalog.setMaintenance(service: instance.service, id: instance.id, enabled: false)
        }
    }

    /// Reports a Eureka status to the instance's checks: the lease renewed (unless `renew` is false) and the status
    /// check given the override or else `status`. False when the instance is unknown.
    private func eurekaReport(
        _ instance: Instance, status: String?, output: String, renew: Bool = true
    ) async -> Bool {
        let key = InstanceKey(service: instance.service, id: instance.id)
        let ttlChecks = instance.checks.filter { $0.definition.type == .ttl }
        if renew, let lease = ttlChecks.first {
            if case .unknownInstance = await health.heartbeat(key, checkID: lease.id, status: .passing, output: output)
            {
                return false
            }
        }
        guard ttlChecks.count > 1 else { return true }
        let effective = instance.definition.meta[EurekaMapping.metaPrefix + "overriddenstatus"] ?? status ?? "UP"
        let health: HealthStatus = EurekaMapping.health(ofEurekaStatus: effective) == .critical ? .critical : .passing
        if case .unknownInstance = await self.health.heartbeat(
            key, checkID: ttlChecks[1].id, status: health, output: "status \(effective.uppercased())")
        {
            return false
        }
        return true
    }

    /// `?key=value...`: metadata set (the instance registered again with it; its health is kept).
    @Sendable func eurekaUpdateMetadata(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let instance = try eurekaInstance(context)
        var definition = instance.definition
        for (key, value) in Self.formQueryPairs(request) where !key.hasPrefix(EurekaMapping.metaPrefix) {
            definition.meta[key] = value
        }
        var request = RegistrationRequest(
            address: definition.address.rawValue, port: definition.port, tags: definition.tags, meta: definition.meta,
            weight: definition.weight)
        request.checks = nil
        do {
            var validated = try request.validated(service: definition.service, id: definition.id)
            validated.checks = definition.checks
            // Compared with the instance as read: a concurrent change fails this one (409) rather than being lost.
            _ = try await catalog.register(validated, cas: instance.modifyIndex)
        } catch let error as ValidationError {
            throw EurekaError.badRequest("\(error.field): \(error.message)")
        }
        return Response(status: .ok)
    }

    // MARK: Reads

    @Sendable func eurekaApplications(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let (index, all) = catalog.allInstances()
        let instances = context.authority.enforced ? all.filter { context.authority.canRead($0.service) } : all
        let applications = EurekaMapping.applications(
            instances, version: index, hashcode: EurekaMapping.hashcode(of: instances))
        return try Self.eurekaAnswer(applications, root: "applications", request: request)
    }

    /// The recent changes and the hashcode of the registry they lead to. Both must describe one index, or the
    /// client's merged copy would not match the hashcode and it would fetch everything again: the snapshot is taken
    /// again (briefly) while the catalog's observers are still catching up with it.
    @Sendable func eurekaDelta(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        var (index, instances) = catalog.allInstances()
        var (recent, through) = eurekaChanges.recent()
        for _ in 0..<50 where through != index {
            try await Task.sleep(for: .milliseconds(2))
            (index, instances) = catalog.allInstances()
            (recent, through) = eurekaChanges.recent()
        }
        if context.authority.enforced {
            instances.removeAll { !context.authority.canRead($0.service) }
            recent.removeAll { !context.authority.canRead($0.instance.service) }
        }
        let actions = Dictionary(
            recent.map { (InstanceKey(service: $0.instance.service, id: $0.instance.id), $0.action) },
            uniquingKeysWith: { $1 })
        let applications = EurekaMapping.applications(
            recent.map(\.instance), version: index, hashcode: EurekaMapping.hashcode(of: instances),
            action: { actions[InstanceKey(service: $0.service, id: $0.id)] })
        return try Self.eurekaAnswer(applications, root: "applications", request: request)
    }

    @Sendable func eurekaApplication(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let appName = eurekaParameter(context, "app").uppercased()
        let instances = catalog.allInstances().instances.filter {
            EurekaMapping.appName(of: $0) == appName && context.authority.canRead($0.service)
        }
        guard !instances.isEmpty else { throw EurekaError.notFound("no application \(appName)") }
        let application = EurekaMapping.applications(instances, version: 0, hashcode: "").application[0]
        return try Self.eurekaAnswer(application, root: "application", request: request)
    }

    @Sendable func eurekaAppInstance(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try Self.eurekaAnswer(EurekaMapping.info(of: try eurekaInstance(context)), root: "instance", request: request)
    }

    @Sendable func eurekaInstance(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let id = eurekaParameter(context, "id")
        guard let instance = catalog.allInstances().instances.first(where: { $0.id.rawValue == id }) else {
            throw EurekaError.notFound("no instance \(id)")
        }
        try context.authority.require(.read, on: .service(instance.service))
        return try Self.eurekaAnswer(EurekaMapping.info(of: instance), root: "instance", request: request)
    }

    @Sendable func eurekaVIP(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try eurekaByAddress(request, context, metaKey: "vipAddress")
    }

    @Sendable func eurekaSecureVIP(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try eurekaByAddress(request, context, metaKey: "secureVipAddress")
    }

    private func eurekaByAddress(
        _ request: Request, _ context: AgentRequestContext, metaKey: String
    ) throws -> Response {
        let vip = eurekaParameter(context, "vip")
        let (index, all) = catalog.allInstances()
        let instances = all.filter {
            context.authority.canRead($0.service)
                && ($0.definition.meta[EurekaMapping.metaPrefix + metaKey] ?? $0.service.rawValue) == vip
        }
        let applications = EurekaMapping.applications(
            instances, version: index, hashcode: EurekaMapping.hashcode(of: instances))
        return try Self.eurekaAnswer(applications, root: "applications", request: request)
    }

    // MARK: Helpers

    func eurekaParameter(_ context: AgentRequestContext, _ name: String) -> String {
        context.parameters.get(name).map(Self.percentDecoded) ?? ""
    }

    /// The instance `{app}/{id}` (or `{id}` alone) names.
    func eurekaInstance(_ context: AgentRequestContext) throws -> Instance {
        let id = eurekaParameter(context, "id")
        let app = context.parameters.get("app").map { Self.percentDecoded($0).lowercased() }
        guard let service = app.flatMap({ try? ServiceName($0) }), let instanceID = try? InstanceID(id),
            let instance = catalog.instance(service: service, id: instanceID).instance
        else { throw EurekaError.notFound("no instance \(id) of \(app ?? "")") }
        return instance
    }

    /// A registration body: XML when the client says so (or it starts with `<`), else JSON.
    static func eurekaDecodeInstance(_ data: Data, request: Request) throws -> EurekaWire.InstanceInfo {
        let type = request.headers[.contentType]?.lowercased() ?? ""
        let looksXML = type.contains("xml") || data.first(where: { !$0.isWhitespace }) == UInt8(ascii: "<")
        do {
            if looksXML {
                let decoder = XMLDecoder()
                decoder.userInfo[EurekaWire.xmlKey] = true
                return try decoder.decode(EurekaWire.InstanceInfo.self, from: data)
            }
            return try JSONDecoder().decode(EurekaWire.InstanceEnvelope.self, from: data).instance
        } catch {
            throw EurekaError.badRequest("the body is not an instance in Eureka's \(looksXML ? "XML" : "JSON") form")
        }
    }

    /// `value` as XML (Eureka's default) or JSON when the client accepts JSON only or first.
    static func eurekaAnswer(_ value: some Encodable, root: String, request: Request) throws -> Response {
        let accept = request.headers[.accept]?.lowercased() ?? ""
        let json =
            accept.contains("json")
            && !(accept.contains("xml")
                && accept.firstRange(of: "xml")!.lowerBound
                    < accept.firstRange(of: "json")!.lowerBound)
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.withoutEscapingSlashes]
            let body = try encoder.encode(EurekaRooted(root: root, value: value))
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
        }
        let encoder = XMLEncoder()
        encoder.userInfo[EurekaWire.xmlKey] = true
        let body = try encoder.encode(value, withRootKey: root, header: XMLHeader(version: 1.0, encoding: "UTF-8"))
        return Response(
            status: .ok, headers: [.contentType: "application/xml"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// `{"<root>": value}`: Eureka's JSON names the root as its XML does.
private struct EurekaRooted<Value: Encodable>: Encodable {
    var root: String
    var value: Value

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: EurekaWire.Key.self)
        try container.encode(value, forKey: EurekaWire.Key(root))
    }
}

extension UInt8 {
    fileprivate var isWhitespace: Bool { self == 0x20 || self == 0x0A || self == 0x0D || self == 0x09 }
}

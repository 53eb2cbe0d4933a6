import Foundation
import HTTPTypes
import Hummingbird
import Prometheus
import SwitchboardCatalog
import SwitchboardCore

/// Consul's HTTP API, the subset its clients use to register, report health and discover (py-consul, Consul's Go
/// client, Spring Cloud Consul), as a view of the same catalog the native API serves.
///
/// Writes become the native writes (a registration is validated by the native rules, a TTL update is a heartbeat
/// that counts in cluster mode on whichever agent it reaches); reads are built from the catalog's instances, and
/// every read can block on Consul's `index` and `wait`. Errors are Consul's: plain text, with the statuses its
/// clients expect (``ConsulError``). These routes are not in the OpenAPI document, which covers the native API.
extension AgentHTTPAPI {
    /// The Consul layer's routes, by group (served by ``makeRouter()`` with ``ConsulResponseMiddleware``).
    static let consulGroups: [RouteGroup] = [
        RouteGroup(
            prefix: "/v1/agent",
            routes: [
                RouteDefinition(.put, "/service/register", .handler) { $0.consulRegister },
                RouteDefinition(.put, "/service/deregister/{id}", .handler) { $0.consulDeregister },
                RouteDefinition(.put, "/service/maintenance/{id}", .handler) { $0.consulMaintenance },
                RouteDefinition(.put, "/check/pass/{check}", .handler) { $0.consulPass },
                RouteDefinition(.put, "/check/warn/{check}", .handler) { $0.consulWarn },
                RouteDefinition(.put, "/check/fail/{check}", .handler) { $0.consulFail },
                RouteDefinition(.put, "/check/update/{check}", .handler) { $0.consulUpdate },
                RouteDefinition(.get, "/services", .handler) { $0.consulAgentServices },
                RouteDefinition(.get, "/checks", .handler) { $0.consulAgentChecks },
                RouteDefinition(.get, "/self", .area(.read, .agent)) { $0.consulAgentSelf },
            ]),
        RouteGroup(
            prefix: "/v1/health",
            routes: [RouteDefinition(.get, "/service/{service}", .service(.read)) { $0.consulHealthService }]),
        RouteGroup(
            prefix: "/v1/catalog",
            routes: [
                RouteDefinition(.get, "/services", .handler) { $0.consulCatalogServices },
                RouteDefinition(.get, "/service/{service}", .service(.read)) { $0.consulCatalogService },
            ]),
        RouteGroup(
            prefix: "/v1/status",
            routes: [
                RouteDefinition(.get, "/leader", .open) { $0.consulStatusLeader },
                RouteDefinition(.get, "/peers", .open) { $0.consulStatusPeers },
            ]),
    ]

    /// The routes of the Consul layer, with their groups' prefixes.
    public static let consulRoutes: [Route] = consulGroups.flatMap { group in
        group.routes.map { Route(method: $0.method, path: group.prefix + $0.path) }
    }

    // MARK: Writes

    @Sendable func consulRegister(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let buffer = try await request.body.collect(upTo: Self.maximumBodySize)
        let body = try ConsulBody(json: Data(buffer.readableBytesView))
        let registration = try ConsulRegistration(body, defaultAddress: consulLocalNode.address)
        try context.authority.require(.write, on: .service(registration.definition.service))
        // A Consul service id names one service on the agent: registered under another name, it moves there.
        let id = registration.definition.id
        let moved = catalog.allInstances().instances.filter {
            $0.id == id && $0.service != registration.definition.service
        }
        for other in moved { try context.authority.require(.write, on: .service(other.service)) }
        metrics.registrations.increment()
        _ = try await catalog.register(registration.definition, by: context.audit)
        for other in moved {
            _ = try? await catalog.deregister(service: other.service, id: id, by: context.audit)
        }
        return ConsulResponses.done()
    }

    @Sendable func consulDeregister(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let instance = try consulInstance(serviceID: context)
        try context.authority.require(.write, on: .service(instance.service))
        _ = try await catalog.deregister(service: instance.service, id: instance.id, by: context.audit)
        return ConsulResponses.done()
    }

    /// `?enable=true|false&reason=`: Consul's maintenance is Switchboard's drain.
    @Sendable func consulMaintenance(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let instance = try consulInstance(serviceID: context)
        try context.authority.require(.write, on: .service(instance.service))
        let enable: Bool
        switch Self.formQuery(request, "enable").first?.lowercased() {
        case "true"?: enable = true
        case "false"?: enable = false
        case nil: throw ConsulError.badRequest("Missing value for enable")
        case let other?: throw ConsulError.badRequest("Invalid value for enable: \"\(other)\"")
        }
        let reason = Self.formQuery(request, "reason").first.flatMap { $0.isEmpty ? nil : $0 }
        _ = try await catalog.setMaintenance(
            service: instance.service, id: instance.id, enabled: enable,
            reason: enable ? (reason ?? "Maintenance mode is enabled for this service") : "", by: context.audit)
        return ConsulResponses.done()
    }

    @Sendable func consulPass(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try await consulUpdateTTL(request, context, .passing)
    }

    @Sendable func consulWarn(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try await consulUpdateTTL(request, context, .warning)
    }

    @Sendable func consulFail(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try await consulUpdateTTL(request, context, .critical)
    }

    @Sendable func consulUpdate(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try await consulUpdateTTL(request, context, nil)
    }

    /// `pass`, `warn`, `fail` (`?note=` is the output) or `update` (`{"Status", "Output"}`) of a TTL check: a
    /// heartbeat with that status.
    func consulUpdateTTL(
        _ request: Request, _ context: AgentRequestContext, _ fixed: HealthStatus?
    ) async throws -> Response {
        let checkID = context.parameters.get("check").map(Self.percentDecoded) ?? ""
        var status = fixed ?? .passing
        var output = Self.formQuery(request, "note").first ?? ""
        if fixed == nil {
            let buffer = try await request.body.collect(upTo: Self.maximumBodySize)
            let body = try ConsulBody(json: Data(buffer.readableBytesView))
            switch try body.string("Status") {
            case "passing"?: status = .passing
            case "warning"?: status = .warning
            case "critical"?: status = .critical
            case let other: throw ConsulError.badRequest("Invalid check status: \"\(other ?? "")\"")
            }
            output = try body.string("Output") ?? ""
        }
        // Consul keeps long output truncated rather than refusing the update.
        output = CheckState.capped(output)
        guard let (instance, position) = consulCheck(checkID) else { throw ConsulError.unknownCheck(checkID) }
        try context.authority.require(.write, on: .service(instance.service))
        guard instance.checks[position].definition.type == .ttl else { throw ConsulError.noTTL(checkID) }
        switch await health.heartbeat(
            InstanceKey(service: instance.service, id: instance.id), checkID: instance.checks[position].id,
            status: status, output: output, by: context.audit,
            relayToken: CallerMiddleware.presentedSecret(request) ?? context.caller.presentedToken)
        {
        case .unknownInstance: throw ConsulError.unknownCheck(checkID)
        case .noTTLCheck: throw ConsulError.noTTL(checkID)
        case .recorded: return ConsulResponses.done()
        }
    }

    // MARK: Reads

    @Sendable func consulHealthService(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let service = consulServiceName(context)
        let passing = Self.formQuery(request, "passing").first.map { !["false", "0"].contains($0.lowercased()) }
        let query = InstanceQuery(
            status: passing == true ? .only(.passing) : .any, tags: Self.formQuery(request, "tag"))
        let (index, instances) = try await consulInstances(of: service, matching: query, request: request)
        let entries = instances.map { instance in
            let node = consulNode(of: instance)
            return ConsulViews.ServiceEntry(
                node: node, service: ConsulViews.AgentService(instance: instance),
                checks: [ConsulViews.nodeCheck(node: node.name)] + ConsulViews.checks(of: instance, node: node.name))
        }
        return try ConsulResponses.json(entries, index: index)
    }

    @Sendable func consulCatalogService(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let service = consulServiceName(context)
        let query = InstanceQuery(status: .any, tags: Self.formQuery(request, "tag"))
        let (index, instances) = try await consulInstances(of: service, matching: query, request: request)
        let entries = instances.map { ConsulViews.CatalogService(node: consulNode(of: $0), instance: $0) }
        return try ConsulResponses.json(entries, index: index)
    }

    /// Every service with the union of its instances' tags.
    @Sendable func consulCatalogServices(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let catalog = self.catalog
        try await holdUntilChanged(try blockingQuery(request), service: nil) { catalog.index }
        let (index, instances) = catalog.allInstances()
        var services: [String: Set<String>] = [:]
        for instance in instances where context.authority.canRead(instance.service) {
            services[instance.service.rawValue, default: []].formUnion(instance.definition.tags)
        }
        return try ConsulResponses.json(services.mapValues { $0.sorted() }, index: index)
    }

    /// The instances on this agent's node (all of them, for a single agent).
    @Sendable func consulAgentServices(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let (index, instances) = consulLocalInstances()
        var services: [String: ConsulViews.AgentService] = [:]
        for instance in instances where context.authority.canRead(instance.service) {
            services[instance.id.rawValue] = ConsulViews.AgentService(
                instance: instance, datacenter: Self.consulDatacenter)
        }
        return try ConsulResponses.json(services, index: index)
    }

    @Sendable func consulAgentChecks(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let (index, instances) = consulLocalInstances()
        let node = consulLocalNode.name
        var checks: [String: ConsulViews.HealthCheck] = [:]
        for instance in instances where context.authority.canRead(instance.service) {
            for check in ConsulViews.checks(of: instance, node: node) { checks[check.checkID] = check }
        }
        return try ConsulResponses.json(checks, index: index)
    }

    /// What Consul's clients read of the agent: its node name, datacenter and version.
    @Sendable func consulAgentSelf(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let node = consulLocalNode
        let answer: [String: [String: ConsulJSONValue]] = [
            "Config": [
                "Datacenter": .string(node.datacenter), "NodeName": .string(node.name), "NodeID": .string(node.id),
                "Server": .bool(true), "Revision": .string(""), "Version": .string(Self.consulVersion),
                "Switchboard": .string(SwitchboardVersion.current),
            ],
            "Member": [
                "Name": .string(node.name), "Addr": .string(node.address), "Port": .number(8301),
                "Status": .number(1),
                "Tags": .object(["dc": .string(node.datacenter), "role": .string("consul"), "id": .string(node.id)]),
            ],
            "Meta": [:],
        ]
        return try ConsulResponses.json(answer, index: nil)
    }

    /// The Raft leader Consul's clients ask for; Switchboard has none of its own, so an agent names itself (in
    /// cluster mode every agent is as good as any other: writes go through etcd).
    @Sendable func consulStatusLeader(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try ConsulResponses.json("\(consulLocalNode.address):8300", index: nil)
    }

    @Sendable func consulStatusPeers(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let peers =
            cluster?.membership.members.map { "\(Self.host(of: $0.address)):8300" }
            ?? ["\(consulLocalNode.address):8300"]
        return try ConsulResponses.json(peers, index: nil)
    }
}

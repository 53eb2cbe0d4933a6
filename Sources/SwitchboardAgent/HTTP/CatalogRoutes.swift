import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardEtcd

/// Catalog reads: the agent, services, lookups, one instance, the change log, the OpenAPI document and metrics.
///
/// Lookups answer from each instance's JSON, encoded once per change (``Catalog/instancesJSON(of:matching:)``),
/// unless `?pretty` asks for an indented answer. Every read can be a blocking query (see `WatchRoutes.swift`).
extension AgentHTTPAPI {
    @Sendable func agentInfo(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let summary = catalog.summary()
        let info = AgentInfo(
            version: SwitchboardVersion.current,
            startedAt: startedAt,
            uptimeSeconds: max(0, Date().timeIntervalSince(startedAt)),
            index: summary.index,
            services: summary.services,
            instances: summary.instances,
            counts: summary.counts,
            store: storeDescription,
            health: health.report(),
            watches: watches.report(),
            cluster: cluster?.report()
        )
        return try json(info, index: summary.index, request: request)
    }

    @Sendable func listServices(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let catalog = self.catalog
        try await holdUntilChanged(try blockingQuery(request), service: nil) { catalog.index }
        let authority = context.authority
        guard !isPretty(request), !authority.enforced else {
            var list = catalog.services()
            list.services.removeAll { !authority.canRead($0.name) }
            return try json(list, index: list.index, request: request)
        }
        let (index, body) = catalog.servicesJSON()
        return rawJSON(body, index: index)
    }

    @Sendable func lookupService(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let service = try serviceName(context)
        let query = try instanceQuery(request)
        let catalog = self.catalog
        try await holdUntilChanged(try blockingQuery(request), service: service) { catalog.serviceIndex(service) }
        guard !isPretty(request) else {
            let lookup = catalog.instances(of: service, matching: query)
            return try json(lookup, index: lookup.index, request: request)
        }
        let (index, body) = lookups.lookup(service, matching: query, in: catalog)
        return Response(
            status: .ok,
            headers: [.contentType: "application/json", Self.indexHeader: String(index)],
            body: ResponseBody(byteBuffer: body)
        )
    }

    @Sendable func readInstance(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let service = try serviceName(context)
        let id = try instanceID(context)
        let catalog = self.catalog
        try await holdUntilChanged(try blockingQuery(request), service: service) { catalog.serviceIndex(service) }
        guard !isPretty(request) else {
            let (index, instance) = catalog.instance(service: service, id: id)
            guard let instance else { throw CatalogError.instanceNotFound(service: service, id: id) }
            return try json(instance, index: index, request: request)
        }
        let (index, body) = catalog.instanceJSON(service: service, id: id)
        guard let body else { throw CatalogError.instanceNotFound(service: service, id: id) }
        return rawJSON(body, index: index)
    }

    @Sendable func listEvents(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let since = try integerParameter(request, "since", default: 0, range: 0...UInt64.max)
        let limit = try integerParameter(request, "limit", default: 1000, range: 1...10_000)
        let aclSince = try integerParameter(request, "aclSince", default: 0, range: 0...UInt64.max)
        var page = try await catalog.events(since: since, limit: Int(limit))
        let authority = context.authority
        if authority.enforced {
            // Events of services the token may not read are left out; tokens that manage the ACLs also get the ACL
            // changes (their own sequence: `?aclSince=`).
            page.events.removeAll { !authority.canRead($0.service) }
            if authority.allows(.read, on: .acl) {
                page.acl = try await acls.changes(after: aclSince, limit: Int(limit))
            }
        }
        return try json(page, index: page.index, request: request)
    }

    @Sendable func openAPIDocument(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        Response(
            status: .ok,
            headers: [.contentType: "application/yaml"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: PackageResources.openapi_yaml))
        )
    }

    @Sendable func prometheusMetrics(
        _ request: Request, _ context: AgentRequestContext
    ) async throws -> Response {
        let startedAt = self.startedAt
        let body = await metrics.exposition(
            AgentMetrics.Scrape(
                catalog: catalog, health: health.report(), watches: watches.report(), limits: limits,
                connections: connections,
                clusterViewAge: cluster.map { cluster in
                    (cluster.store.viewAge, .seconds(Date().timeIntervalSince(startedAt)))
                }))
        return Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: ResponseBody(byteBuffer: ByteBuffer(bytes: body))
        )
    }
}

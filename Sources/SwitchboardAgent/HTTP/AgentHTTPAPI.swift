import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Prometheus
import SwitchboardCatalog
import SwitchboardCore

/// The native HTTP API v1 over the `Catalog`: its routes, in groups, with an ``AgentRequestContext`` per request.
///
/// Every route is declared once, in `groups`: ``makeRouter()`` serves exactly those, ``routes`` lists them for the
/// test that keeps the OpenAPI document honest (a route cannot be added without being documented), and a path that
/// matched none answers 405 when another method serves it. The handlers live with their group: catalog reads
/// (`CatalogRoutes.swift`), instance writes (`InstanceRoutes.swift`), blocking queries and streams
/// (`WatchRoutes.swift`).
public struct AgentHTTPAPI: Sendable {
    /// One route: a method and a path in OpenAPI form (`/v1/services/{service}`).
    public struct Route: Hashable, Sendable {
        public var method: HTTPRequest.Method
        public var path: String
    }

    /// The largest request body accepted (`413` beyond).
    public static let maximumBodySize = 64 * 1024
    /// The header every response carries.
    public static let indexHeader = HTTPField.Name("X-Switchboard-Index")!
    /// Cluster mode: milliseconds since the agent last confirmed its view current with etcd, on every response.
    public static let lastContactHeader = HTTPField.Name("X-Switchboard-Last-Contact")!

    let catalog: Catalog
    let health: HealthChecker
    let watches: WatchHub
    let lookups = LookupCache()
    let observationLimiter: ObservationLimiter
    /// Eureka's "recently changed" queue, for its delta.
    let eurekaChanges: EurekaRecentChanges
    let metrics: AgentMetrics
    let startedAt: Date
    let storeDescription: String
    /// Cluster mode's store and membership, which the API reports; nil for a single agent.
    let cluster: ClusterMode?
    /// The address this agent is reached at, for a single agent's node (Consul's API, DNS `.node` names).
    let localAddress: String
    /// ACL tokens and policies (off unless the agent was started with a default policy).
    let acls: AccessControl
    /// The per-caller write limit and the held-query limit.
    let limits: RequestLimits
    /// The open-connection ceiling, which `/metrics` reports.
    let connections: ConnectionLimiter?

    /// An API over `catalog`, its `health` checker and its `watches`; `storeDescription` (such as `sqlite:/path`) is
    /// reported by `GET /v1/agent`, and so is the `cluster`'s state in cluster mode. One instance's observations are
    /// logged at most once per `observationInterval`.
    public init(
        catalog: Catalog, health: HealthChecker, watches: WatchHub, metrics: AgentMetrics, storeDescription: String,
        cluster: ClusterMode? = nil, observationInterval: Duration = .seconds(1), localAddress: String = "127.0.0.1",
        acls: AccessControl = .disabled(), limits: RequestLimits = RequestLimits(),
        connections: ConnectionLimiter? = nil, startedAt: Date = Date()
    ) {
        self.connections = connections
        self.acls = acls
        self.limits = limits
        self.localAddress = localAddress
        self.observationLimiter = ObservationLimiter(interval: observationInterval)
        self.eurekaChanges = EurekaRecentChanges(catalog: catalog)
        self.cluster = cluster
        self.catalog = catalog
        self.health = health
        self.watches = watches
        self.metrics = metrics
        self.storeDescription = storeDescription
        self.startedAt = startedAt
    }

    /// The handler of one route.
    typealias Handler = @Sendable (AgentHTTPAPI) -> @Sendable (Request, AgentRequestContext) async throws -> Response

    /// What a route needs of the caller's ACL token, checked before its handler runs (with ACLs off, nothing).
    enum RouteAccess: Sendable {
        /// Nothing: the OpenAPI document, the ACL bootstrap, Consul's status.
        case open
        /// `access` on the service the path names (`{service}`, or Eureka's `{app}`).
        case service(ACLAccess)
        /// `access` on one of the agent's own areas.
        case area(ACLAccess, ACLResource)
        /// Checked by the handler: the service comes from the body or from the instance, or the answer is filtered
        /// down to the services the token may read.
        case handler
    }

    /// One route of a group: a method, a path relative to the group's prefix (OpenAPI form), what it needs of the
    /// caller's token, and its handler.
    struct RouteDefinition: Sendable {
        var method: HTTPRequest.Method
        var path: String
        var access: RouteAccess
        var handler: Handler

        init(_ method: HTTPRequest.Method, _ path: String, _ access: RouteAccess, _ handler: @escaping Handler) {
            self.method = method
            self.path = path
            self.access = access
            self.handler = handler
        }
    }

    /// Routes under one prefix, added to the router together (and later given their own middleware: an ACL check,
    /// a compatibility layer's error rendering).
    struct RouteGroup: Sendable {
        var prefix: String
        var routes: [RouteDefinition]
    }

    /// Every route of the API, by group. The paths are the API's definition; clients build theirs with
    /// `APIPath`, and a test checks that the two agree.
    static let groups: [RouteGroup] =
        [
            RouteGroup(
                prefix: "/v1",
                routes: [
                    RouteDefinition(.get, "/agent", .area(.read, .agent)) { $0.agentInfo },
                    RouteDefinition(.get, "/watch", .handler) { $0.watchCatalog },
                    RouteDefinition(.get, "/events", .area(.read, .events)) { $0.listEvents },
                    RouteDefinition(.get, "/openapi.yaml", .open) { $0.openAPIDocument },
                ]),
            RouteGroup(
                prefix: "/v1/services",
                routes: [
                    RouteDefinition(.get, "", .handler) { $0.listServices },
                    RouteDefinition(.get, "/{service}", .service(.read)) { $0.lookupService },
                    RouteDefinition(.get, "/{service}/watch", .service(.read)) { $0.watchService },
                ]),
            RouteGroup(
                prefix: "/v1/services/{service}/instances/{id}",
                routes: [
                    RouteDefinition(.get, "", .service(.read)) { $0.readInstance },
                    RouteDefinition(.put, "", .service(.write)) { $0.registerInstance },
                    RouteDefinition(.delete, "", .service(.write)) { $0.deregisterInstance },
                    RouteDefinition(.put, "/maintenance", .service(.write)) { $0.setMaintenance },
                    RouteDefinition(.put, "/heartbeat", .service(.write)) { $0.heartbeat },
                    RouteDefinition(.post, "/observations", .service(.read)) { $0.recordObservation },
                ]),
            RouteGroup(
                prefix: "", routes: [RouteDefinition(.get, "/metrics", .area(.read, .agent)) { $0.prometheusMetrics }]),
        ] + aclGroups

    /// ACL management: `/v1/acl/...`.
    static let aclGroups: [RouteGroup] = [
        RouteGroup(
            prefix: "/v1/acl",
            routes: [
                RouteDefinition(.put, "/bootstrap", .open) { $0.aclBootstrap },
                RouteDefinition(.get, "/token/self", .open) { $0.aclTokenSelf },
                RouteDefinition(.get, "/rights", .open) { $0.aclRights },
                RouteDefinition(.get, "/tokens", .area(.read, .acl)) { $0.aclListTokens },
                RouteDefinition(.post, "/tokens", .area(.write, .acl)) { $0.aclCreateToken },
                RouteDefinition(.get, "/tokens/{accessor}", .area(.read, .acl)) { $0.aclReadToken },
                RouteDefinition(.put, "/tokens/{accessor}", .area(.write, .acl)) { $0.aclUpdateToken },
                RouteDefinition(.delete, "/tokens/{accessor}", .area(.write, .acl)) { $0.aclDeleteToken },
                RouteDefinition(.get, "/policies", .area(.read, .acl)) { $0.aclListPolicies },
                RouteDefinition(.post, "/policies", .area(.write, .acl)) { $0.aclCreatePolicy },
                RouteDefinition(.get, "/policies/{name}", .area(.read, .acl)) { $0.aclReadPolicy },
                RouteDefinition(.put, "/policies/{name}", .area(.write, .acl)) { $0.aclUpdatePolicy },
                RouteDefinition(.delete, "/policies/{name}", .area(.write, .acl)) { $0.aclDeletePolicy },
            ])
    ]

    /// The routes this API serves: every group's, with the group's prefix.
    public static let routes: [Route] = groups.flatMap { group in
        group.routes.map { Route(method: $0.method, path: group.prefix + $0.path) }
    }

    /// A router serving the API, with the request's identity established, errors in the API's form and the index
    /// header on every response (unknown routes included).
    public func makeRouter() -> Router<AgentRequestContext> {
        let router = Router(context: AgentRequestContext.self)
        let catalog = self.catalog
        var viewAge: (@Sendable () -> Duration?)?
        if let store = cluster?.store {
            viewAge = { store.viewAge }
        }
        // First, so it counts every answer as sent (errors rendered, unknown routes included).
        router.add(middleware: HTTPMetricsMiddleware(series: metrics.httpRequests))
        // With a tracer, a server span per request (continuing the caller's trace), outside the API's own middleware
        // so it records the answer as sent; Consul's clients may send their token in the query.
        if AgentTracing.tracer != nil { router.add(middleware: TracingMiddleware(redactingQueryParameters: ["token"])) }
        router.add(
            middleware: APIResponseMiddleware(
                indexHeader: Self.indexHeader, currentIndex: { catalog.index },
                viewAge: viewAge,
                allowedMethods: Self.allowedMethods(forPath:)))
        // Each group establishes the caller from its token (after a compatibility layer's middleware, which reads
        // the token its clients send and renders the errors its way), then each route checks what it needs.
        let caller = CallerMiddleware(acls: acls, metrics: metrics)
        let metrics = self.metrics
        let limits = self.limits
        func serve(_ groups: [RouteGroup], in group: (String) -> RouterGroup<AgentRequestContext>) {
            for definition in groups {
                let routes = group(definition.prefix).add(middleware: caller)
                for route in definition.routes {
                    let handler = route.handler(self)
                    let access = route.access
                    let limited = Self.countsAsWrite(route.method, definition.prefix + route.path)
                    routes.on(RouterPath(route.path), method: route.method) { request, context in
                        do {
                            try checkAccess(access, context: context)
                        } catch {
                            metrics.aclRefusals.increment()
                            throw error
                        }
                        if limited { try limits.admitWrite(from: context) }
                        return try await handler(request, context)
                    }
                }
            }
        }
        serve(Self.groups) { router.group(RouterPath($0)) }
        // Eureka's API: its own errors and content types. Consul's: its own errors and headers.
        serve(Self.eurekaGroups) { router.group(RouterPath($0)).add(middleware: EurekaResponseMiddleware()) }
        serve(Self.consulGroups) {
            router.group(RouterPath($0)).add(middleware: ConsulResponseMiddleware(viewAge: viewAge))
        }
        // The dashboard's files: open (they hold no data; the pages read the API with the operator's token).
        Dashboard.addRoutes(to: router)
        return router
    }

    /// Whether a route counts against the per-caller write limit: every write but heartbeats (the native one,
    /// Consul's TTL check updates, Eureka's renewals), which touch memory only.
    static func countsAsWrite(_ method: HTTPRequest.Method, _ path: String) -> Bool {
        guard method != .get else { return false }
        if path.hasSuffix("/heartbeat") || path.hasPrefix("/v1/agent/check/") { return false }
        if method == .put, path.hasSuffix("/apps/{app}/{id}") { return false }
        return true
    }

    /// The methods served on a path that matched no route, for a `405` instead of a `404`.
    static func allowedMethods(forPath path: String) -> [HTTPRequest.Method] {
        let segments = path.split(separator: "/", omittingEmptySubsequences: false)
        return routes.filter { route in
            let pattern = route.path.split(separator: "/", omittingEmptySubsequences: false)
            return pattern.count == segments.count
                && zip(pattern, segments).allSatisfy { expected, actual in
                    expected.hasPrefix("{") ? !actual.isEmpty : expected == actual
                }
        }.map(\.method)
    }
}

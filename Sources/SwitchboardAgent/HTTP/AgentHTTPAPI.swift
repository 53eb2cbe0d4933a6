import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
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

    /// An API over `catalog`, its `health` checker and its `watches`; `storeDescription` (such as `sqlite:/path`) is
    /// reported by `GET /v1/agent`, and so is the `cluster`'s state in cluster mode. One instance's observations are
    /// logged at most once per `observationInterval`.
    public init(
        catalog: Catalog, health: HealthChecker, watches: WatchHub, metrics: AgentMetrics, storeDescription: String,
        cluster: ClusterMode? = nil, observationInterval: Duration = .seconds(1), localAddress: String = "127.0.0.1",
        startedAt: Date = Date()
    ) {
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

    /// One route of a group: a method, a path relative to the group's prefix (OpenAPI form), and its handler.
    struct RouteDefinition: Sendable {
        var method: HTTPRequest.Method
        var path: String
        var handler: Handler

        init(_ method: HTTPRequest.Method, _ path: String, _ handler: @escaping Handler) {
            self.method = method
            self.path = path
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
    static let groups: [RouteGroup] = [
        RouteGroup(
            prefix: "/v1",
            routes: [
                RouteDefinition(.get, "/agent") { $0.agentInfo },
                RouteDefinition(.get, "/watch") { $0.watchCatalog },
                RouteDefinition(.get, "/events") { $0.listEvents },
                RouteDefinition(.get, "/openapi.yaml") { $0.openAPIDocument },
            ]),
        RouteGroup(
            prefix: "/v1/services",
            routes: [
                RouteDefinition(.get, "") { $0.listServices },
                RouteDefinition(.get, "/{service}") { $0.lookupService },
                RouteDefinition(.get, "/{service}/watch") { $0.watchService },
            ]),
        RouteGroup(
            prefix: "/v1/services/{service}/instances/{id}",
            routes: [
                RouteDefinition(.get, "") { $0.readInstance },
                RouteDefinition(.put, "") { $0.registerInstance },
                RouteDefinition(.delete, "") { $0.deregisterInstance },
                RouteDefinition(.put, "/maintenance") { $0.setMaintenance },
                RouteDefinition(.put, "/heartbeat") { $0.heartbeat },
                RouteDefinition(.post, "/observations") { $0.recordObservation },
            ]),
        RouteGroup(prefix: "", routes: [RouteDefinition(.get, "/metrics") { $0.prometheusMetrics }]),
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
        router.add(
            middleware: APIResponseMiddleware(
                indexHeader: Self.indexHeader, currentIndex: { catalog.index },
                viewAge: viewAge,
                allowedMethods: Self.allowedMethods(forPath:)))
        func serve(_ groups: [RouteGroup], in group: (String) -> RouterGroup<AgentRequestContext>) {
            for definition in groups {
                let routes = group(definition.prefix)
                for route in definition.routes {
                    let handler = route.handler(self)
                    routes.on(RouterPath(route.path), method: route.method) { request, context in
                        try await handler(request, context)
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
        return router
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

import NIOCore
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore
import Synchronization

/// Decides where a request goes: which route, which service's instances, and the path the instance sees.
///
/// With a route file, its routes in order (see ``RouteTable``); a new table can be installed at any time and
/// requests already routed keep theirs. Without one, `/<service>/<rest>` goes to `<service>` (only its instances
/// tagged ``GatewayConfiguration/publicTag``: discovery asks for those alone) with the `/<service>` prefix stripped.
final class GatewayRouter: Sendable {
    /// The service has no instance the gateway may call.
    struct NoInstance: Error {}

    let selector: UpstreamSelector
    let publicTag: String
    /// Whether routes come from a file (else from the public tag).
    let usesRouteFile: Bool
    private let table: Mutex<RouteTable?>
    /// Names recently found to have no instance the gateway may call, until when that answer holds. Only services
    /// with such instances are followed: otherwise every name a caller makes up would start a watch for good.
    private let absent = Mutex<[ServiceName: ContinuousClock.Instant]>([:])
    /// How long "no instance" is believed before the agent is asked again.
    static let absenceMemory = Duration.seconds(1)

    /// The service this gateway registers as, whose live instances share ``RateLimiter/shared`` limits.
    let gatewayService: ServiceName?

    init(selector: UpstreamSelector, publicTag: String, table: RouteTable? = nil, gatewayService: ServiceName? = nil) {
        self.selector = selector
        self.publicTag = publicTag
        self.gatewayService = gatewayService
        self.usesRouteFile = table != nil
        self.table = Mutex(table)
    }

    /// How many gateways the registry lists as healthy instances of ``gatewayService`` (this one among them once
    /// it passes its check); 1 when the gateway does not register or none is listed yet.
    var liveGateways: Int {
        guard let gatewayService else { return 1 }
        return max(1, selector.discovery.cachedSnapshot(of: gatewayService)?.instances.count ?? 1)
    }

    /// The routes in force, nil without a route file.
    var routes: RouteTable? { table.withLock { $0 } }

    /// Puts `table` in force for the requests routed from now on.
    func install(_ table: RouteTable) {
        self.table.withLock { $0 = table }
    }

    /// Where `request` goes, or nil when no route takes it.
    func route(_ request: RequestHead, random: inout FastRandom) -> RouteMatch? {
        if let table = routes {
            return table.match(request) { Int.random(in: 0..<$0, using: &random) }
        }
        let uri = request.target
        guard uri.hasPrefix("/") else { return nil }
        let afterSlash = uri.dropFirst()
        let end = afterSlash.firstIndex { $0 == "/" || $0 == "?" } ?? afterSlash.endIndex
        guard let service = try? ServiceName(String(afterSlash[..<end])) else { return nil }
        var rest = String(afterSlash[end...])
        if rest.isEmpty || rest.hasPrefix("?") { rest = "/" + rest }
        return RouteMatch(
            route: nil, target: RouteTarget(service: service, query: InstanceQuery(), weight: 1), path: rest)
    }

    /// The service's instances when discovery follows it already (no suspension, no future).
    func cachedSnapshot(of service: ServiceName) -> DiscoverySnapshot? {
        selector.discovery.cachedSnapshot(of: service)
    }

    /// The service's instances: from discovery's cache once it follows the service (no suspension on the event
    /// loop), else asked of the agent, which also starts following it.
    func snapshot(of service: ServiceName, on loop: any EventLoop) -> EventLoopFuture<DiscoverySnapshot> {
        if let cached = selector.discovery.cachedSnapshot(of: service) {
            return loop.makeSucceededFuture(cached)
        }
        let now = ContinuousClock.now
        if let until = absent.withLock({ $0[service] }), until > now {
            return loop.makeFailedFuture(NoInstance())
        }
        let discovery = selector.discovery
        // Healthy instances; without a route file, only those tagged public.
        let query = usesRouteFile ? InstanceQuery() : InstanceQuery(tags: [publicTag])
        return loop.makeFutureWithTask { [absent = self] in
            // A plain lookup first: only a service that has instances the gateway may call is worth following.
            let lookup: ServiceLookup?
            do throws(SwitchboardClientError) {
                lookup = try await discovery.agent.lookup(service, matching: query)
            } catch {
                guard error.code == .refused else { throw error }
                lookup = nil
            }
            guard let lookup, !lookup.instances.isEmpty else {
                absent.remember(absentService: service)
                throw NoInstance()
            }
            return try await discovery.snapshot(of: service)
        }
    }

    private func remember(absentService service: ServiceName) {
        let now = ContinuousClock.now
        absent.withLock { absent in
            if absent.count >= 10_000 { absent = absent.filter { $0.value > now } }
            absent[service] = now + Self.absenceMemory
        }
    }
}

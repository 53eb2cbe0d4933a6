import NIOCore
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore
import Synchronization

/// Decides where a request goes: which service, and the path the instance sees.
///
/// Without a route file, `/<service>/<rest>` goes to `<service>` (only its instances tagged
/// ``GatewayConfiguration/publicTag``: discovery asks for those alone) with the `/<service>` prefix stripped.
final class GatewayRouter: Sendable {
    /// A routed request.
    struct Target: Sendable {
        var service: ServiceName
        /// The path and query the instance receives.
        var path: String
    }

    /// The service has no instance the gateway may call (none healthy and tagged public).
    struct NoPublicInstance: Error {}

    let selector: UpstreamSelector
    private let publicTag: String
    /// Names recently found to have no public instance, until when that answer holds. Only services with public
    /// instances are followed: otherwise every name a caller makes up would start a watch on the agent for good.
    private let absent = Mutex<[ServiceName: ContinuousClock.Instant]>([:])
    /// How long "no public instance" is believed before the agent is asked again.
    static let absenceMemory = Duration.seconds(1)

    init(selector: UpstreamSelector, publicTag: String) {
        self.selector = selector
        self.publicTag = publicTag
    }

    /// The target of a request for `uri`, or nil when no route matches.
    func route(_ uri: String) -> Target? {
        guard uri.hasPrefix("/") else { return nil }
        let afterSlash = uri.dropFirst()
        let end = afterSlash.firstIndex { $0 == "/" || $0 == "?" } ?? afterSlash.endIndex
        guard let service = try? ServiceName(String(afterSlash[..<end])) else { return nil }
        var rest = String(afterSlash[end...])
        if rest.isEmpty || rest.hasPrefix("?") { rest = "/" + rest }
        return Target(service: service, path: rest)
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
            return loop.makeFailedFuture(NoPublicInstance())
        }
        let discovery = selector.discovery
        let tag = publicTag
        return loop.makeFutureWithTask { [absent = self] in
            // A plain lookup first: only a service that has public instances is worth following.
            let path = "/v1/services/\(service)?tag=\(AgentConnection.escape(tag))"
            let answer = try await discovery.connection.send(.GET, path, body: nil)
            let lookup = answer.status == .ok ? try answer.decode(ServiceLookup.self) : nil
            guard let lookup, !lookup.instances.isEmpty else {
                absent.remember(absentService: service)
                throw NoPublicInstance()
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

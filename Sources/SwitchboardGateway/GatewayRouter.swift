import NIOCore
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore

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

    let selector: UpstreamSelector

    init(selector: UpstreamSelector) {
        self.selector = selector
    }

    /// The target of `head`, or nil when no route matches.
    func route(_ head: HTTPRequestHead) -> Target? {
        let uri = head.uri
        guard uri.hasPrefix("/") else { return nil }
        let afterSlash = uri.dropFirst()
        let end = afterSlash.firstIndex { $0 == "/" || $0 == "?" } ?? afterSlash.endIndex
        guard let service = try? ServiceName(String(afterSlash[..<end])) else { return nil }
        var rest = String(afterSlash[end...])
        if rest.isEmpty || rest.hasPrefix("?") { rest = "/" + rest }
        return Target(service: service, path: rest)
    }

    /// The service's instances: from discovery's cache once it follows the service (no suspension on the event
    /// loop), else asked of the agent, which also starts following it.
    func snapshot(of service: ServiceName, on loop: any EventLoop) -> EventLoopFuture<DiscoverySnapshot> {
        if let cached = selector.discovery.cachedSnapshot(of: service) {
            return loop.makeSucceededFuture(cached)
        }
        let discovery = selector.discovery
        return loop.makeFutureWithTask { try await discovery.snapshot(of: service) }
    }
}

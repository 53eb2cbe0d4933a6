import NIOCore
import NIOHTTP1
import NIOPosix
import ProcessSupport
import Prometheus
import SwitchboardCore

/// The gateway's admin address: `GET /metrics` (Prometheus text), `GET /routes` (the routes in force),
/// `GET /health`, and `DELETE /cache?route=NAME[&path=/p]` (drops a cached route's answers: for one path, for every
/// path under a prefix ending in `*`, or all of them). Kept off the proxy's address so no route can shadow it and callers cannot reach it. `/routes` and
/// `/health` may be read from any origin: they hold nothing secret, and the agent's dashboard shows a registered
/// gateway's routes by reading them from the operator's browser.
enum AdminServer {
    static func bind(
        host: String, port: Int, metrics: GatewayMetrics, router: GatewayRouter
    ) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(metrics: metrics, router: router))
                }
            }
            .bind(host: host, port: port).get()
    }
}

final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let metrics: GatewayMetrics
    private let router: GatewayRouter
    private var head: HTTPRequestHead?

    init(metrics: GatewayMetrics, router: GatewayRouter) {
        self.metrics = metrics
        self.router = router
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            let path = head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? head.uri
            let (status, type, body): (HTTPResponseStatus, String, [UInt8])
            switch (head.method, path) {
            case (.GET, "/metrics"):
                var exposition = metrics.registry.emitToBuffer()
                ProcessFigures.current().appendExposition(to: &exposition)
                (status, type, body) = (.ok, "text/plain; version=0.0.4", exposition)
            case (.GET, "/routes"):
                (status, type, body) = (.ok, "application/json", routesJSON())
            case (.GET, "/health"):
                (status, type, body) = (.ok, "application/json", Array(#"{"status":"ok"}"#.utf8) + [0x0A])
            case (.DELETE, "/cache"):
                (status, type, body) = purgeCache(query: head.uri.split(separator: "?", maxSplits: 1).dropFirst().first)
            default:
                (status, type, body) = (
                    .notFound, "application/json",
                    Array(
                        #"{"error":"not_found","message":"the admin address serves GET /metrics, /routes and /health, and DELETE /cache"}"#
                            .utf8)
                )
            }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: type)
            headers.add(name: "Content-Length", value: String(body.count))
            if path == "/routes" || path == "/health" { headers.add(name: "Access-Control-Allow-Origin", value: "*") }
            context.write(
                wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))),
                promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(bytes: body)))), promise: nil)
            let keepAlive = head.isKeepAlive
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in
                if !keepAlive { bound.value.close(promise: nil) }
            }
        }
    }

    /// `DELETE /cache?route=NAME[&path=/p]`: the route's cached answers dropped, and how many.
    private func purgeCache(query: Substring?) -> (HTTPResponseStatus, String, [UInt8]) {
        var parameters: [String: String] = [:]
        for pair in (query ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1)
            guard let name = parts.first, let value = parts.count == 2 ? Self.percentDecoded(parts[1]) : "" else {
                return Self.problem(.badRequest, "invalid_argument", "the query is not percent-encoded properly")
            }
            parameters[String(name)] = value
        }
        guard let name = parameters["route"], !name.isEmpty else {
            return Self.problem(
                .badRequest, "invalid_argument", "route is required: DELETE /cache?route=NAME[&path=/p]")
        }
        guard let route = router.routes?.routes.first(where: { $0.name == name }) else {
            return Self.problem(.notFound, "not_found", "no route is named '\(name)'")
        }
        guard let cache = route.policies.cache else {
            return Self.problem(.notFound, "not_found", "route '\(name)' has no cache")
        }
        let path = parameters["path"].flatMap { $0.isEmpty ? nil : $0 }
        if let path, !path.hasPrefix("/") {
            return Self.problem(.badRequest, "invalid_argument", "path must start with '/', got '\(path)'")
        }
        let purged = cache.purge(path: path)
        var json = JSONText()
        json.append(#"{"route":"#)
        json.appendString(name)
        json.append(#","purged":\#(purged)}"#)
        json.append("\n")
        return (.ok, "application/json", json.bytes)
    }

    private static func problem(
        _ status: HTTPResponseStatus, _ error: String, _ message: String
    ) -> (
        HTTPResponseStatus, String, [UInt8]
    ) {
        var json = JSONText()
        json.append(#"{"error":"#)
        json.appendString(error)
        json.append(#","message":"#)
        json.appendString(message)
        json.append("}\n")
        return (status, "application/json", json.bytes)
    }

    /// `text` with `%XX` escapes (and `+` as a space) decoded; nil when an escape is broken or the result is not UTF-8.
    static func percentDecoded(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            switch byte {
            case UInt8(ascii: "%"):
                guard let high = iterator.next().flatMap(Hex.value),
                    let low = iterator.next().flatMap(Hex.value)
                else { return nil }
                bytes.append(high << 4 | low)
            case UInt8(ascii: "+"): bytes.append(UInt8(ascii: " "))
            default: bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private func routesJSON() -> [UInt8] {
        var json = JSONText()
        guard let table = router.routes else {
            json.append(#"{"source":"default","routes":[{"prefix":"/<service>","tag":"#)
            json.appendString(router.publicTag)
            json.append("}]}\n")
            return json.bytes
        }
        json.append(#"{"source":"#)
        json.appendString(table.source)
        json.append(#","routes":["#)
        for (index, route) in table.routes.enumerated() {
            if index > 0 { json.append(",") }
            json.append(#"{"name":"#)
            json.appendString(route.name)
            json.append(#","prefix":"#)
            json.appendString(route.prefix)
            json.append(#","targets":["#)
            for (position, target) in route.targets.enumerated() {
                if position > 0 { json.append(",") }
                json.append(#"{"service":"#)
                json.appendString(target.service.rawValue)
                json.append(#","weight":\#(target.weight)}"#)
            }
            json.append("]}")
        }
        json.append("]}\n")
        return json.bytes
    }
}

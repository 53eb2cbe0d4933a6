import NIOCore
import SwitchboardCore

/// What a request's `Upgrade` header asks of the gateway.
enum UpgradeRequest: Equatable {
    /// No upgrade, or one the gateway ignores and answers in HTTP/1.1 (`h2c`, which RFC 9113 retired: HTTP/2
    /// without TLS is spoken with prior knowledge).
    case none
    /// A WebSocket handshake (RFC 6455): passed to the instance, and on its `101` the connection becomes a two-way
    /// byte pipe.
    case webSocket
    /// An upgrade the gateway does not carry, with the reason the caller is told.
    case refused(String)

    /// What `head` asks for. An `Upgrade` without `Connection: upgrade` is not a request to upgrade (RFC 9110
    /// section 7.8) and is dropped as a hop-by-hop field.
    init(_ head: RequestHead) {
        guard head.connectionOptions.contains("upgrade"), let offered = head.fields.first("upgrade") else {
            self = .none
            return
        }
        let protocols = offered.split(separator: ",").map {
            $0.filter { $0 != " " && $0 != "\t" }.lowercased().split(separator: "/").first.map(String.init) ?? ""
        }
        if protocols.contains("websocket") {
            guard head.method == "GET", head.minorVersion == 1, head.framing == .none else {
                self = .refused("a WebSocket handshake is a GET in HTTP/1.1 without a body")
                return
            }
            self = .webSocket
        } else if protocols.allSatisfy({ $0 == "h2c" }) {
            self = .none
        } else {
            self = .refused("only WebSocket upgrades are proxied, not 'Upgrade: \(offered)'")
        }
    }
}

/// The life of an upgraded (WebSocket) connection: once the instance answers `101 Switching Protocols`, the
/// exchange ends (logged with status 101, counted as an upgrade) and the caller's connection and the instance's
/// carry each other's bytes untouched, with backpressure both ways, until either side closes or nothing passes for
/// the WebSocket idle timeout. The instance's connection never goes back to the pool.
extension ProxyHandler {
    func upstreamSwitchedProtocols(_ head: ResponseHead) {
        guard let context, state == .forwarding, let request = exchange?.request, let connection = exchange?.upstream
        else {
            exchange?.upstream?.channel.close(promise: nil)
            return
        }
        if let instance = exchange!.instance { recordOutcome(true, on: instance) }
        exchange!.responseStarted(status: 101, closing: false)
        GatewayHeaders.downstreamResponse(
            head, callerMinorVersion: request.minorVersion, keepAlive: true, chunked: false,
            requestID: exchange!.id, extras: exchange!.downstreamExtras, switching: true,
            into: &responseHeadBuffer)
        context.write(wrapOutboundOut(responseHeadBuffer), promise: nil)
        unflushed = true
        endAttemptSpan(failure: nil)
        exchange!.upstream = nil
        finishPick()
        if let finished = exchange.take() {
            logExchange(finished)
            endSpans(of: finished)
        }
        metrics?.recordUpgrade()
        tunnel = connection
        state = .tunnel
        lastActivity = .now()
        // What the caller sent after its handshake is already the upgraded protocol's.
        forwardToTunnel()
    }

    func upstreamTunnelBytes(_ bytes: ByteBuffer) {
        guard let context, state == .tunnel else { return }
        lastActivity = .now()
        context.write(wrapOutboundOut(bytes), promise: nil)
        unflushed = true
        if !context.channel.isWritable {
            // Held before the flush: the flush may make the caller writable again, and that releases the hold.
            tunnel?.holdReading(true)
            unflushed = false
            context.flush()
        }
    }

    func upstreamTunnelClosed() {
        guard state == .tunnel else { return }
        closeTunnel()
    }

    /// Closes the instance's side of the tunnel, if there is one.
    func releaseTunnel() {
        guard let tunnel else { return }
        self.tunnel = nil
        tunnel.handler.finish()
        tunnel.channel.close(promise: nil)
        metrics?.recordTunnelClosed()
    }

    /// Sends what the caller sent on to the instance.
    func forwardToTunnel() {
        guard let tunnel, let bytes = inbound, bytes.readableBytes > 0 else { return }
        inbound = nil
        tunnel.channel.writeAndFlush(bytes, promise: nil)
    }

    /// Ends both sides of a tunnel: what was written to the caller goes out first.
    func closeTunnel() {
        state = .closing
        releaseTunnel()
        guard let context else { return }
        unflushed = false
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(ByteBuffer())).whenComplete { _ in bound.value.close(promise: nil) }
    }
}

import NIOCore
import NIOHTTP1
import SwitchboardCore

/// The header rules of a proxy (RFC 9110 section 7.6): what is stripped, added and rewritten on each side.
enum GatewayHeaders {
    /// Headers that describe one connection and never cross a proxy.
    static let hopByHop: Set<String> = [
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
        "transfer-encoding", "upgrade",
    ]

    /// Headers the `Connection` header may not remove: they frame the message or name its target, and removing
    /// them would let one request's body be read as another request (smuggling).
    static let neverRemoved: Set<String> = ["content-length", "transfer-encoding", "host"]

    /// Removes hop-by-hop headers, and any the `Connection` header names (but never the framing headers).
    static func removeHopByHop(from headers: inout HTTPHeaders) {
        let named = Set(headers[canonicalForm: "connection"].map { $0.lowercased() }).subtracting(neverRemoved)
        var stripped = HTTPHeaders()
        for (name, value) in headers {
            let lowered = name.lowercased()
            if hopByHop.contains(lowered) || named.contains(lowered) { continue }
            stripped.add(name: name, value: value)
        }
        headers = stripped
    }

    /// The request as the instance receives it: `path`, hop-by-hop headers and `Expect` removed (the gateway
    /// answers `100 Continue` itself), the body framed as it came (a chunked body stays chunked),
    /// `X-Forwarded-For/-Proto/-Host` and `X-Request-ID` set.
    static func upstreamRequest(
        _ request: HTTPRequestHead, path: String, clientAddress: String?, requestID: String
    ) -> HTTPRequestHead {
        var headers = request.headers
        let chunked = headers[canonicalForm: "transfer-encoding"].contains { $0.lowercased() == "chunked" }
        removeHopByHop(from: &headers)
        headers.remove(name: "Expect")
        if chunked { headers.add(name: "Transfer-Encoding", value: "chunked") }
        if let clientAddress {
            let earlier = headers["X-Forwarded-For"].joined(separator: ", ")
            headers.replaceOrAdd(
                name: "X-Forwarded-For", value: earlier.isEmpty ? clientAddress : "\(earlier), \(clientAddress)")
        }
        headers.replaceOrAdd(name: "X-Forwarded-Proto", value: "http")
        if let host = request.headers.first(name: "Host") {
            headers.replaceOrAdd(name: "X-Forwarded-Host", value: host)
        }
        headers.replaceOrAdd(name: "X-Request-ID", value: requestID)
        return HTTPRequestHead(version: .http1_1, method: request.method, uri: path, headers: headers)
    }

    /// The instance's response as the caller receives it: hop-by-hop headers removed, the request id added, and
    /// `Connection: close` when the caller's connection ends after it.
    static func downstreamResponse(
        _ response: HTTPResponseHead, for request: HTTPRequestHead?, keepAlive: Bool, requestID: String
    ) -> HTTPResponseHead {
        var headers = response.headers
        removeHopByHop(from: &headers)
        if !headers.contains(name: "X-Request-ID") { headers.add(name: "X-Request-ID", value: requestID) }
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        return HTTPResponseHead(version: request?.version ?? .http1_1, status: response.status, headers: headers)
    }

    /// The caller's `X-Request-ID` when it is a sane token (1 to 128 visible ASCII characters), else a new one:
    /// 128 bits from the connection's generator (seeded from the system's), unique, not secret.
    static func requestID(from headers: HTTPHeaders, random: inout FastRandom) -> String {
        if let given = headers.first(name: "X-Request-ID"), !given.isEmpty, given.utf8.count <= 128,
            given.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        {
            return given
        }
        let high = random.next()
        let low = random.next()
        return String(high, radix: 16).leftPadded(16) + String(low, radix: 16).leftPadded(16)
    }

    /// Whether the request announces no body (no length or a zero one, and not chunked).
    static func hasNoBody(_ request: HTTPRequestHead) -> Bool {
        let chunked = request.headers[canonicalForm: "transfer-encoding"].contains { $0.lowercased() == "chunked" }
        let length = request.headers.first(name: "content-length").flatMap { Int($0) } ?? 0
        return !chunked && length == 0
    }

    /// Methods that may be sent twice (RFC 9110 section 9.2.2).
    static func isIdempotent(_ request: HTTPRequestHead) -> Bool {
        switch request.method {
        case .GET, .HEAD, .OPTIONS, .PUT, .DELETE, .TRACE: true
        default: false
        }
    }

    /// `{"error": ..., "service": ..., "message": ..., "requestId": ...}`.
    static func errorBody(
        status: HTTPResponseStatus, service: ServiceName?, reason: String, requestID: String
    ) -> ByteBuffer {
        var json = JSONText()
        json.append(#"{"error":"#)
        json.appendString(errorCode(status))
        json.append(#","message":"#)
        json.appendString(reason)
        if let service {
            json.append(#","service":"#)
            json.appendString(service.rawValue)
        }
        json.append(#","requestId":"#)
        json.appendString(requestID)
        json.append("}\n")
        return ByteBuffer(bytes: json.bytes)
    }

    private static func errorCode(_ status: HTTPResponseStatus) -> String {
        switch status {
        case .notFound: "no_route"
        case .methodNotAllowed: "method_not_allowed"
        case .badGateway: "bad_gateway"
        case .serviceUnavailable: "no_instance"
        case .gatewayTimeout: "upstream_timeout"
        default: "gateway_error"
        }
    }
}

extension String {
    fileprivate func leftPadded(_ length: Int) -> String {
        count >= length ? self : String(repeating: "0", count: length - count) + self
    }
}

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

    /// Whether field `index` stays on its side of the gateway: a hop-by-hop field, or one the `Connection` header
    /// names (but never a framing field). Compares bytes: no string per field on the hot path.
    static func isHopByHop(_ fields: HeaderFields, _ index: Int, connectionOptions: Set<String>) -> Bool {
        if fields.name(at: index, is: "connection") || fields.name(at: index, is: "keep-alive")
            || fields.name(at: index, is: "proxy-authenticate") || fields.name(at: index, is: "proxy-authorization")
            || fields.name(at: index, is: "proxy-connection") || fields.name(at: index, is: "te")
            || fields.name(at: index, is: "trailer") || fields.name(at: index, is: "transfer-encoding")
            || fields.name(at: index, is: "upgrade")
        {
            return true
        }
        guard !connectionOptions.isEmpty else { return false }
        let name = fields.lowercasedName(at: index)
        return connectionOptions.contains(name) && !neverRemoved.contains(name)
    }

    /// The request head as the instance receives it: `path`, HTTP/1.1, hop-by-hop fields and `Expect` removed (the
    /// gateway answers `100 Continue` itself), the body framed as it came, `X-Forwarded-For/-Proto/-Host` and
    /// `X-Request-ID` set, and a `Host` (the instance's address) when the caller sent none.
    static func upstreamRequest(
        _ request: RequestHead, path: String, clientAddress: String?, requestID: String,
        instanceHost: () -> String, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        let fields = request.fields
        var buffer = allocator.buffer(capacity: fields.bytes.count + path.utf8.count + 160)
        buffer.writeString(request.method)
        buffer.writeStaticString(" ")
        buffer.writeString(path)
        buffer.writeStaticString(" HTTP/1.1\r\n")
        var forwardedFor = ""
        var host: String?
        for index in 0..<fields.count {
            if isHopByHop(fields, index, connectionOptions: request.connectionOptions) { continue }
            if fields.name(at: index, is: "host") {
                host = fields.value(at: index)
            } else if fields.name(at: index, is: "x-forwarded-for") {
                forwardedFor += forwardedFor.isEmpty ? fields.value(at: index) : ", " + fields.value(at: index)
                continue
            } else if fields.name(at: index, is: "expect") || fields.name(at: index, is: "x-forwarded-proto")
                || fields.name(at: index, is: "x-forwarded-host") || fields.name(at: index, is: "x-request-id")
            {
                continue
            }
            fields.write(index, to: &buffer)
        }
        if host == nil {
            buffer.writeStaticString("Host: ")
            buffer.writeString(instanceHost())
            buffer.writeStaticString("\r\n")
        }
        if request.framing == .chunked { buffer.writeStaticString("Transfer-Encoding: chunked\r\n") }
        if let clientAddress {
            buffer.writeStaticString("X-Forwarded-For: ")
            if !forwardedFor.isEmpty {
                buffer.writeString(forwardedFor)
                buffer.writeStaticString(", ")
            }
            buffer.writeString(clientAddress)
            buffer.writeStaticString("\r\n")
        } else if !forwardedFor.isEmpty {
            buffer.writeStaticString("X-Forwarded-For: ")
            buffer.writeString(forwardedFor)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("X-Forwarded-Proto: http\r\n")
        if let host {
            buffer.writeStaticString("X-Forwarded-Host: ")
            buffer.writeString(host)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("X-Request-ID: ")
        buffer.writeString(requestID)
        buffer.writeStaticString("\r\n\r\n")
        return buffer
    }

    /// The instance's response head as the caller receives it: in the caller's HTTP version, hop-by-hop fields
    /// removed, the request id added, `Connection: close` when the caller's connection ends after it (or
    /// `keep-alive` for an HTTP/1.0 caller that keeps it), and `Transfer-Encoding: chunked` when the body goes on
    /// in chunks.
    static func downstreamResponse(
        _ response: ResponseHead, callerMinorVersion: Int, keepAlive: Bool, chunked: Bool, requestID: String,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        let fields = response.fields
        var buffer = allocator.buffer(capacity: fields.bytes.count + 96)
        buffer.writeStaticString(callerMinorVersion == 1 ? "HTTP/1.1" : "HTTP/1.0")
        // The status code and reason as the instance sent them: " 200 OK".
        _ = fields.bytes.withUnsafeBufferPointer { bytes in
            buffer.writeBytes(
                UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: bytes[8..<response.reason.upperBound])))
        }
        buffer.writeStaticString("\r\n")
        var hasRequestID = false
        for index in 0..<fields.count {
            if isHopByHop(fields, index, connectionOptions: response.connectionOptions) { continue }
            if fields.name(at: index, is: "x-request-id") { hasRequestID = true }
            fields.write(index, to: &buffer)
        }
        if chunked { buffer.writeStaticString("Transfer-Encoding: chunked\r\n") }
        if !hasRequestID {
            buffer.writeStaticString("X-Request-ID: ")
            buffer.writeString(requestID)
            buffer.writeStaticString("\r\n")
        }
        if !keepAlive {
            buffer.writeStaticString("Connection: close\r\n")
        } else if callerMinorVersion == 0 {
            buffer.writeStaticString("Connection: keep-alive\r\n")
        }
        buffer.writeStaticString("\r\n")
        return buffer
    }

    /// The caller's `X-Request-ID` when it is a sane token (1 to 128 visible ASCII characters), else a new one:
    /// 128 bits from the connection's generator (seeded from the system's), unique, not secret.
    static func requestID(from fields: HeaderFields, random: inout FastRandom) -> String {
        if fields.known.contains(.requestID), let given = fields.first("x-request-id"), !given.isEmpty,
            given.utf8.count <= 128,
            given.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        {
            return given
        }
        let digits: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 32) { id in
            digits.withUTF8Buffer { digits in
                for half in 0..<2 {
                    var value = random.next()
                    for position in stride(from: half * 16 + 15, through: half * 16, by: -1) {
                        id[position] = digits[Int(value & 0xF)]
                        value >>= 4
                    }
                }
            }
            return 32
        }
    }

    /// A whole answer from the gateway itself: JSON `body`, the request id, and `Connection: close` when
    /// `closing` (`keep-alive` for an HTTP/1.0 caller that keeps the connection).
    static func response(
        status: HTTPResponseStatus, body: ByteBuffer, requestID: String, callerMinorVersion: Int, closing: Bool,
        allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: body.readableBytes + 160)
        buffer.writeStaticString(callerMinorVersion == 1 ? "HTTP/1.1 " : "HTTP/1.0 ")
        buffer.writeString(String(status.code))
        buffer.writeStaticString(" ")
        buffer.writeString(status.reasonPhrase)
        buffer.writeStaticString("\r\nContent-Type: application/json\r\nContent-Length: ")
        buffer.writeString(String(body.readableBytes))
        buffer.writeStaticString("\r\nX-Request-ID: ")
        buffer.writeString(requestID)
        if closing {
            buffer.writeStaticString("\r\nConnection: close")
        } else if callerMinorVersion == 0 {
            buffer.writeStaticString("\r\nConnection: keep-alive")
        }
        buffer.writeStaticString("\r\n\r\n")
        buffer.writeImmutableBuffer(body)
        return buffer
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
        case .badRequest, .requestHeaderFieldsTooLarge, .notImplemented, .expectationFailed,
            .httpVersionNotSupported:
            "bad_request"
        default: "gateway_error"
        }
    }
}

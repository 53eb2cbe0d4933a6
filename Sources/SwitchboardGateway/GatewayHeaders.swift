import NIOCore
import NIOHTTP1
import SwitchboardCore

/// The header rules of a proxy (RFC 9110 section 7.6): what is stripped, added and rewritten on each side.
enum GatewayHeaders {
    /// Headers the `Connection` header may not remove: they frame the message or name its target, and removing
    /// them would let one request's body be read as another request (smuggling).
    static let neverRemoved: Set<String> = ["content-length", "transfer-encoding", "host"]

    /// Whether field `index` stays on its side of the gateway: a hop-by-hop field, or one the `Connection` header
    /// names (but never a framing field). Compares bytes: no string per field on the hot path.
    static func isHopByHop(_ fields: HeaderFields, _ index: Int, connectionOptions: Set<String>) -> Bool {
        // Most fields are none of these: their name's length alone says so.
        switch fields.fields[index].name.count {
        case 2: if fields.name(at: index, is: "te") { return true }
        case 7: if fields.name(at: index, is: "trailer") || fields.name(at: index, is: "upgrade") { return true }
        case 10:
            if fields.name(at: index, is: "connection") || fields.name(at: index, is: "keep-alive") { return true }
        case 16: if fields.name(at: index, is: "proxy-connection") { return true }
        case 17: if fields.name(at: index, is: "transfer-encoding") { return true }
        case 18: if fields.name(at: index, is: "proxy-authenticate") { return true }
        case 19: if fields.name(at: index, is: "proxy-authorization") { return true }
        default: break
        }
        return connectionOptions.contains { option in
            fields.name(at: index, isLowercased: option) && !neverRemoved.contains(option)
        }
    }

    /// The request head as the instance receives it: `path`, HTTP/1.1, hop-by-hop fields and `Expect` removed (the
    /// gateway answers `100 Continue` itself), the body framed as it came, `X-Forwarded-For/-Proto/-Host` and
    /// `X-Request-ID` set, and a `Host` (the instance's address) when the caller sent none.
    static func upstreamRequest(
        _ request: RequestHead, path: String, clientAddress: String?, requestID: RequestID,
        instanceHost: () -> String, extras: UpstreamExtras, into buffer: inout ByteBuffer
    ) {
        let fields = request.fields
        reuse(&buffer, capacity: fields.byteCount + path.utf8.count + 160)
        buffer.writeString(request.method)
        buffer.writeStaticString(" ")
        buffer.writeString(path)
        buffer.writeStaticString(" HTTP/1.1\r\n")
        var forwardedFor = ""
        var host: String?
        var copier = HeaderFields.Copier()
        for index in 0..<fields.count {
            if isHopByHop(fields, index, connectionOptions: request.connectionOptions) { continue }
            if fields.name(at: index, is: "host") {
                host = fields.value(at: index)
            } else if fields.name(at: index, is: "x-forwarded-for") {
                forwardedFor += forwardedFor.isEmpty ? fields.value(at: index) : ", " + fields.value(at: index)
                continue
            } else if fields.name(at: index, is: "expect") || fields.name(at: index, is: "x-forwarded-proto")
                || fields.name(at: index, is: "x-forwarded-host") || fields.name(at: index, is: "x-request-id")
                || fields.name(at: index, is: "x-user-id") || fields.name(at: index, is: "x-user-roles")
                || fields.name(at: index, is: "traceparent")
            {
                // The gateway's own, or (the identity) only the gateway may say: a caller's copy never passes.
                continue
            }
            if !extras.edits.isEmpty, extras.edits.drops(fields.lowercasedName(at: index)) { continue }
            // Some servers read `X_Forwarded_For` as `X-Forwarded-For`: a caller could spoof the gateway's headers.
            if fields.nameContainsUnderscore(at: index) { continue }
            copier.keep(index, of: fields, to: &buffer)
        }
        copier.flush(fields, to: &buffer)
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
        if extras.callerUsedTLS {
            buffer.writeStaticString("X-Forwarded-Proto: https\r\n")
        } else {
            buffer.writeStaticString("X-Forwarded-Proto: http\r\n")
        }
        if let host {
            buffer.writeStaticString("X-Forwarded-Host: ")
            buffer.writeString(host)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("X-Request-ID: ")
        requestID.write(to: &buffer)
        buffer.writeStaticString("\r\ntraceparent: ")
        extras.traceparent.write(to: &buffer)
        buffer.writeStaticString("\r\n")
        if let identity = extras.identity {
            buffer.writeStaticString("X-User-ID: ")
            buffer.writeString(identity.user)
            buffer.writeStaticString("\r\nX-User-Roles: ")
            buffer.writeString(identity.roles.joined(separator: ","))
            buffer.writeStaticString("\r\n")
        }
        extras.edits.writeSetFields(to: &buffer)
        // The upgrade is hop-by-hop: the gateway asks the instance for it on its own hop.
        if extras.webSocket { buffer.writeStaticString("Connection: Upgrade\r\nUpgrade: websocket\r\n") }
        buffer.writeStaticString("\r\n")
    }

    /// Makes `buffer` empty with room for `capacity` bytes, in place when nothing else holds it any more (the
    /// channel lets go of a written buffer once it is out): a connection's heads then cost no allocation. One grown
    /// past 16 KiB by a large head is let go rather than kept for the connection's life.
    static func reuse(_ buffer: inout ByteBuffer, capacity: Int) {
        if buffer.capacity > 16 * 1024 { buffer = ByteBuffer() }
        buffer.clear(minimumCapacity: capacity)
    }

    /// The instance's response head as the caller receives it: in the caller's HTTP version, hop-by-hop fields
    /// removed, the request id added, `Connection: close` when the caller's connection ends after it (or
    /// `keep-alive` for an HTTP/1.0 caller that keeps it), and `Transfer-Encoding: chunked` when the body goes on
    /// in chunks. A `101 Switching Protocols` (`switching`) gets the upgrade's own `Connection` and `Upgrade`.
    static func downstreamResponse(
        _ response: ResponseHead, callerMinorVersion: Int, keepAlive: Bool, chunked: Bool, requestID: RequestID,
        extras: DownstreamExtras?, switching: Bool = false, into buffer: inout ByteBuffer
    ) {
        let fields = response.fields
        reuse(&buffer, capacity: fields.byteCount + 96)
        buffer.writeStaticString(callerMinorVersion == 1 ? "HTTP/1.1" : "HTTP/1.0")
        // The status code and reason as the instance sent them: " 200 OK".
        fields.write(bytesAt: 8..<response.reason.upperBound, to: &buffer)
        buffer.writeStaticString("\r\n")
        var hasRequestID = false
        // A length next to a transfer coding is void (RFC 9112 section 6.3): the caller must not see both.
        let lengthVoid = fields.known.contains(.transferEncoding)
        var copier = HeaderFields.Copier()
        for index in 0..<fields.count {
            if isHopByHop(fields, index, connectionOptions: response.connectionOptions) { continue }
            if lengthVoid, fields.name(at: index, is: "content-length") { continue }
            if let extras, !extras.edits.isEmpty, extras.edits.drops(fields.lowercasedName(at: index)) { continue }
            if fields.name(at: index, is: "x-request-id") {
                // A cached answer carries the request id of the request that filled the cache: not this one's.
                if extras?.cache?.state == "HIT" { continue }
                hasRequestID = true
            }
            copier.keep(index, of: fields, to: &buffer)
        }
        copier.flush(fields, to: &buffer)
        if chunked { buffer.writeStaticString("Transfer-Encoding: chunked\r\n") }
        if let extras { extras.write(to: &buffer) }
        if !hasRequestID {
            buffer.writeStaticString("X-Request-ID: ")
            requestID.write(to: &buffer)
            buffer.writeStaticString("\r\n")
        }
        if switching {
            buffer.writeStaticString("Connection: Upgrade\r\nUpgrade: ")
            buffer.writeString(fields.first("upgrade") ?? "websocket")
            buffer.writeStaticString("\r\n")
        } else if !keepAlive {
            buffer.writeStaticString("Connection: close\r\n")
        } else if callerMinorVersion == 0 {
            buffer.writeStaticString("Connection: keep-alive\r\n")
        }
        buffer.writeStaticString("\r\n")
    }

    /// The caller's `traceparent` when it is a well-formed version-00 one (lower-case hex, trace and parent ids not
    /// all zeros); nil otherwise.
    static func callerTraceparent(in fields: HeaderFields) -> String? {
        guard let given = fields.first("traceparent"), given.utf8.count == 55 else { return nil }
        let parts = given.split(separator: "-", omittingEmptySubsequences: false)
        let isHex = { (part: Substring) in
            part.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
        }
        guard parts.count == 4, parts[0] == "00", parts[1].count == 32, parts[2].count == 16, parts[3].count == 2,
            parts.allSatisfy(isHex), parts[1] != Substring(repeating: "0", count: 32),
            parts[2] != Substring(repeating: "0", count: 16)
        else { return nil }
        return given
    }

    /// A whole answer from the gateway itself, with `headers` added: JSON `body`, the request id, and `Connection: close` when
    /// `closing` (`keep-alive` for an HTTP/1.0 caller that keeps the connection).
    static func response(
        status: HTTPResponseStatus, body: ByteBuffer, requestID: String, callerMinorVersion: Int, closing: Bool,
        headers: [(String, String)] = [], contentType: String = "application/json",
        extras: DownstreamExtras? = nil, omitBody: Bool = false, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: body.readableBytes + 160)
        buffer.writeStaticString(callerMinorVersion == 1 ? "HTTP/1.1 " : "HTTP/1.0 ")
        buffer.writeString(String(status.code))
        buffer.writeStaticString(" ")
        buffer.writeString(status.reasonPhrase)
        if body.readableBytes > 0 || status.code != 204 {
            buffer.writeStaticString("\r\nContent-Type: ")
            buffer.writeString(contentType)
            buffer.writeStaticString("\r\nContent-Length: ")
            buffer.writeString(String(body.readableBytes))
        }
        buffer.writeStaticString("\r\nX-Request-ID: ")
        buffer.writeString(requestID)
        for (name, value) in headers {
            buffer.writeStaticString("\r\n")
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
        }
        if closing {
            buffer.writeStaticString("\r\nConnection: close")
        } else if callerMinorVersion == 0 {
            buffer.writeStaticString("\r\nConnection: keep-alive")
        }
        buffer.writeStaticString("\r\n")
        extras?.write(to: &buffer)
        buffer.writeStaticString("\r\n")
        // An answer to HEAD names its body's length and sends none.
        if !omitBody { buffer.writeImmutableBuffer(body) }
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
        case .unauthorized: "unauthorized"
        case .forbidden: "forbidden"
        case .tooManyRequests: "rate_limited"
        case .badRequest, .requestHeaderFieldsTooLarge, .notImplemented, .expectationFailed,
            .httpVersionNotSupported:
            "bad_request"
        default: "gateway_error"
        }
    }
}

/// What the gateway adds to the request an instance receives.
struct UpstreamExtras {
    /// The verified caller, as `X-User-ID` and `X-User-Roles`.
    var identity: Identity?
    var edits: HeaderEdits
    var traceparent: TraceParent
    /// The request is a WebSocket handshake: the instance is asked to upgrade.
    var webSocket = false
    /// The caller reached the gateway over TLS: `X-Forwarded-Proto: https`.
    var callerUsedTLS = false
}

/// What the gateway adds to a response on its way to the caller.
struct DownstreamExtras {
    var edits = HeaderEdits()
    /// The CORS policy and the caller's allowed `Origin`.
    var cors: (policy: CORSPolicy, origin: String)?
    /// `HIT` or `MISS` on a cached route, with the age of a hit.
    var cache: (state: String, age: Int?)?
    /// The route's limit and what is left of it.
    var rateLimit: (limit: Int, remaining: Int)?
    /// Whether the answer depends on an `Origin` the request did not send (a CORS route with listed origins).
    var varyOrigin = false
    /// A sticky route's new session cookie: `name=token; Path=/; ...`.
    var setCookie: String?

    func write(to buffer: inout ByteBuffer) {
        edits.writeSetFields(to: &buffer)
        if let setCookie {
            buffer.writeStaticString("Set-Cookie: ")
            buffer.writeString(setCookie)
            buffer.writeStaticString("\r\n")
        }
        if let cors { cors.policy.writeResponseHeaders(origin: cors.origin, to: &buffer) }
        if varyOrigin { buffer.writeStaticString("Vary: Origin\r\n") }
        if let cache {
            buffer.writeString("X-Cache: \(cache.state)\r\n")
            if let age = cache.age { buffer.writeString("Age: \(age)\r\n") }
        }
        if let rateLimit {
            buffer.writeString(
                "X-RateLimit-Limit: \(rateLimit.limit)\r\nX-RateLimit-Remaining: \(rateLimit.remaining)\r\n")
        }
    }
}

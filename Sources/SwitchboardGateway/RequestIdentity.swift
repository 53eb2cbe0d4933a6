import NIOCore
import SwitchboardCore

/// A request's id (`X-Request-ID`): the caller's own when it sent a sane one, else 128 random bits.
///
/// The bits are written as hex straight into the heads that carry them: a proxied request makes no string for its
/// id unless something reads one (a log line, an error body, a span).
struct RequestID: Sendable, CustomStringConvertible {
    private enum Value: Sendable {
        case given(String)
        case random(UInt64, UInt64)
    }

    private let value: Value

    /// The caller's `X-Request-ID` when it is a sane token (1 to 128 visible ASCII characters), else a new one:
    /// 128 bits from the connection's generator (seeded from the system's), unique, not secret.
    init(from fields: HeaderFields, random: inout FastRandom) {
        if fields.known.contains(.requestID), let given = fields.first("x-request-id"), !given.isEmpty,
            given.utf8.count <= 128, given.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F })
        {
            value = .given(given)
        } else {
            value = .random(random.next(), random.next())
        }
    }

    var description: String {
        switch value {
        case .given(let id): id
        case .random(let high, let low): Hex.id128(high, low)
        }
    }

    /// Writes the id, as its string would read.
    func write(to buffer: inout ByteBuffer) {
        switch value {
        case .given(let id): buffer.writeString(id)
        case .random(let high, let low): Hex.write(high, low, to: &buffer)
        }
    }
}

/// The `traceparent` an instance receives (W3C Trace Context): the caller's trace with the gateway's hop as the
/// parent, a new trace, or a tracer's own header. Kept as its parts and written straight into the head, as
/// ``RequestID`` is; a string is made only when read.
struct TraceParent: Sendable, CustomStringConvertible {
    private enum Value: Sendable {
        /// A whole header (a tracer's, or none yet).
        case header(String)
        /// The caller's well-formed header, whose parent id is replaced by `span`.
        case continued(String, span: UInt64)
        /// A new trace.
        case new(traceHigh: UInt64, traceLow: UInt64, span: UInt64)
    }

    private var value: Value

    /// A whole header, as a tracer's propagator wrote it.
    init(header: String) {
        value = .header(header)
    }

    /// The caller's trace continued with a new parent id, or a new trace when the caller sent none (or a malformed
    /// one).
    init(from fields: HeaderFields, random: inout FastRandom) {
        let span = random.next() | 1
        if fields.known.contains(.traceparent), let given = GatewayHeaders.callerTraceparent(in: fields) {
            value = .continued(given, span: span)
        } else {
            value = .new(traceHigh: random.next(), traceLow: random.next() | 1, span: span)
        }
    }

    var description: String {
        var buffer = ByteBuffer()
        write(to: &buffer)
        return String(buffer: buffer)
    }

    /// The trace's id: the header's second part.
    var traceID: String {
        switch value {
        case .header(let header):
            header.split(separator: "-", omittingEmptySubsequences: false).dropFirst().first.map(String.init) ?? ""
        case .continued(let given, _):
            String(given.utf8.dropFirst(3).prefix(32))!
        case .new(let high, let low, _):
            Hex.id128(high, low)
        }
    }

    /// Writes the header's value: `00-<trace id>-<parent id>-<flags>`.
    func write(to buffer: inout ByteBuffer) {
        switch value {
        case .header(let header):
            buffer.writeString(header)
        case .continued(var given, let span):
            // "00-" trace "-" parent "-" flags (55 bytes, checked): only the parent changes.
            given.withUTF8 { bytes in
                buffer.writeBytes(UnsafeBufferPointer(rebasing: bytes[0..<36]))
                Hex.write(span, count: 16, to: &buffer)
                buffer.writeBytes(UnsafeBufferPointer(rebasing: bytes[52..<55]))
            }
        case .new(let high, let low, let span):
            buffer.writeStaticString("00-")
            Hex.write(high, low, to: &buffer)
            buffer.writeStaticString("-")
            Hex.write(span, count: 16, to: &buffer)
            buffer.writeStaticString("-00")
        }
    }
}

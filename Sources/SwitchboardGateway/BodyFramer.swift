import NIOCore

/// Finds where a message body ends in the bytes of a connection, as they arrive, without copying them.
///
/// The body's bytes go through as they came (a chunked body stays chunked, extensions and trailers included), but
/// every chunk line is checked on the way: what the gateway takes for the end of a body is where the instance
/// takes it too. ``dechunking`` hands out the chunks' data alone, for an HTTP/1.0 caller that knows no chunks.
struct BodyFramer {
    private enum Chunked {
        /// Reading a chunk size's hex digits; `digits` so far.
        case size(value: Int, digits: Int)
        /// Whitespace after the size: only more of it, a `;` extension or the CR may follow.
        case sizeWhitespace(value: Int)
        /// After the size: an extension, skipped up to the CR.
        case sizeLineEnd(value: Int)
        /// The LF of the size line.
        case sizeLF(value: Int)
        case data(remaining: Int)
        case dataCR
        case dataLF
        /// After the last chunk: trailer lines until an empty one; `lineLength` of the current line so far.
        case trailer(lineLength: Int)
        case trailerLF(lineLength: Int)
        case done
    }

    private enum Mode {
        case length(remaining: Int)
        case chunked(Chunked)
        case untilClose
        case done
    }

    private var mode: Mode
    /// Bytes of chunk extensions and trailers tolerated before the body is refused.
    private var metadataBudget = 16 * 1024

    init(_ framing: BodyFraming) {
        switch framing {
        case .none: mode = .done
        case .length(let length): mode = length == 0 ? .done : .length(remaining: length)
        case .chunked: mode = .chunked(.size(value: 0, digits: 0))
        case .untilClose: mode = .untilClose
        }
    }

    /// Whether the whole body has gone by.
    var isComplete: Bool {
        if case .done = mode { return true }
        return false
    }

    /// Whether the body is everything until the connection closes.
    var endsAtClose: Bool {
        if case .untilClose = mode { return true }
        return false
    }

    /// Takes the body's next bytes off the front of `input` (leaving whatever follows the body there) and returns
    /// them; nil once the body is complete.
    mutating func next(from input: inout ByteBuffer) throws(HTTPParseError) -> ByteBuffer? {
        switch mode {
        case .done:
            return nil
        case .untilClose:
            guard input.readableBytes > 0 else { return nil }
            return input.readSlice(length: input.readableBytes)
        case .length(let remaining):
            let count = min(remaining, input.readableBytes)
            guard count > 0 else { return nil }
            mode = remaining == count ? .done : .length(remaining: remaining - count)
            return input.readSlice(length: count)
        case .chunked(var state):
            let count = try input.withUnsafeReadableBytes { bytes throws(HTTPParseError) -> Int in
                var consumed = 0
                try scan(bytes, state: &state, consumed: &consumed, stopAtData: false)
                return consumed
            }
            mode = if case .done = state { .done } else { .chunked(state) }
            guard count > 0 else { return nil }
            return input.readSlice(length: count)
        }
    }

    /// Like ``next(from:)``, but hands out only the chunks' data (for a caller that cannot read chunks); the
    /// chunk lines and trailers are dropped. Only for chunked bodies.
    mutating func dechunking(from input: inout ByteBuffer) throws(HTTPParseError) -> ByteBuffer? {
        guard case .chunked(var state) = mode else { return try next(from: &input) }
        var data = ByteBuffer()
        while input.readableBytes > 0 {
            if case .data(let remaining) = state {
                let count = min(remaining, input.readableBytes)
                var slice = input.readSlice(length: count)!
                data.writeBuffer(&slice)
                state = remaining == count ? .dataCR : .data(remaining: remaining - count)
                continue
            }
            if case .done = state { break }
            let count = try input.withUnsafeReadableBytes { bytes throws(HTTPParseError) -> Int in
                var consumed = 0
                try scan(bytes, state: &state, consumed: &consumed, stopAtData: true)
                return consumed
            }
            input.moveReaderIndex(forwardBy: count)
        }
        mode = if case .done = state { .done } else { .chunked(state) }
        return data.readableBytes > 0 ? data : nil
    }

    /// Runs the chunk state machine over `bytes`, counting what belongs to the body; stops at the end of the body,
    /// or (with `stopAtData`) where chunk data starts.
    private mutating func scan(
        _ bytes: UnsafeRawBufferPointer, state: inout Chunked, consumed: inout Int, stopAtData: Bool
    ) throws(HTTPParseError) {
        while consumed < bytes.count {
            let byte = bytes[consumed]
            switch state {
            case .size(let value, let digits):
                if let digit = Hex.value(byte).map(Int.init) {
                    guard digits < 15 else { throw .bad("a chunk size is too large") }
                    state = .size(value: value << 4 | digit, digits: digits + 1)
                } else if digits == 0 {
                    throw .bad("a chunk size must start with a hex digit")
                } else if byte == 0x0D {
                    state = .sizeLF(value: value)
                } else if byte == 0x3B {
                    state = .sizeLineEnd(value: value)
                } else if byte == 0x20 || byte == 0x09 {
                    state = .sizeWhitespace(value: value)
                } else {
                    throw .bad("a chunk size has a character that is not a hex digit")
                }
            case .sizeWhitespace(let value):
                if byte == 0x0D {
                    state = .sizeLF(value: value)
                } else if byte == 0x3B {
                    state = .sizeLineEnd(value: value)
                } else if byte != 0x20 && byte != 0x09 {
                    throw .bad("a chunk size is followed by something other than an extension")
                }
            case .sizeLineEnd(let value):
                if byte == 0x0D {
                    state = .sizeLF(value: value)
                } else if byte == 0x0A || (byte < 0x20 && byte != 0x09) || byte == 0x7F {
                    throw .bad("a chunk extension has a control character")
                } else {
                    metadataBudget -= 1
                    guard metadataBudget > 0 else { throw .bad("chunk extensions are too long") }
                }
            case .sizeLF(let value):
                guard byte == 0x0A else { throw .bad("a chunk size line must end with CRLF") }
                state = value == 0 ? .trailer(lineLength: 0) : .data(remaining: value)
                if stopAtData, value > 0 {
                    consumed += 1
                    return
                }
            case .data(let remaining):
                let count = min(remaining, bytes.count - consumed)
                consumed += count
                state = remaining == count ? .dataCR : .data(remaining: remaining - count)
                continue
            case .dataCR:
                guard byte == 0x0D else { throw .bad("chunk data must be followed by CRLF") }
                state = .dataLF
            case .dataLF:
                guard byte == 0x0A else { throw .bad("chunk data must be followed by CRLF") }
                state = .size(value: 0, digits: 0)
            case .trailer(let lineLength):
                if byte == 0x0D {
                    state = .trailerLF(lineLength: lineLength)
                } else if byte == 0x0A || (byte < 0x20 && byte != 0x09) || byte == 0x7F {
                    throw .bad("a trailer line has a control character")
                } else {
                    metadataBudget -= 1
                    guard metadataBudget > 0 else { throw .bad("the trailers are too long") }
                    state = .trailer(lineLength: lineLength + 1)
                }
            case .trailerLF(let lineLength):
                guard byte == 0x0A else { throw .bad("a trailer line must end with CRLF") }
                if lineLength == 0 {
                    state = .done
                    consumed += 1
                    return
                }
                state = .trailer(lineLength: 0)
            case .done:
                return
            }
            consumed += 1
        }
    }
}

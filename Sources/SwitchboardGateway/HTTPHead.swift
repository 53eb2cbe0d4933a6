import NIOCore

/// The header fields of one message head, kept as the bytes that arrived plus where each name and value lies in
/// them: the proxy copies most fields through untouched, so a field becomes a `String` only when something reads it.
///
/// The bytes are a slice of the buffer the head was read into, not a copy: taking a head costs no allocation and no
/// copy of its bytes.
struct HeaderFields: Sendable {
    /// One field: where its name and its value (without surrounding whitespace) lie in ``bytes``.
    struct Field: Sendable {
        var name: Range<Int>
        var value: Range<Int>
    }

    /// Which of the fields that decide how a message is read are present: most heads have none of them but Host,
    /// and knowing it spares a search through every field for each.
    struct Known: OptionSet, Sendable {
        let rawValue: UInt8
        static let connection = Known(rawValue: 1)
        static let contentLength = Known(rawValue: 2)
        static let transferEncoding = Known(rawValue: 4)
        static let expect = Known(rawValue: 8)
        static let requestID = Known(rawValue: 16)
        static let traceparent = Known(rawValue: 32)
    }

    /// The message head's bytes, start line included; its readable bytes start at index 0.
    private(set) var bytes: ByteBuffer
    private(set) var fields: [Field] = []
    private(set) var known: Known = []
    private(set) var hostCount = 0

    /// The fields of the head in `bytes`, to be found into `storage`: an array a finished head gave back
    /// (``takeFieldStorage()``), taken (leaving `storage` empty), emptied and reused, so a connection's heads after
    /// its first cost no allocation.
    init(bytes: ByteBuffer, reusing storage: inout [Field]) {
        self.bytes = bytes
        swap(&fields, &storage)
        fields.removeAll(keepingCapacity: true)
        if fields.capacity < 8 { fields.reserveCapacity(8) }
    }

    /// The fields of the head in `bytes`, to be found into a new array.
    init(bytes: ByteBuffer) {
        var storage: [Field] = []
        self.init(bytes: bytes, reusing: &storage)
    }

    /// Takes the fields' array out, for the next head to reuse (leaving none here).
    mutating func takeFieldStorage() -> [Field] {
        var storage: [Field] = []
        swap(&storage, &fields)
        return storage
    }

    /// The same fields over a buffer of their own, exactly as large as the head: for a head kept long after its
    /// exchange (a cached answer), which must not hold on to the whole buffer it was read into.
    func compacted() -> HeaderFields {
        var copy = self
        copy.bytes = ByteBuffer(bytes: bytes.readableBytesView)
        return copy
    }

    /// How many bytes the head takes.
    var byteCount: Int { bytes.readableBytes }

    /// Calls `body` with the head's bytes.
    @inline(__always)
    func withBytes<T>(_ body: (UnsafeRawBufferPointer) throws -> T) rethrows -> T {
        try bytes.withUnsafeReadableBytes(body)
    }

    mutating func append(_ field: Field, in raw: UnsafeRawBufferPointer) {
        fields.append(field)
        switch field.name.count {
        case 4 where Self.equals(raw, field.name, "host"): hostCount += 1
        case 6 where Self.equals(raw, field.name, "expect"): known.insert(.expect)
        case 10 where Self.equals(raw, field.name, "connection"): known.insert(.connection)
        case 11 where Self.equals(raw, field.name, "traceparent"): known.insert(.traceparent)
        case 12 where Self.equals(raw, field.name, "x-request-id"): known.insert(.requestID)
        case 14 where Self.equals(raw, field.name, "content-length"): known.insert(.contentLength)
        case 17 where Self.equals(raw, field.name, "transfer-encoding"): known.insert(.transferEncoding)
        default: break
        }
    }

    /// The `Connection` header's options, lower-cased.
    var connectionOptions: Set<String> {
        guard known.contains(.connection) else { return [] }
        // The usual single `keep-alive` or `close`, without splitting and lower-casing strings.
        if let index = fields.indices.first(where: { name(at: $0, is: "connection") }),
            !fields[(index + 1)...].indices.contains(where: { name(at: $0, is: "connection") })
        {
            if value(at: index, is: "keep-alive") { return Self.keepAliveOption }
            if value(at: index, is: "close") { return Self.closeOption }
        }
        return Set(listItems("connection").map { $0.lowercased() })
    }

    private static let keepAliveOption: Set<String> = ["keep-alive"]
    private static let closeOption: Set<String> = ["close"]

    /// Whether the bytes at `range` of `raw` are `lowercased`, compared without case.
    @inline(__always)
    static func equals(_ raw: UnsafeRawBufferPointer, _ range: Range<Int>, _ lowercased: StaticString) -> Bool {
        guard range.count == lowercased.utf8CodeUnitCount else { return false }
        let expected = lowercased.utf8Start
        var position = range.lowerBound
        var offset = 0
        while position < range.upperBound {
            if lowercase(raw[position]) != expected[offset] { return false }
            position += 1
            offset += 1
        }
        return true
    }

    /// Whether field `index`'s whole value is `lowercased`, compared without case.
    func value(at index: Int, is lowercased: StaticString) -> Bool {
        let range = fields[index].value
        return withBytes { Self.equals($0, range, lowercased) }
    }

    var count: Int { fields.count }

    /// Whether field `index` is called `lowercased` (given in lower case; names compare without case).
    func name(at index: Int, is lowercased: StaticString) -> Bool {
        let range = fields[index].name
        guard range.count == lowercased.utf8CodeUnitCount else { return false }
        return withBytes { Self.equals($0, range, lowercased) }
    }

    /// Whether field `index` is called `name`, a lower-case name known only at run time (a `Connection` option):
    /// compared on the bytes, with no string made.
    func name(at index: Int, isLowercased name: String) -> Bool {
        let range = fields[index].name
        guard range.count == name.utf8.count else { return false }
        return withBytes { raw in name.utf8.elementsEqual(raw[range].lazy.map(Self.lowercase)) }
    }

    /// Field `index`'s name, lower-cased.
    func lowercasedName(at index: Int) -> String {
        let range = fields[index].name
        return withBytes { String(decoding: $0[range].lazy.map(Self.lowercase), as: UTF8.self) }
    }

    func nameContainsUnderscore(at index: Int) -> Bool {
        let range = fields[index].name
        return withBytes { $0[range].contains(0x5F) }
    }

    func value(at index: Int) -> String {
        let range = fields[index].value
        return withBytes { String(decoding: $0[range], as: UTF8.self) }
    }

    /// The first value of the field called `lowercased`.
    func first(_ lowercased: StaticString) -> String? {
        for index in fields.indices where name(at: index, is: lowercased) {
            return value(at: index)
        }
        return nil
    }

    /// The value of the field called `lowercased` when it appears once and is 1 to 18 decimal digits; nil
    /// otherwise (absent, repeated, a list or not a number), for the caller to read it the long way.
    func singleDecimalValue(_ lowercased: StaticString) -> Int? {
        var found: Int?
        for index in fields.indices where name(at: index, is: lowercased) {
            guard found == nil else { return nil }
            found = index
        }
        guard let found else { return nil }
        let range = fields[found].value
        guard range.count >= 1, range.count <= 18 else { return nil }
        return withBytes { raw in
            var value = 0
            for position in range {
                let digit = raw[position] &- 0x30
                guard digit <= 9 else { return nil }
                value = value * 10 + Int(digit)
            }
            return value
        }
    }

    /// Every value of the field called `lowercased`, comma-separated lists split and trimmed, empty items dropped.
    func listItems(_ lowercased: StaticString) -> [String] {
        var items: [String] = []
        for index in fields.indices where name(at: index, is: lowercased) {
            let range = fields[index].value
            withBytes { raw in
                for item in raw[range].split(separator: UInt8(ascii: ",")) {
                    let trimmed = item.drop { $0 == 0x20 || $0 == 0x09 }.reversed().drop { $0 == 0x20 || $0 == 0x09 }
                    if !trimmed.isEmpty { items.append(String(decoding: trimmed.reversed(), as: UTF8.self)) }
                }
            }
        }
        return items
    }

    func contains(_ lowercased: StaticString) -> Bool {
        fields.indices.contains { name(at: $0, is: lowercased) }
    }

    /// Writes field `index` as it came (`Name: value` and CRLF).
    func write(_ index: Int, to buffer: inout ByteBuffer) {
        let field = fields[index]
        withBytes { raw in
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[field.name]))
            buffer.writeStaticString(": ")
            buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[field.value]))
            buffer.writeStaticString("\r\n")
        }
    }

    /// Where field `index`'s whole line lies (`Name: value` and its CRLF) when it is written the usual way, one
    /// space after the colon and none after the value: copied as it came, it reads the same as written anew.
    func canonicalLine(at index: Int) -> Range<Int>? {
        let field = fields[index]
        guard field.value.lowerBound == field.name.upperBound + 2 else { return nil }
        return withBytes { raw in
            guard raw[field.name.upperBound + 1] == 0x20, field.value.upperBound + 1 < raw.count,
                raw[field.value.upperBound] == 0x0D
            else { return nil }
            return field.name.lowerBound..<(field.value.upperBound + 2)
        }
    }

    /// Writes the head's bytes at `range` as they came.
    func write(bytesAt range: Range<Int>, to buffer: inout ByteBuffer) {
        withBytes { raw in _ = buffer.writeBytes(UnsafeRawBufferPointer(rebasing: raw[range])) }
    }

    /// Writes the fields a proxy keeps, in order, copying each run of neighbouring lines in one piece: a head of
    /// ten kept fields is then one copy, not forty small writes.
    struct Copier {
        private var run: Range<Int>?

        /// Adds field `index` of `fields` (written now, or joined to the run being gathered).
        mutating func keep(_ index: Int, of fields: HeaderFields, to buffer: inout ByteBuffer) {
            guard let line = fields.canonicalLine(at: index) else {
                flush(fields, to: &buffer)
                fields.write(index, to: &buffer)
                return
            }
            if let current = run, current.upperBound == line.lowerBound {
                run = current.lowerBound..<line.upperBound
            } else {
                flush(fields, to: &buffer)
                run = line
            }
        }

        /// Writes the run gathered so far; call before anything else is written after the fields.
        mutating func flush(_ fields: HeaderFields, to buffer: inout ByteBuffer) {
            if let current = run.take() { fields.write(bytesAt: current, to: &buffer) }
        }
    }

    @inline(__always)
    static func lowercase(_ byte: UInt8) -> UInt8 {
        byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
    }
}

/// How a message's body is delimited (RFC 9112 section 6).
enum BodyFraming: Equatable, Sendable {
    case none
    case length(Int)
    case chunked
    /// Only a response: the body is everything until the instance closes the connection.
    case untilClose
}

/// A caller's request head, checked.
struct RequestHead: Sendable {
    var method: String
    /// The request target as sent (origin form for anything the gateway routes).
    var target: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    var minorVersion: Int
    var fields: HeaderFields
    var framing: BodyFraming
    /// The `Connection` header's options, lower-cased.
    var connectionOptions: Set<String>
    var expectsContinue: Bool

    /// Whether the caller keeps the connection after this exchange (HTTP/1.1 unless `close`; HTTP/1.0 only with
    /// `keep-alive`).
    var keepAlive: Bool {
        minorVersion == 1 ? !connectionOptions.contains("close") : connectionOptions.contains("keep-alive")
    }

    var isHEAD: Bool { method == "HEAD" }

    /// Methods that may be sent twice (RFC 9110 section 9.2.2).
    var isIdempotent: Bool {
        switch method {
        case "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE": true
        default: false
        }
    }
}

/// An instance's response head, checked.
struct ResponseHead: Sendable {
    var status: Int
    var minorVersion: Int
    var fields: HeaderFields
    /// Where the status line's reason phrase lies in the head's bytes.
    var reason: Range<Int>
    var connectionOptions: Set<String>
    /// Whether the instance keeps the connection after this response.
    var keepAlive: Bool {
        minorVersion == 1 ? !connectionOptions.contains("close") : connectionOptions.contains("keep-alive")
    }
}

/// Why a message head was refused; `status` is what a caller is answered.
struct HTTPParseError: Error, Equatable, CustomStringConvertible {
    var status: Int
    var message: String

    static func bad(_ message: String) -> HTTPParseError { HTTPParseError(status: 400, message: message) }

    var description: String { message }
}

/// A strict reader of HTTP/1.x message heads (RFC 9112): CRLF line ends only, no folded or space-prefixed lines,
/// token names with no space before the colon, no control characters in values, and no message whose length
/// could be read two ways (both `Content-Length` and `Transfer-Encoding`, differing lengths, a coding other than
/// chunked). Being strict is what keeps one request's bytes from being read as another's by the instance behind.
enum HTTPHeadParser {
    /// Heads larger than this are refused (431 for a caller, a failure for an instance).
    static let maximumHeadSize = 64 * 1024
    static let maximumFields = 128

    /// Where the head in `buffer` ends (the index after its blank line), searching from `offset` bytes into the
    /// readable bytes (what an earlier search already covered, less three).
    static func headEnd(in buffer: ByteBuffer, searchingFrom offset: Int) -> Int? {
        buffer.withUnsafeReadableBytes { bytes in
            var index = max(offset, 0)
            while index + 3 < bytes.count {
                if bytes[index + 3] != 0x0A {
                    index += bytes[index + 3] == 0x0D ? 1 : 4
                    continue
                }
                if bytes[index] == 0x0D && bytes[index + 1] == 0x0A && bytes[index + 2] == 0x0D {
                    return index + 4
                }
                index += 1
            }
            return nil
        }
    }

    /// Reads a request head: `head` holds it all, from its first byte to its blank line, and becomes the fields'
    /// storage (no copy).
    static func request(_ head: ByteBuffer) throws(HTTPParseError) -> RequestHead {
        var storage: [HeaderFields.Field] = []
        return try request(head, reusing: &storage)
    }

    /// ``request(_:)`` with the fields found into `storage` (see ``HeaderFields/init(bytes:reusing:)``).
    static func request(
        _ head: ByteBuffer, reusing storage: inout [HeaderFields.Field]
    ) throws(HTTPParseError) -> RequestHead {
        var fields = HeaderFields(bytes: head, reusing: &storage)
        let line = head.withUnsafeReadableBytes { bytes in
            Result { () throws(HTTPParseError) in try requestLine(bytes, fields: &fields) }
        }
        let (method, target, minor) = try line.get()
        var head = RequestHead(
            method: method, target: target, minorVersion: minor, fields: fields, framing: .none,
            connectionOptions: fields.connectionOptions, expectsContinue: false)
        if fields.hostCount > 1 { throw .bad("more than one Host header") }
        if fields.hostCount == 0 && minor == 1 { throw .bad("an HTTP/1.1 request must have a Host header") }
        let codings = fields.known.contains(.transferEncoding) ? fields.listItems("transfer-encoding") : []
        if !codings.isEmpty {
            if fields.known.contains(.contentLength) {
                throw .bad("a request may not have both Content-Length and Transfer-Encoding")
            }
            if minor == 0 { throw .bad("Transfer-Encoding is not allowed in an HTTP/1.0 request") }
            guard codings.count == 1, codings[0].lowercased() == "chunked" else {
                throw HTTPParseError(
                    status: 501, message: "only 'Transfer-Encoding: chunked' is supported, got '\(codings)'")
            }
            head.framing = .chunked
        } else if let length = try contentLength(fields) {
            head.framing = length == 0 ? .none : .length(length)
        }
        if fields.known.contains(.expect), let expect = fields.first("expect") {
            guard expect.lowercased() == "100-continue" else {
                throw HTTPParseError(status: 417, message: "only 'Expect: 100-continue' is supported")
            }
            head.expectsContinue = minor == 1
        }
        return head
    }

    /// The request line's method, target and minor version; the fields after it go into `fields`.
    private static func requestLine(
        _ bytes: UnsafeRawBufferPointer, fields: inout HeaderFields
    ) throws(HTTPParseError) -> (method: String, target: String, minor: Int) {
        let lineEnd = try lineEnd(in: bytes, from: 0)
        // method SP request-target SP HTTP-version
        guard let firstSpace = bytes[0..<lineEnd].firstIndex(of: 0x20), firstSpace > 0 else {
            throw .bad("the request line must be 'METHOD target HTTP/1.1'")
        }
        guard bytes[0..<firstSpace].allSatisfy(isTokenCharacter) else { throw .bad("the method is not a token") }
        guard let secondSpace = bytes[(firstSpace + 1)..<lineEnd].firstIndex(of: 0x20), secondSpace > firstSpace + 1
        else {
            throw .bad("the request line must be 'METHOD target HTTP/1.1'")
        }
        let target = bytes[(firstSpace + 1)..<secondSpace]
        guard target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw .bad("the request target has a character outside visible ASCII")
        }
        let minor = try version(bytes[(secondSpace + 1)..<lineEnd])
        try readFields(bytes, from: lineEnd + 2, into: &fields)
        return (
            String(decoding: bytes[0..<firstSpace], as: UTF8.self), String(decoding: target, as: UTF8.self), minor
        )
    }

    /// Reads a response head: `head` holds it all, from its first byte to its blank line, and becomes the fields'
    /// storage (no copy).
    static func response(_ head: ByteBuffer) throws(HTTPParseError) -> ResponseHead {
        var storage: [HeaderFields.Field] = []
        return try response(head, reusing: &storage)
    }

    /// ``response(_:)`` with the fields found into `storage` (see ``HeaderFields/init(bytes:reusing:)``).
    static func response(
        _ head: ByteBuffer, reusing storage: inout [HeaderFields.Field]
    ) throws(HTTPParseError) -> ResponseHead {
        var fields = HeaderFields(bytes: head, reusing: &storage)
        let line = head.withUnsafeReadableBytes { bytes in
            Result { () throws(HTTPParseError) in try statusLine(bytes, fields: &fields) }
        }
        let (status, minor, reason) = try line.get()
        return ResponseHead(
            status: status, minorVersion: minor, fields: fields, reason: reason,
            connectionOptions: fields.connectionOptions)
    }

    /// The status line's code, minor version and where its reason lies; the fields after it go into `fields`.
    private static func statusLine(
        _ bytes: UnsafeRawBufferPointer, fields: inout HeaderFields
    ) throws(HTTPParseError) -> (status: Int, minor: Int, reason: Range<Int>) {
        let lineEnd = try lineEnd(in: bytes, from: 0)
        // HTTP-version SP 3DIGIT SP reason
        guard lineEnd >= 12, bytes[8] == 0x20, bytes[9...11].allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
            lineEnd == 12 || bytes[12] == 0x20
        else {
            throw .bad("the status line must be 'HTTP/1.1 200 reason'")
        }
        let minor = try version(bytes[0..<8])
        let status = bytes[9...11].reduce(0) { $0 * 10 + Int($1 - 0x30) }
        guard status >= 100 else { throw .bad("status \(status) is not a status code") }
        let reasonStart = min(13, lineEnd)
        guard bytes[reasonStart..<lineEnd].allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
            throw .bad("the reason phrase has a control character")
        }
        try readFields(bytes, from: lineEnd + 2, into: &fields)
        return (status, minor, reasonStart..<lineEnd)
    }

    /// How the body of `response` to a request (a HEAD one or not) is delimited (RFC 9112 section 6.3).
    static func framing(of response: ResponseHead, toHEAD: Bool) throws(HTTPParseError) -> BodyFraming {
        if toHEAD || response.status < 200 || response.status == 204 || response.status == 304 { return .none }
        let codings =
            response.fields.known.contains(.transferEncoding) ? response.fields.listItems("transfer-encoding") : []
        if !codings.isEmpty {
            // Codings other than chunked would reach a caller that never asked for them, mislabelled.
            guard codings.count == 1, codings[0].lowercased() == "chunked", response.minorVersion == 1 else {
                throw .bad("the instance answered with Transfer-Encoding '\(codings.joined(separator: ", "))'")
            }
            return .chunked
        }
        if let length = try contentLength(response.fields) { return .length(length) }
        return .untilClose
    }

    private static func contentLength(_ fields: HeaderFields) throws(HTTPParseError) -> Int? {
        guard fields.known.contains(.contentLength) else { return nil }
        // The usual one field of digits, read from the bytes; anything else (a list, a repeat, an error) below.
        if let single = fields.singleDecimalValue("content-length") { return single }
        var length: Int?
        for value in fields.listItems("content-length") {
            guard value.utf8.count <= 18, !value.isEmpty, value.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }),
                let parsed = Int(value)
            else {
                throw .bad("Content-Length must be a decimal number, got '\(value)'")
            }
            if let length, length != parsed { throw .bad("Content-Length is given twice with different values") }
            length = parsed
        }
        return length
    }

    private static func version(_ bytes: Slice<UnsafeRawBufferPointer>) throws(HTTPParseError) -> Int {
        guard bytes.count == 8, bytes.starts(with: "HTTP/".utf8), bytes[bytes.startIndex + 6] == 0x2E else {
            throw .bad("the HTTP version must be HTTP/1.1 or HTTP/1.0")
        }
        let major = bytes[bytes.startIndex + 5]
        let minor = bytes[bytes.startIndex + 7]
        guard major == 0x31, minor == 0x30 || minor == 0x31 else {
            throw HTTPParseError(status: 505, message: "only HTTP/1.1 and HTTP/1.0 are served")
        }
        return Int(minor - 0x30)
    }

    /// The index of the CR ending the line that starts at `start`; a CR or LF anywhere else is refused.
    private static func lineEnd(in bytes: UnsafeRawBufferPointer, from start: Int) throws(HTTPParseError) -> Int {
        var index = start
        while index + 1 < bytes.count {
            let byte = bytes[index]
            if byte == 0x0D {
                guard bytes[index + 1] == 0x0A else { throw .bad("a bare CR in the message head") }
                return index
            }
            if byte == 0x0A { throw .bad("a line ends with LF alone, not CRLF") }
            index += 1
        }
        throw .bad("the message head is cut short")
    }

    private static func readFields(
        _ bytes: UnsafeRawBufferPointer, from start: Int, into fields: inout HeaderFields
    ) throws(HTTPParseError) {
        var lineStart = start
        while true {
            let end = try lineEnd(in: bytes, from: lineStart)
            if end == lineStart { return }
            guard fields.count < maximumFields else { throw .bad("more than \(maximumFields) header fields") }
            guard let colon = bytes[lineStart..<end].firstIndex(of: 0x3A), colon > lineStart else {
                throw .bad("a header line has no name")
            }
            guard bytes[lineStart..<colon].allSatisfy(isTokenCharacter) else {
                throw .bad(
                    bytes[lineStart] == 0x20 || bytes[lineStart] == 0x09
                        ? "folded header lines are not accepted"
                        : "header name '\(String(decoding: bytes[lineStart..<colon], as: UTF8.self))' is not a token")
            }
            var valueStart = colon + 1
            var valueEnd = end
            while valueStart < valueEnd, bytes[valueStart] == 0x20 || bytes[valueStart] == 0x09 { valueStart += 1 }
            while valueEnd > valueStart, bytes[valueEnd - 1] == 0x20 || bytes[valueEnd - 1] == 0x09 { valueEnd -= 1 }
            for byte in bytes[valueStart..<valueEnd] where (byte < 0x20 && byte != 0x09) || byte == 0x7F {
                throw .bad(
                    "header '\(String(decoding: bytes[lineStart..<colon], as: UTF8.self))' has a control character")
            }
            fields.append(.init(name: lineStart..<colon, value: valueStart..<valueEnd), in: bytes)
            lineStart = end + 2
        }
    }

    /// RFC 9110 tchar.
    static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: true
        case 0x21, 0x23, 0x24, 0x25, 0x26, 0x27, 0x2A, 0x2B, 0x2D, 0x2E, 0x5E, 0x5F, 0x60, 0x7C, 0x7E: true
        default: false
        }
    }
}

/// The one reading of a request's path that routes are matched on and instances receive.
///
/// A route protecting `/api/admin` must also protect `/api//admin`, `/api/./admin`, `/api/x/../admin` and
/// `/api/%61dmin`: the instance behind would read them all as `/api/admin`. So before routing, the path is
/// normalised (RFC 3986 section 6.2.2, as Envoy's `normalize_path` and `merge_slashes` do): escapes of unreserved
/// characters decoded, other escapes upper-cased, repeated slashes merged, dot segments resolved; and what could
/// still be read two ways is refused: an escaped `/` or `\`, a raw `\`, an escaped control byte, `..` above the root.
enum RequestPath {
    /// `target` with its path normalised (the query kept as it came), or nil when it must be refused. A target that
    /// is not a path (`*`, an absolute URL) is returned as it is: no route takes it.
    static func normalize(_ target: String) -> String? {
        guard target.hasPrefix("/") else { return target }
        if isNormal(target) { return target }
        let bytes = Array(target.utf8)
        let queryStart = bytes.firstIndex(of: UInt8(ascii: "?")) ?? bytes.endIndex
        var decoded: [UInt8] = []
        decoded.reserveCapacity(queryStart)
        var index = 0
        while index < queryStart {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\\") { return nil }
            guard byte == UInt8(ascii: "%") else {
                decoded.append(byte)
                index += 1
                continue
            }
            guard index + 2 < queryStart, let high = Hex.value(bytes[index + 1]), let low = Hex.value(bytes[index + 2])
            else { return nil }
            let value = high << 4 | low
            switch value {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                decoded.append(value)
            case UInt8(ascii: "/"), UInt8(ascii: "\\"), 0..<0x20, 0x7F:
                return nil
            default:
                decoded += [UInt8(ascii: "%"), hexDigit(high), hexDigit(low)]
            }
            index += 3
        }
        var segments: [ArraySlice<UInt8>] = []
        var endsWithSlash = decoded.last == UInt8(ascii: "/")
        for segment in decoded.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: true) {
            if segment.elementsEqual([UInt8(ascii: ".")]) {
                endsWithSlash = true
            } else if segment.elementsEqual([UInt8(ascii: "."), UInt8(ascii: ".")]) {
                guard !segments.isEmpty else { return nil }
                segments.removeLast()
                endsWithSlash = true
            } else {
                segments.append(segment)
                endsWithSlash = false
            }
        }
        if decoded.last == UInt8(ascii: "/") { endsWithSlash = true }
        var path: [UInt8] = [UInt8(ascii: "/")]
        for (position, segment) in segments.enumerated() {
            if position > 0 { path.append(UInt8(ascii: "/")) }
            path += segment
        }
        if endsWithSlash, !segments.isEmpty { path.append(UInt8(ascii: "/")) }
        return String(decoding: path + bytes[queryStart...], as: UTF8.self)
    }

    /// Whether the path has nothing to normalise: no escape, no backslash, no empty or dot segment (the usual case,
    /// decided without copying).
    private static func isNormal(_ target: String) -> Bool {
        var previous: UInt8 = 0
        var beforePrevious: UInt8 = 0
        for byte in target.utf8 {
            if byte == UInt8(ascii: "?") { break }
            if byte == UInt8(ascii: "%") || byte == UInt8(ascii: "\\") { return false }
            if byte == UInt8(ascii: "/"), previous == UInt8(ascii: "/") { return false }
            // "/." followed by "/" or "." or the end is a dot segment; "/.x" is a name.
            if previous == UInt8(ascii: "."), beforePrevious == UInt8(ascii: "/"),
                byte == UInt8(ascii: "/") || byte == UInt8(ascii: ".")
            {
                return false
            }
            beforePrevious = previous
            previous = byte
        }
        // A path ending in "/." or "/..".
        if previous == UInt8(ascii: "."), beforePrevious == UInt8(ascii: "/") || beforePrevious == UInt8(ascii: ".") {
            return false
        }
        return true
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : UInt8(ascii: "A") + value - 10
    }
}

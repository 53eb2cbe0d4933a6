/// Where the top-level parts of a JSON text are, found by one pass over its bytes without decoding it.
///
/// The catalog keeps every change's JSON (``CommittedChange``). A store that learns a change's index only once it
/// is committed, or that reads a change back from another agent's log entry, already holds that JSON with other
/// indexes in it; finding and replacing the two numbers costs a scan instead of a full encode. Strings are skipped
/// whole (escapes included), so a key or value inside a string, or a key of a nested object, never matches.
public enum JSONFields {
    /// The key and value of each top-level field of the object in `json[bounds]` (all of `json` when nil), as
    /// ranges of `json`; nil when it is not an object this scan understands (unbalanced, say).
    public static func values(
        ofObject json: [UInt8], in bounds: Range<Int>? = nil
    ) -> [(key: Range<Int>, value: Range<Int>)]? {
        json.withUnsafeBufferPointer { buffer in
            values(
                ofObject: UnsafeBufferPointer(rebasing: buffer[bounds ?? buffer.indices]),
                offset: bounds?.lowerBound ?? 0)
        }
    }

    /// The value of the top-level field `key` of the object in `json[bounds]`, as a range of `json`.
    public static func value(
        of key: String, inObject json: [UInt8], in bounds: Range<Int>? = nil
    ) -> Range<Int>? {
        let name = Array(key.utf8)
        return values(ofObject: json, in: bounds)?.first { json[$0.key].elementsEqual(name) }?.value
    }

    private static func values(
        ofObject json: UnsafeBufferPointer<UInt8>, offset: Int
    ) -> [(key: Range<Int>, value: Range<Int>)]? {
        var fields: [(key: Range<Int>, value: Range<Int>)] = []
        var position = skipSpace(json, from: json.startIndex)
        guard position < json.endIndex, json[position] == UInt8(ascii: "{") else { return nil }
        position += 1
        while true {
            position = skipSpace(json, from: position)
            guard position < json.endIndex else { return nil }
            if json[position] == UInt8(ascii: "}") { return fields }
            if json[position] == UInt8(ascii: ",") {
                position = skipSpace(json, from: position + 1)
            }
            guard position < json.endIndex, json[position] == UInt8(ascii: "\""),
                let keyEnd = endOfString(json, from: position)
            else { return nil }
            let key = (offset + position + 1)..<(offset + keyEnd - 1)
            position = skipSpace(json, from: keyEnd)
            guard position < json.endIndex, json[position] == UInt8(ascii: ":") else { return nil }
            let start = skipSpace(json, from: position + 1)
            guard let end = endOfValue(json, from: start) else { return nil }
            fields.append((key, (offset + start)..<(offset + end)))
            position = end
        }
    }

    /// The elements of the top-level array in `json`, as ranges of `json`; nil when it is not an array.
    public static func elements(ofArray json: [UInt8]) -> [Range<Int>]? {
        json.withUnsafeBufferPointer { elements(ofArray: $0) }
    }

    private static func elements(ofArray json: UnsafeBufferPointer<UInt8>) -> [Range<Int>]? {
        var elements: [Range<Int>] = []
        var position = skipSpace(json, from: json.startIndex)
        guard position < json.endIndex, json[position] == UInt8(ascii: "[") else { return nil }
        position += 1
        while true {
            position = skipSpace(json, from: position)
            guard position < json.endIndex else { return nil }
            if json[position] == UInt8(ascii: "]") { return elements }
            if json[position] == UInt8(ascii: ",") {
                position = skipSpace(json, from: position + 1)
            }
            guard let end = endOfValue(json, from: position) else { return nil }
            elements.append(position..<end)
            position = end
        }
    }

    /// `json` (an object) with the top-level unsigned integers under `numbers`' keys set to their values; nil when
    /// one of the keys is missing or holds no plain unsigned integer.
    public static func settingNumbers(_ numbers: KeyValuePairs<String, UInt64>, in json: [UInt8]) -> [UInt8]? {
        guard let fields = values(ofObject: json) else { return nil }
        var replacements: [(range: Range<Int>, value: UInt64)] = []
        for (name, value) in numbers {
            let key = Array(name.utf8)
            guard let field = fields.first(where: { json[$0.key].elementsEqual(key) }),
                !field.value.isEmpty,
                json[field.value].allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
            else { return nil }
            replacements.append((field.value, value))
        }
        replacements.sort { $0.range.lowerBound < $1.range.lowerBound }
        var result: [UInt8] = []
        result.reserveCapacity(json.count + 16)
        var copied = json.startIndex
        for replacement in replacements {
            result += json[copied..<replacement.range.lowerBound]
            result += Array(String(replacement.value).utf8)
            copied = replacement.range.upperBound
        }
        result += json[copied...]
        return result
    }

    // MARK: Scanning

    private static func skipSpace(_ json: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        var position = start
        while position < json.endIndex {
            switch json[position] {
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"): position += 1
            default: return position
            }
        }
        return position
    }

    /// Just past the closing quote of the string opening at `start`.
    private static func endOfString(_ json: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        var position = start + 1
        while position < json.endIndex {
            switch json[position] {
            case UInt8(ascii: "\\"): position += 2
            case UInt8(ascii: "\""): return position + 1
            default: position += 1
            }
        }
        return nil
    }

    /// Just past the value starting at `start`: a string, an object or array (balanced, strings skipped whole), or
    /// a number, `true`, `false` or `null` (up to the next delimiter).
    private static func endOfValue(_ json: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        guard start < json.endIndex else { return nil }
        switch json[start] {
        case UInt8(ascii: "\""):
            return endOfString(json, from: start)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            var position = start
            while position < json.endIndex {
                switch json[position] {
                case UInt8(ascii: "\""):
                    guard let end = endOfString(json, from: position) else { return nil }
                    position = end
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["):
                    depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { return position + 1 }
                default:
                    break
                }
                position += 1
            }
            return nil
        case UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), UInt8(ascii: ":"):
            return nil
        default:
            var position = start
            while position < json.endIndex {
                switch json[position] {
                case UInt8(ascii: ","), UInt8(ascii: "}"), UInt8(ascii: "]"), UInt8(ascii: " "), UInt8(ascii: "\n"),
                    UInt8(ascii: "\r"), UInt8(ascii: "\t"):
                    return position
                default:
                    position += 1
                }
            }
            return position
        }
    }
}

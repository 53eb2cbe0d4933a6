/// A duration written the way operators write them: `250ms`, `10s`, `1m30s`, `1.5h`.
///
/// Check intervals, TTLs and timeouts travel as such strings in the API and on the command line (the same form
/// Consul and Go use), so they are parsed in one place. The value is kept in whole milliseconds: nothing in the
/// catalog needs finer grain, and an integer compares and stores exactly.
public struct HumanDuration: Hashable, Comparable, Sendable, CustomStringConvertible, Codable {
    /// The length in milliseconds.
    public let milliseconds: Int64

    /// The longest duration accepted anywhere (about 1 year), which keeps arithmetic far from overflow.
    public static let maximum = HumanDuration(milliseconds: 366 * 24 * 3_600_000)

    /// Creates a duration of `milliseconds`.
    public init(milliseconds: Int64) {
        self.milliseconds = milliseconds
    }

    /// Creates a duration as long as `duration`, to the millisecond.
    public init(_ duration: Duration) {
        self.init(milliseconds: Int64(duration / .milliseconds(1)))
    }

    /// Creates a duration of `seconds`.
    public static func seconds(_ seconds: Int64) -> HumanDuration { HumanDuration(milliseconds: seconds * 1000) }

    /// Parses a sequence of `<number><unit>` parts (units `ms`, `s`, `m`, `h`; numbers may have a fraction).
    public init(parsing text: String, field: String) throws(ValidationError) {
        let rule = "'\(text)' is not a duration: write a number with a unit, such as 250ms, 10s, 1m or 1h30m"
        var total = 0.0
        var bytes = Substring(text).utf8[...]
        guard !bytes.isEmpty else { throw ValidationError(field: field, message: rule) }
        while !bytes.isEmpty {
            let numberEnd = bytes.firstIndex { !(($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E) } ?? bytes.endIndex
            guard numberEnd != bytes.startIndex, let number = Double(String(Substring(bytes[..<numberEnd]))) else {
                throw ValidationError(field: field, message: rule)
            }
            bytes = bytes[numberEnd...]
            let unitEnd = bytes.firstIndex { ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E } ?? bytes.endIndex
            let unit = String(Substring(bytes[..<unitEnd]))
            bytes = bytes[unitEnd...]
            let scale: Double
            switch unit {
            case "ms": scale = 1
            case "s": scale = 1000
            case "m": scale = 60_000
            case "h": scale = 3_600_000
            default: throw ValidationError(field: field, message: rule)
            }
            total += number * scale
        }
        guard total <= Double(Self.maximum.milliseconds) else {
            throw ValidationError(field: field, message: "'\(text)' is longer than the longest duration, 8784h")
        }
        self.milliseconds = Int64(total.rounded())
    }

    /// The shortest exact spelling: `1h30m`, `10s`, `250ms`.
    public var description: String {
        if milliseconds == 0 { return "0s" }
        var rest = milliseconds
        var text = ""
        for (unit, size) in [("h", Int64(3_600_000)), ("m", 60_000), ("s", 1000), ("ms", 1)] where rest >= size {
            text += "\(rest / size)\(unit)"
            rest %= size
        }
        return text
    }

    /// The same length as a standard-library `Duration`, for sleeping and clocks.
    public var duration: Duration { .milliseconds(milliseconds) }

    public static func < (lhs: HumanDuration, rhs: HumanDuration) -> Bool { lhs.milliseconds < rhs.milliseconds }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let raw = try container.decode(String.self)
        do {
            try self.init(parsing: raw, field: "")
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.message)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// A domain name as DNS carries it: a sequence of labels of 1 to 63 bytes, at most 255 bytes on the wire.
///
/// Labels are kept as bytes (DNS labels may hold any byte) with ASCII letters lowercased: names compare without
/// regard to case (RFC 4343), and every name the agent answers for is lowercase, so keeping them folded makes
/// comparison and compression plain byte equality.
public struct DNSName: Hashable, Sendable, CustomStringConvertible {
    /// The labels, most specific first (`payment`, `service`, `switchboard`), ASCII-lowercased.
    public private(set) var labels: [[UInt8]]

    /// The longest label.
    public static let maximumLabelLength = 63
    /// The longest name in wire form (length bytes, labels and the final zero).
    public static let maximumWireLength = 255

    /// The root name (`.`).
    public static let root = DNSName(validatedLabels: [])

    init(validatedLabels: [[UInt8]]) {
        labels = validatedLabels
    }

    /// Labels from raw bytes (lowercased here); throws when a label is empty or too long, or the name too long.
    public init(labels: [[UInt8]]) throws(DNSWireError) {
        var folded: [[UInt8]] = []
        folded.reserveCapacity(labels.count)
        var wireLength = 1
        for label in labels {
            guard !label.isEmpty, label.count <= Self.maximumLabelLength else { throw DNSWireError(.badLabel) }
            wireLength += 1 + label.count
            folded.append(label.map(Self.fold))
        }
        guard wireLength <= Self.maximumWireLength else { throw DNSWireError(.nameTooLong) }
        self.labels = folded
    }

    /// Parses dotted text (`payment.service.switchboard.`; the final dot is optional). No escapes: names the agent
    /// makes up never need them.
    public init(_ text: String) throws(DNSWireError) {
        let trimmed = text.hasSuffix(".") ? text.dropLast() : Substring(text)
        if trimmed.isEmpty {
            self = .root
            return
        }
        try self.init(labels: trimmed.split(separator: ".", omittingEmptySubsequences: false).map { Array($0.utf8) })
    }

    /// The length of the name in uncompressed wire form.
    public var wireLength: Int { labels.reduce(1) { $0 + 1 + $1.count } }

    /// Whether this name is `suffix` or lies under it.
    public func isSubdomain(of suffix: DNSName) -> Bool {
        labels.count >= suffix.labels.count && labels.suffix(suffix.labels.count).elementsEqual(suffix.labels)
    }

    /// The labels in front of `suffix` (which this name must lie under), most specific first.
    public func labels(before suffix: DNSName) -> ArraySlice<[UInt8]> {
        labels.dropLast(suffix.labels.count)
    }

    /// This name with `prefix` labels put in front.
    public func prepending(_ prefix: [[UInt8]]) throws(DNSWireError) -> DNSName {
        try DNSName(labels: prefix + labels)
    }

    /// Dotted text with the final dot; bytes that are not printable ASCII, dots and backslashes are escaped as
    /// `\DDD` (the presentation format of RFC 1035), so a log line shows exactly what was asked.
    public var description: String {
        guard !labels.isEmpty else { return "." }
        var text = ""
        for label in labels {
            for byte in label {
                if byte > 0x20, byte < 0x7F, byte != 0x2E, byte != 0x5C {
                    text.unicodeScalars.append(Unicode.Scalar(byte))
                } else {
                    let digits = String(byte)
                    text += "\\" + String(repeating: "0", count: 3 - digits.count) + digits
                }
            }
            text += "."
        }
        return text
    }

    @inline(__always)
    static func fold(_ byte: UInt8) -> UInt8 {
        byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Where an instance can be reached: an IPv4 address, an IPv6 address or a DNS hostname.
///
/// The kind matters downstream (DNS answers an A, an AAAA or a CNAME record for it), so it is decided once here,
/// at registration, rather than guessed by every reader.
public struct HostAddress: Hashable, Sendable, CustomStringConvertible, ValidatedString {
    /// Which of the three address forms this is.
    public enum Kind: String, Sendable, Hashable {
        case ipv4
        case ipv6
        case hostname
    }

    /// The address as registered (hostnames lowercased).
    public let rawValue: String
    /// The address form, decided by parsing.
    public let kind: Kind

    /// Parses `text` as an IPv4 address, an IPv6 address or an RFC 1123 hostname.
    public init(_ text: String, field: String = "address") throws(ValidationError) {
        guard !text.isEmpty else {
            throw ValidationError(field: field, message: "address must not be empty")
        }
        // Printable ASCII only: a NUL would end the C string inet_pton reads and let trailing junk through.
        guard text.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw ValidationError(field: field, message: "address must be printable ASCII without spaces")
        }
        if Self.parses(text, family: AF_INET) {
            self.rawValue = text
            self.kind = .ipv4
            return
        }
        if text.contains(":") {
            guard Self.parses(text, family: AF_INET6) else {
                throw ValidationError(field: field, message: "address '\(text)' is not a valid IPv6 address")
            }
            self.rawValue = text.lowercased()
            self.kind = .ipv6
            return
        }
        try Self.validateHostname(text, field: field)
        self.rawValue = text.lowercased()
        self.kind = .hostname
    }

    public var description: String { rawValue }

    private static func parses(_ text: String, family: Int32) -> Bool {
        var buffer = (UInt64(0), UInt64(0))
        return withUnsafeMutableBytes(of: &buffer) { inet_pton(family, text, $0.baseAddress) == 1 }
    }

    private static func validateHostname(_ text: String, field: String) throws(ValidationError) {
        let rule =
            "address must be an IPv4 address, an IPv6 address or a hostname of dot-separated labels"
            + " (1..63 letters, digits or '-', not starting or ending with '-', 253 characters in all)"
        guard text.utf8.count <= 253 else { throw ValidationError(field: field, message: rule) }
        let labels = text.split(separator: ".", omittingEmptySubsequences: false)
        for label in labels {
            guard !label.isEmpty, label.utf8.count <= 63, label.utf8.first != 0x2D, label.utf8.last != 0x2D else {
                throw ValidationError(field: field, message: rule)
            }
            for byte in label.utf8 {
                let allowed =
                    (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A)
                    || (byte >= 0x30 && byte <= 0x39) || byte == 0x2D
                guard allowed else { throw ValidationError(field: field, message: rule) }
            }
        }
        // A name whose last label is all digits would read as a broken IPv4 address ("10.0.0.256").
        if let last = labels.last, last.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) {
            throw ValidationError(field: field, message: "address '\(text)' is not a valid IPv4 address")
        }
    }

    public init(validating text: String) throws(ValidationError) {
        try self.init(text)
    }
}

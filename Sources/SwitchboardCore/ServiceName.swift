/// The name of a service, valid as a DNS label.
///
/// Names must work unchanged in DNS (`payment.service.switchboard`), URLs and metric labels, so they follow the
/// DNS label rules: 1 to 63 characters of lowercase `a-z`, `0-9` and `-`, neither starting nor ending with `-`.
public struct ServiceName: Hashable, Comparable, Sendable, CustomStringConvertible, ValidatedString {
    /// The longest name a DNS label allows.
    public static let maximumLength = 63

    /// The validated name.
    public let rawValue: String

    /// Validates `rawValue` as a service name, naming `field` in the error when it is not one.
    public init(_ rawValue: String, field: String = "service") throws(ValidationError) {
        guard !rawValue.isEmpty, rawValue.utf8.count <= Self.maximumLength else {
            throw ValidationError(field: field, message: "service name must be 1..63 characters")
        }
        for byte in rawValue.utf8 {
            let allowed = (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39) || byte == 0x2D
            guard allowed else {
                throw ValidationError(
                    field: field,
                    message: "service name may hold only lowercase letters a-z, digits 0-9 and '-' (a DNS label)"
                )
            }
        }
        guard rawValue.utf8.first != 0x2D, rawValue.utf8.last != 0x2D else {
            throw ValidationError(field: field, message: "service name must not start or end with '-'")
        }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }

    public static func < (lhs: ServiceName, rhs: ServiceName) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(validating text: String) throws(ValidationError) {
        try self.init(text)
    }
}

/// The identifier of one instance, unique within its service.
///
/// Ids appear in URL paths and log lines, so they are limited to 1 to 128 characters of ASCII letters, digits,
/// `-`, `_`, `.` and `:` (the colon lets the default id `<service>-<address>-<port>` hold an IPv6 address).
public struct InstanceID: Hashable, Comparable, Sendable, CustomStringConvertible, ValidatedString {
    /// The longest id accepted.
    public static let maximumLength = 128

    /// The validated id.
    public let rawValue: String

    /// Validates `rawValue` as an instance id, naming `field` in the error when it is not one.
    public init(_ rawValue: String, field: String = "id") throws(ValidationError) {
        guard !rawValue.isEmpty, rawValue.utf8.count <= Self.maximumLength else {
            throw ValidationError(field: field, message: "instance id must be 1..128 characters")
        }
        for byte in rawValue.utf8 {
            let allowed =
                (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x2D || byte == 0x5F || byte == 0x2E || byte == 0x3A
            guard allowed else {
                throw ValidationError(
                    field: field,
                    message: "instance id may hold only ASCII letters, digits, '-', '_', '.' and ':'"
                )
            }
        }
        self.rawValue = rawValue
    }

    /// The id an instance gets when its registration names none: `<service>-<address>-<port>`.
    public static func defaultID(
        service: ServiceName, address: HostAddress, port: Int
    ) throws(ValidationError)
        -> InstanceID
    {
        try InstanceID("\(service.rawValue)-\(address.rawValue)-\(port)")
    }

    public var description: String { rawValue }

    public static func < (lhs: InstanceID, rhs: InstanceID) -> Bool { lhs.rawValue < rhs.rawValue }

    public init(validating text: String) throws(ValidationError) {
        try self.init(text)
    }
}

/// A string type whose every value passed validation, so decoding one validates it as creating one does.
///
/// Service names, instance ids and addresses travel as plain JSON strings; conforming gives them the same Codable
/// behaviour: a string that breaks the rule fails to decode with the rule as the message.
public protocol ValidatedString: Codable {
    /// The validated text.
    var rawValue: String { get }
    /// Validates `text`, throwing the rule it breaks.
    init(validating text: String) throws(ValidationError)
}

extension ValidatedString {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let raw = try container.decode(String.self)
        do {
            try self.init(validating: raw)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.message)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(rawValue)
    }
}

/// What a registration says about an instance: where it is, how to describe it and how to check it.
///
/// This is the durable part of an instance (the store keeps exactly this, plus maintenance and indexes); health
/// results are not part of it, because they change far more often than anything should be written to disk.
public struct InstanceDefinition: Hashable, Sendable, Codable {
    public var service: ServiceName
    public var id: InstanceID
    public var address: HostAddress
    /// 1..65535.
    public var port: Int
    /// Distinct tags, sorted, so two registrations with the same set compare equal.
    public var tags: [String]
    /// Free-form labels (version, region, zone, environment, ...).
    public var meta: [String: String]
    /// The share of traffic balancers give this instance relative to others (1..10000).
    public var weight: Int
    public var checks: [CheckDefinition]

    public init(
        service: ServiceName,
        id: InstanceID,
        address: HostAddress,
        port: Int,
        tags: [String] = [],
        meta: [String: String] = [:],
        weight: Int = 1,
        checks: [CheckDefinition] = []
    ) {
        self.service = service
        self.id = id
        self.address = address
        self.port = port
        self.tags = Array(Set(tags)).sorted()
        self.meta = meta
        self.weight = weight
        self.checks = checks
    }

    /// The ids of this instance's checks: `<id>:<type>`, with `:2`, `:3`... for further checks of the same type.
    public var checkIDs: [String] {
        var seen: [CheckKind: Int] = [:]
        return checks.map { check in
            let count = seen[check.type, default: 0] + 1
            seen[check.type] = count
            return count == 1
                ? "\(id.rawValue):\(check.type.rawValue)" : "\(id.rawValue):\(check.type.rawValue):\(count)"
        }
    }
}

/// The limits on what one registration may carry, so one client cannot bloat the catalog or its answers.
public enum RegistrationLimits {
    public static let maximumTags = 64
    public static let maximumTagLength = 128
    public static let maximumMetaEntries = 64
    public static let maximumMetaKeyLength = 128
    public static let maximumMetaValueLength = 512
    public static let maximumChecks = 16
    public static let weights = 1...10_000
    public static let ports = 1...65_535
}

/// The body of `PUT /v1/services/{service}/instances/{id}`, before validation.
public struct RegistrationRequest: Sendable, Hashable, Codable, StrictlyDecodable {
    public static let knownKeys: Set<String> = [
        "service", "id", "address", "port", "tags", "meta", "weight", "checks",
    ]

    public var service: String?
    public var id: String?
    public var address: String?
    public var port: Int?
    public var tags: [String]?
    public var meta: [String: String]?
    public var weight: Int?
    public var checks: [CheckRequest]?

    public init(
        address: String?,
        port: Int?,
        tags: [String]? = nil,
        meta: [String: String]? = nil,
        weight: Int? = nil,
        checks: [CheckRequest]? = nil
    ) {
        self.address = address
        self.port = port
        self.tags = tags
        self.meta = meta
        self.weight = weight
        self.checks = checks
    }

    public init(from decoder: any Decoder) throws {
        try Self.rejectUnknownKeys(in: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        service = try c.decodeIfPresent(String.self, forKey: .service)
        id = try c.decodeIfPresent(String.self, forKey: .id)
        address = try c.decodeIfPresent(String.self, forKey: .address)
        port = try c.decodeIfPresent(Int.self, forKey: .port)
        tags = try c.decodeIfPresent([String].self, forKey: .tags)
        meta = try c.decodeIfPresent([String: String].self, forKey: .meta)
        weight = try c.decodeIfPresent(Int.self, forKey: .weight)
        checks = try c.decodeIfPresent([CheckRequest].self, forKey: .checks)
    }

    private enum CodingKeys: String, CodingKey {
        case service, id, address, port, tags, meta, weight, checks
    }

    /// Checks every rule for an instance registered as `id` of `service` (taken from the URL).
    public func validated(service: ServiceName, id: InstanceID) throws(ValidationError) -> InstanceDefinition {
        if let named = self.service, named != service.rawValue {
            throw ValidationError(field: "service", message: "service '\(named)' does not match the URL's '\(service)'")
        }
        if let named = self.id, named != id.rawValue {
            throw ValidationError(field: "id", message: "id '\(named)' does not match the URL's '\(id)'")
        }
        guard let addressText = address else {
            throw ValidationError(field: "address", message: "address is required")
        }
        let address = try HostAddress(addressText)
        guard let port else { throw ValidationError(field: "port", message: "port is required") }
        guard RegistrationLimits.ports.contains(port) else {
            throw ValidationError(field: "port", message: "port must be 1..65535")
        }
        let tags = try Self.validatedTags(self.tags ?? [])
        let meta = try Self.validatedMeta(self.meta ?? [:])
        let weight = self.weight ?? 1
        guard RegistrationLimits.weights.contains(weight) else {
            throw ValidationError(field: "weight", message: "weight must be 1..10000")
        }
        let requests = checks ?? []
        guard requests.count <= RegistrationLimits.maximumChecks else {
            throw ValidationError(field: "checks", message: "at most \(RegistrationLimits.maximumChecks) checks")
        }
        var checks: [CheckDefinition] = []
        for (index, request) in requests.enumerated() {
            checks.append(try request.validated(field: "checks[\(index)]"))
        }
        return InstanceDefinition(
            service: service,
            id: id,
            address: address,
            port: port,
            tags: tags,
            meta: meta,
            weight: weight,
            checks: checks
        )
    }

    static func validatedTags(_ tags: [String]) throws(ValidationError) -> [String] {
        guard tags.count <= RegistrationLimits.maximumTags else {
            throw ValidationError(field: "tags", message: "at most \(RegistrationLimits.maximumTags) tags")
        }
        for (index, tag) in tags.enumerated() {
            let valid =
                !tag.isEmpty && tag.utf8.count <= RegistrationLimits.maximumTagLength
                && !tag.contains { $0.isWhitespace || $0.isControlCharacter || $0 == "," }
            guard valid else {
                throw ValidationError(
                    field: "tags[\(index)]",
                    message: "tag must be 1..128 characters without spaces, commas or control characters"
                )
            }
        }
        return tags
    }

    static func validatedMeta(_ meta: [String: String]) throws(ValidationError) -> [String: String] {
        guard meta.count <= RegistrationLimits.maximumMetaEntries else {
            throw ValidationError(
                field: "meta", message: "at most \(RegistrationLimits.maximumMetaEntries) meta entries")
        }
        for (key, value) in meta {
            let validKey =
                !key.isEmpty && key.utf8.count <= RegistrationLimits.maximumMetaKeyLength
                && key.utf8.allSatisfy { byte in
                    (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39)
                        || byte == 0x2D || byte == 0x5F || byte == 0x2E
                }
            guard validKey else {
                throw ValidationError(
                    field: "meta",
                    message: "meta key '\(key)' must be 1..128 ASCII letters, digits, '-', '_' or '.'"
                )
            }
            guard value.utf8.count <= RegistrationLimits.maximumMetaValueLength,
                !value.contains(where: \.isControlCharacter)
            else {
                throw ValidationError(
                    field: "meta.\(key)",
                    message: "meta value must be at most 512 characters without control characters"
                )
            }
        }
        return meta
    }
}

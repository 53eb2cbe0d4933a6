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

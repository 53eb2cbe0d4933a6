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

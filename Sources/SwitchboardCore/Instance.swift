import struct Foundation.Date

/// One registered instance as the catalog holds it and the API returns it: its definition plus live health.
///
/// The JSON form is flat (the definition's fields at the top level, then `status`, `checks`, `maintenance` and the
/// indexes) because that is the contract every reader of the API (client library, CLI, gateway, DNS) relies on.
public struct Instance: Hashable, Sendable, Codable {
    /// What was registered.
    public var definition: InstanceDefinition
    /// One live state per entry of `definition.checks`, in the same order.
    public var checks: [CheckState]
    /// Set while an operator drains the instance.
    public var maintenance: Maintenance?
    /// The catalog index at which the instance was first registered.
    public var createIndex: UInt64
    /// The catalog index of its latest change.
    public var modifyIndex: UInt64

    /// Creates an instance whose checks start in their initial status.
    public init(
        definition: InstanceDefinition, createIndex: UInt64, modifyIndex: UInt64, maintenance: Maintenance? = nil
    ) {
        self.definition = definition
        self.checks = zip(definition.checkIDs, definition.checks).map { id, check in
            CheckState(id: id, definition: check, status: check.initialStatus, output: "", history: [])
        }
        self.maintenance = maintenance
        self.createIndex = createIndex
        self.modifyIndex = modifyIndex
    }

    public var service: ServiceName { definition.service }
    public var id: InstanceID { definition.id }

    /// Maintenance wins; otherwise the worst check; passing when there are no checks.
    public var status: HealthStatus {
        if maintenance != nil { return .maintenance }
        return checks.map(\.status).max() ?? .passing
    }

    /// The same definition with checks whose id and definition did not change keeping their live state, so an
    /// idempotent re-registration never resets health and never wakes watchers.
    public func reregistered(as definition: InstanceDefinition, index: UInt64) -> Instance {
        var next = Instance(
            definition: definition, createIndex: createIndex, modifyIndex: index, maintenance: maintenance)
        let previous = Dictionary(checks.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        for position in next.checks.indices {
            if let old = previous[next.checks[position].id], old.definition == next.checks[position].definition {
                next.checks[position] = old
            }
        }
        return next
    }

    private enum Key: String, CodingKey {
        case service, id, address, port, tags, meta, weight, status, checks, maintenance, createIndex, modifyIndex
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        let checks = try c.decodeIfPresent([CheckState].self, forKey: .checks) ?? []
        self.definition = InstanceDefinition(
            service: try c.decode(ServiceName.self, forKey: .service),
            id: try c.decode(InstanceID.self, forKey: .id),
            address: try c.decode(HostAddress.self, forKey: .address),
            port: try c.decode(Int.self, forKey: .port),
            tags: try c.decodeIfPresent([String].self, forKey: .tags) ?? [],
            meta: try c.decodeIfPresent([String: String].self, forKey: .meta) ?? [:],
            weight: try c.decodeIfPresent(Int.self, forKey: .weight) ?? 1,
            checks: checks.map(\.definition)
        )
        self.checks = checks
        self.maintenance = try c.decodeIfPresent(Maintenance.self, forKey: .maintenance)
        self.createIndex = try c.decode(UInt64.self, forKey: .createIndex)
        self.modifyIndex = try c.decode(UInt64.self, forKey: .modifyIndex)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(definition.service, forKey: .service)
        try c.encode(definition.id, forKey: .id)
        try c.encode(definition.address, forKey: .address)
        try c.encode(definition.port, forKey: .port)
        try c.encode(definition.tags, forKey: .tags)
        try c.encode(definition.meta, forKey: .meta)
        try c.encode(definition.weight, forKey: .weight)
        try c.encode(status, forKey: .status)
        try c.encode(checks, forKey: .checks)
        try c.encodeIfPresent(maintenance, forKey: .maintenance)
        try c.encode(createIndex, forKey: .createIndex)
        try c.encode(modifyIndex, forKey: .modifyIndex)
    }
}

/// An operator's drain of an instance: why, and since when.
public struct Maintenance: Hashable, Sendable, Codable {
    public var reason: String
    public var since: Date

    public init(reason: String, since: Date) {
        self.reason = reason
        self.since = since
    }
}

/// The live state of one check of an instance.
public struct CheckState: Hashable, Sendable, Codable {
    /// `<instance-id>:<type>` (see ``InstanceDefinition/checkIDs``).
    public var id: String
    public var definition: CheckDefinition
    public var status: HealthStatus
    /// The latest probe's output (status line, error), capped by the health checker.
    public var output: String
    /// The latest status transitions, newest last, so flapping is visible.
    public var history: [CheckTransition]

    /// How many transitions ``history`` keeps.
    public static let historyLimit = 32
    /// The most bytes of output kept per check.
    public static let outputLimit = 4096

    public init(
        id: String, definition: CheckDefinition, status: HealthStatus, output: String, history: [CheckTransition]
    ) {
        self.id = id
        self.definition = definition
        self.status = status
        self.output = output
        self.history = history
    }

    /// Moves the check to `status`, remembering the transition (the latest ``historyLimit`` of them).
    public mutating func record(_ status: HealthStatus, output: String, at: Date) {
        let output = Self.capped(output)
        if status != self.status {
            history.append(CheckTransition(at: at, from: self.status, to: status, output: output))
            if history.count > Self.historyLimit { history.removeFirst(history.count - Self.historyLimit) }
        }
        self.status = status
        self.output = output
    }

    /// `output` cut to at most ``outputLimit`` bytes, never inside a UTF-8 sequence.
    public static func capped(_ output: String) -> String {
        guard output.utf8.count > outputLimit else { return output }
        let bytes = Array(output.utf8.prefix(outputLimit + 1))
        var end = outputLimit
        // Step back over continuation bytes (10xxxxxx) to the start of the sequence that would be cut.
        while end > 0, bytes[end] & 0xC0 == 0x80 { end -= 1 }
        return String(decoding: bytes[..<end], as: UTF8.self)
    }

    private enum Key: String, CodingKey {
        case id, status, output, history
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: Key.self)
        self.id = try c.decode(String.self, forKey: .id)
        self.status = try c.decode(HealthStatus.self, forKey: .status)
        self.output = try c.decodeIfPresent(String.self, forKey: .output) ?? ""
        self.history = try c.decodeIfPresent([CheckTransition].self, forKey: .history) ?? []
        self.definition = try CheckDefinition(from: decoder)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(id, forKey: .id)
        try definition.encode(to: encoder)
        try c.encode(status, forKey: .status)
        try c.encode(output, forKey: .output)
        try c.encode(history, forKey: .history)
    }
}

/// One change of a check's status.
public struct CheckTransition: Hashable, Sendable, Codable {
    public var at: Date
    public var from: HealthStatus
    public var to: HealthStatus
    public var output: String

    public init(at: Date, from: HealthStatus, to: HealthStatus, output: String) {
        self.at = at
        self.from = from
        self.to = to
        self.output = output
    }
}

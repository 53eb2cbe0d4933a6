/// The optional body of `PUT .../heartbeat`.
public struct HeartbeatRequest: Codable, Sendable, Hashable, StrictlyDecodable {
    public static let knownKeys: Set<String> = ["status", "output", "check"]

    private enum CodingKeys: String, CodingKey {
        case status, output, check
    }

    /// `passing` (the default), `warning` or `critical`.
    public var status: String?
    /// What the instance says of itself, kept as the check's output (at most 4 KiB).
    public var output: String?
    /// The id of the one TTL check this heartbeat is for (`<id>:ttl:2`, say); every TTL check of the instance when
    /// absent.
    public var check: String?

    /// A heartbeat reporting `status` (passing when `nil`) with `output`, for the TTL check `check` (all when `nil`).
    public init(status: HealthStatus? = nil, output: String? = nil, check: String? = nil) {
        self.status = status?.rawValue
        self.output = output
        self.check = check
    }

    public init(from decoder: any Decoder) throws {
        try Self.rejectUnknownKeys(in: decoder)
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        status = try container.decodeIfPresent(String.self, forKey: AnyCodingKey(stringValue: "status"))
        output = try container.decodeIfPresent(String.self, forKey: AnyCodingKey(stringValue: "output"))
        check = try container.decodeIfPresent(String.self, forKey: AnyCodingKey(stringValue: "check"))
    }

    /// The check named, when one is: at most 256 bytes, not empty.
    package func validatedCheck() throws(ValidationError) -> String? {
        guard let check else { return nil }
        guard !check.isEmpty, check.utf8.count <= 256 else {
            throw ValidationError(field: "check", message: "check must be a check id of 1 to 256 bytes")
        }
        return check
    }

    package func validated() throws(ValidationError) -> (HealthStatus, String) {
        var status = HealthStatus.passing
        if let text = self.status {
            guard let parsed = HealthStatus(rawValue: text), parsed != .maintenance else {
                throw ValidationError(field: "status", message: "status must be one of passing, warning, critical")
            }
            status = parsed
        }
        let output = output ?? ""
        guard output.utf8.count <= CheckState.outputLimit else {
            throw ValidationError(field: "output", message: "output must be at most \(CheckState.outputLimit) bytes")
        }
        return (status, output)
    }
}

/// The body of `PUT .../maintenance`.
public struct MaintenanceRequest: Codable, Sendable, Hashable, StrictlyDecodable {
    public static let knownKeys: Set<String> = ["enabled", "reason"]

    private enum CodingKeys: String, CodingKey {
        case enabled, reason
    }

    public var enabled: Bool?
    public var reason: String?

    /// Turns maintenance on (drain) or off, with a reason for other operators.
    public init(enabled: Bool, reason: String? = nil) {
        self.enabled = enabled
        self.reason = reason
    }

    public init(from decoder: any Decoder) throws {
        try Self.rejectUnknownKeys(in: decoder)
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        enabled = try container.decodeIfPresent(Bool.self, forKey: AnyCodingKey(stringValue: "enabled"))
        reason = try container.decodeIfPresent(String.self, forKey: AnyCodingKey(stringValue: "reason"))
    }

    package func validated() throws(ValidationError) -> (enabled: Bool, reason: String) {
        guard let enabled else {
            throw ValidationError(field: "enabled", message: "enabled is required: true or false")
        }
        let reason = reason ?? ""
        guard reason.utf8.count <= 512,
            !reason.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            throw ValidationError(
                field: "reason", message: "reason must be at most 512 characters without control characters")
        }
        return (enabled, reason)
    }
}

/// The body of `POST .../instances/{id}/observations`: what a client saw of the instance.
public struct ObservationRequest: Codable, Sendable, Hashable, StrictlyDecodable {
    public static let knownKeys: Set<String> = ["kind", "reporter", "reason", "duration"]

    private enum CodingKeys: String, CodingKey {
        case kind, reporter, reason, duration
    }

    public var kind: String?
    public var reporter: String?
    public var reason: String?
    public var duration: String?

    /// The request that reports `observation`.
    public init(_ observation: Observation) {
        self.kind = observation.kind.rawValue
        self.reporter = observation.reporter
        self.reason = observation.reason
        self.duration = observation.duration?.description
    }

    public init(from decoder: any Decoder) throws {
        try Self.rejectUnknownKeys(in: decoder)
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        kind = try container.decodeIfPresent(String.self, forKey: AnyCodingKey(stringValue: "kind"))
        reporter = try container.decodeIfPresent(String.self, forKey: AnyCodingKey(stringValue: "reporter"))
        reason = try container.decodeIfPresent(String.self, forKey: AnyCodingKey(stringValue: "reason"))
        duration = try container.decodeIfPresent(String.self, forKey: AnyCodingKey(stringValue: "duration"))
    }

    package func validated() throws(ValidationError) -> Observation {
        let kinds = Observation.Kind.allCases.map(\.rawValue).joined(separator: ", ")
        guard let text = kind else {
            throw ValidationError(field: "kind", message: "kind is required: one of \(kinds)")
        }
        guard let kind = Observation.Kind(rawValue: text) else {
            throw ValidationError(field: "kind", message: "kind must be one of \(kinds)")
        }
        let observation = Observation(
            kind: kind, reporter: reporter ?? "", reason: reason ?? "",
            duration: try duration.map { text throws(ValidationError) in
                try HumanDuration(parsing: text, field: "duration")
            })
        try observation.validate()
        return observation
    }
}

/// The answer of `PUT .../heartbeat`: the instance's status as the agent holds it after the heartbeat.
public struct HeartbeatAnswer: Codable, Sendable, Hashable {
    public var service: ServiceName
    public var id: InstanceID
    public var status: HealthStatus

    public init(service: ServiceName, id: InstanceID, status: HealthStatus) {
        self.service = service
        self.id = id
        self.status = status
    }
}

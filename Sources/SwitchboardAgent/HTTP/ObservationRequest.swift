import SwitchboardCore

/// The body of `POST .../instances/{id}/observations`: what a client saw of the instance.
public struct ObservationRequest: Decodable, Sendable, StrictlyDecodable {
    public static let knownKeys: Set<String> = ["kind", "reporter", "reason", "duration"]

    public var kind: String?
    public var reporter: String?
    public var reason: String?
    public var duration: String?

    public init(from decoder: any Decoder) throws {
        try Self.rejectUnknownKeys(in: decoder)
        let container = try decoder.container(keyedBy: AnyCodingKey.self)
        kind = try container.decodeIfPresent(String.self, forKey: AnyCodingKey(stringValue: "kind"))
        reporter = try container.decodeIfPresent(String.self, forKey: AnyCodingKey(stringValue: "reporter"))
        reason = try container.decodeIfPresent(String.self, forKey: AnyCodingKey(stringValue: "reason"))
        duration = try container.decodeIfPresent(String.self, forKey: AnyCodingKey(stringValue: "duration"))
    }

    func validated() throws(ValidationError) -> Observation {
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

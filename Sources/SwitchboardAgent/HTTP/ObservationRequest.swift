import SwitchboardCore
import Synchronization

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

/// At most one observation per instance per interval: when many callers see the same failure at once (a zone going
/// down), each reports it, and without a bound their reports would push real changes out of the event ring that
/// watch streams resume from.
final class ObservationLimiter: Sendable {
    let interval: Duration
    private let lastAccepted = Mutex<[InstanceKey: ContinuousClock.Instant]>([:])

    init(interval: Duration = .seconds(1)) {
        self.interval = interval
    }

    /// Takes the instance's slot and returns nil, or returns how long until the next one opens.
    func admit(_ key: InstanceKey, at now: ContinuousClock.Instant = .now) -> Duration? {
        lastAccepted.withLock { last in
            if let previous = last[key], now - previous < interval { return interval - (now - previous) }
            if last.count >= 10_000 {
                // Entries past their interval block nothing: drop them so the table stays bounded.
                last = last.filter { now - $0.value < interval }
            }
            last[key] = now
            return nil
        }
    }
}

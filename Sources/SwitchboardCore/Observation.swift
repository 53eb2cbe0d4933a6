/// Something a client saw of an instance and told the agent: recorded in the event log, with no effect on health.
///
/// Clients see failures the agent's checks cannot: a process that answers its health check but fails real calls,
/// or a network path that only one caller uses. When a client's outlier detection ejects an instance from its own
/// picks, it reports an observation so that operators find it in `GET /v1/events` and in watch streams next to
/// the health changes. It deliberately changes nothing: one caller's view must not take an instance away from
/// every other caller (Envoy keeps its outlier ejections local for the same reason).
public struct Observation: Hashable, Sendable, Codable {
    /// What was seen.
    public enum Kind: String, Hashable, Sendable, Codable, CaseIterable {
        /// The reporter stopped sending calls to the instance for a while (passive outlier detection).
        case ejected
    }

    public var kind: Kind
    /// Who saw it: a name for the reporting process, such as `cart/4711`.
    public var reporter: String
    /// Why, in words: `5 consecutive failures`.
    public var reason: String
    /// How long the reporter keeps the instance out, when that applies.
    public var duration: HumanDuration?

    /// The longest reporter name accepted, in bytes.
    public static let reporterLimit = 128
    /// The longest reason accepted, in bytes.
    public static let reasonLimit = 512

    public init(kind: Kind, reporter: String, reason: String, duration: HumanDuration? = nil) {
        self.kind = kind
        self.reporter = reporter
        self.reason = reason
        self.duration = duration
    }

    /// Checks the rules the API enforces: a reporter of 1 to 128 bytes and a reason of at most 512 bytes,
    /// neither with control characters (they end up in logs and terminals).
    public func validate() throws(ValidationError) {
        let hasControl: (String) -> Bool = {
            $0.unicodeScalars.contains { $0.properties.generalCategory == .control }
        }
        guard !reporter.isEmpty, reporter.utf8.count <= Self.reporterLimit, !hasControl(reporter) else {
            throw ValidationError(
                field: "reporter",
                message: "reporter is required: 1 to \(Self.reporterLimit) bytes without control characters")
        }
        guard reason.utf8.count <= Self.reasonLimit, !hasControl(reason) else {
            throw ValidationError(
                field: "reason", message: "reason must be at most \(Self.reasonLimit) bytes without control characters")
        }
        if let duration, duration > HumanDuration.maximum || duration.milliseconds < 0 {
            throw ValidationError(
                field: "duration", message: "duration must be between 0s and \(HumanDuration.maximum)")
        }
    }
}

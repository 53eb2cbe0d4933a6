/// A check's thresholds applied to its stream of results: the status it stands at, and how far it is from changing.
///
/// One slow answer among good ones should not pull an instance out of traffic, and one lucky answer should not put
/// a broken instance back in. So a check turns passing only after `successesBeforePassing` passing results in a
/// row, and turns warning or critical only after `failuresBeforeCritical` failing results in a row; anything in
/// between leaves the status where it was. A plain value, so the damping is tested without clocks or sockets.
///
/// ```swift
/// var progress = CheckProgress(definition: check, status: .passing)
/// progress.record(.critical)   // still .passing when failuresBeforeCritical is 3
/// ```
public struct CheckProgress: Sendable, Hashable {
    public let definition: CheckDefinition
    /// The status the thresholds have settled on.
    public private(set) var status: HealthStatus
    /// Passing results in a row.
    public private(set) var consecutiveSuccesses = 0
    /// Warning or critical results in a row.
    public private(set) var consecutiveFailures = 0

    /// A check that stands at `status` (its initial status, or the status it had before a restart).
    public init(definition: CheckDefinition, status: HealthStatus) {
        self.definition = definition
        self.status = status
    }

    /// Counts `result` (passing, warning or critical) and returns the status it leaves.
    ///
    /// A failing result that reaches the threshold sets the status to that result, so a check that alternates
    /// between 429s and errors reports the latest of them.
    @discardableResult
    public mutating func record(_ result: HealthStatus) -> HealthStatus {
        if result == .passing {
            consecutiveSuccesses += 1
            consecutiveFailures = 0
            if consecutiveSuccesses >= definition.successesBeforePassing { status = .passing }
        } else {
            consecutiveFailures += 1
            consecutiveSuccesses = 0
            if consecutiveFailures >= definition.failuresBeforeCritical { status = result }
        }
        return status
    }
}

import CoreMetrics
import SwitchboardCore

/// The metrics of one call site, per service and per instance, through swift-metrics (so any backend the process
/// bootstraps, Prometheus or StatsD, receives them).
///
/// | metric | dimensions | what |
/// |---|---|---|
/// | `switchboard_client_calls_total` | service, outcome | calls, by how they ended: `success`, `server_error`, `failed`, `rejected`, `no_instance`, `cancelled` |
/// | `switchboard_client_call_duration_seconds` | service | a call's time, retries included (a timer) |
/// | `switchboard_client_attempts_total` | service, instance, outcome | attempts, by instance: `success`, `server_error`, `not_sent`, `failed`, `cancelled` |
/// | `switchboard_client_attempt_duration_seconds` | service, instance | one attempt's time (a timer) |
/// | `switchboard_client_retries_total` | service | attempts after the first |
/// | `switchboard_client_ejections_total` | service, instance | outlier ejections |
/// | `switchboard_client_circuit_transitions_total` | service, instance, state | circuit breakers opening (`open`) and closing (`closed`) |
///
/// Handles are made once per service and once per instance, so a call costs a few atomic increments, not a factory
/// lookup. A call site forgets an instance's handles when it leaves, without destroying them (another call site may
/// hold the same series): the backend keeps the series.
struct CallMetrics: Sendable {
    enum CallOutcome: String, CaseIterable {
        case success
        case serverError = "server_error"
        case failed
        case rejected
        case noInstance = "no_instance"
        case cancelled
    }

    enum AttemptOutcome: String, CaseIterable {
        case success
        case serverError = "server_error"
        case notSent = "not_sent"
        case failed
        case cancelled
    }

    /// One instance's handles.
    struct InstanceHandles: Sendable {
        let attempts: [String: Counter]
        let attemptDuration: Timer
        let ejections: Counter
        let service: String
        let instance: String
        let factory: any MetricsFactory

        func recordAttempt(_ outcome: AttemptOutcome, duration: Duration) {
            attempts[outcome.rawValue]?.increment()
            attemptDuration.recordNanoseconds(duration.nanoseconds)
        }

        /// Circuit transitions are rare: their counter is made when needed.
        func recordCircuitTransition(to state: String) {
            Counter(
                label: "switchboard_client_circuit_transitions_total",
                dimensions: [("service", service), ("instance", instance), ("state", state)], factory: factory
            ).increment()
        }
    }

    let service: String
    let factory: any MetricsFactory
    private let calls: [String: Counter]
    private let callDuration: Timer
    let retries: Counter

    init(service: ServiceName, factory: any MetricsFactory) {
        self.service = service.rawValue
        self.factory = factory
        calls = Dictionary(
            uniqueKeysWithValues: CallOutcome.allCases.map {
                (
                    $0.rawValue,
                    Counter(
                        label: "switchboard_client_calls_total",
                        dimensions: [("service", service.rawValue), ("outcome", $0.rawValue)], factory: factory)
                )
            })
        callDuration = Timer(
            label: "switchboard_client_call_duration_seconds", dimensions: [("service", service.rawValue)],
            factory: factory)
        retries = Counter(
            label: "switchboard_client_retries_total", dimensions: [("service", service.rawValue)], factory: factory)
    }

    func recordCall(_ outcome: CallOutcome, duration: Duration) {
        calls[outcome.rawValue]?.increment()
        callDuration.recordNanoseconds(duration.nanoseconds)
    }

    /// New handles for `instance` (the caller caches them).
    func handles(for instance: InstanceID) -> InstanceHandles {
        let dimensions = [("service", service), ("instance", instance.rawValue)]
        return InstanceHandles(
            attempts: Dictionary(
                uniqueKeysWithValues: AttemptOutcome.allCases.map {
                    (
                        $0.rawValue,
                        Counter(
                            label: "switchboard_client_attempts_total",
                            dimensions: dimensions + [("outcome", $0.rawValue)], factory: factory)
                    )
                }),
            attemptDuration: Timer(
                label: "switchboard_client_attempt_duration_seconds", dimensions: dimensions, factory: factory),
            ejections: Counter(label: "switchboard_client_ejections_total", dimensions: dimensions, factory: factory),
            service: service, instance: instance.rawValue, factory: factory)
    }
}

import Prometheus
import SwitchboardCatalog
import SwitchboardCore

/// The agent's metrics, kept in its own Prometheus registry and served at `GET /metrics`.
///
/// The agent owns the registry instead of bootstrapping the global metrics system: a library must not set
/// process-wide state, and two agents in one test process must not share counters.
public final class AgentMetrics: Sendable {
    /// The registry `GET /metrics` renders.
    public let registry: PrometheusCollectorRegistry
    let heartbeats: Counter
    let selfPreservation: Gauge
    let probeLateness: DurationHistogram
    private let probeCounters: [CheckKind: [HealthStatus: Counter]]
    private let transitionCounters: [HealthStatus: Counter]
    private let catalogIndex: Gauge
    private let instanceGauges: [HealthStatus: Gauge]
    private let checkGauges: [CheckKind: Gauge]
    private let watchersWaiting: Gauge
    private let watchFrameBytes: Gauge
    let watchResynchronisations: Counter
    /// Registrations taken (a client that registers again and again shows here).
    let registrations: Counter
    /// Writes refused by the per-caller rate limit, and held requests refused by their ceiling.
    let writesRateLimited: Counter
    let heldRequestsRefused: Counter
    private let heldRequests: Gauge
    private let heldRequestsLimit: Gauge
    private let writeRateLimit: Gauge
    /// Requests refused for their ACL token (401 and 403).
    let aclRefusals: Counter
    /// Connections closed as they arrived because the agent held its maximum.
    let connectionsRefused: Counter
    private let connections: Gauge
    private let connectionsLimit: Gauge

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        heartbeats = registry.makeCounter(
            descriptor: Self.metric("heartbeats", unit: "total", help: "Heartbeats received for TTL checks."))
        registrations = registry.makeCounter(
            descriptor: Self.metric(
                "registrations", unit: "total", help: "Registrations taken (PUT of an instance), changed or not."))
        selfPreservation = registry.makeGauge(
            descriptor: Self.metric(
                "self_preservation_active", unit: "",
                help: "1 while TTL expiry is paused because too many instances missed heartbeats at once."))
        probeLateness = registry.makeDurationHistogram(
            descriptor: Self.metric(
                "probe_lateness", unit: "seconds", help: "How late HTTP and TCP probes start against their schedule."),
            buckets: [
                .microseconds(100), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1),
            ])
        var probes: [CheckKind: [HealthStatus: Counter]] = [:]
        for kind in [CheckKind.http, .tcp] {
            for status in [HealthStatus.passing, .warning, .critical] {
                probes[kind, default: [:]][status] = registry.makeCounter(
                    descriptor: Self.metric("probes", unit: "total", help: "HTTP and TCP probes run, by result."),
                    labels: [("type", kind.rawValue), ("result", status.rawValue)])
            }
        }
        probeCounters = probes
        var transitions: [HealthStatus: Counter] = [:]
        var instances: [HealthStatus: Gauge] = [:]
        for status in HealthStatus.allCases {
            transitions[status] = registry.makeCounter(
                descriptor: Self.metric(
                    "check_transitions", unit: "total", help: "Check status changes written to the catalog."),
                labels: [("to", status.rawValue)])
            instances[status] = registry.makeGauge(
                descriptor: Self.metric("instances", unit: "", help: "Registered instances by status."),
                labels: [("status", status.rawValue)])
        }
        transitionCounters = transitions
        instanceGauges = instances
        catalogIndex = registry.makeGauge(
            descriptor: Self.metric("catalog_index", unit: "", help: "The catalog's change index."))
        var checks: [CheckKind: Gauge] = [:]
        for kind in CheckKind.allCases {
            checks[kind] = registry.makeGauge(
                descriptor: Self.metric("checks", unit: "", help: "Health checks watched."),
                labels: [("type", kind.rawValue)])
        }
        checkGauges = checks
        watchersWaiting = registry.makeGauge(
            descriptor: Self.metric(
                "watchers_waiting", unit: "", help: "Blocking queries and event streams waiting for a change."))
        watchFrameBytes = registry.makeGauge(
            descriptor: Self.metric(
                "watch_frames", unit: "bytes", help: "Bytes of recent changes held for event streams to catch up on."))
        writesRateLimited = registry.makeCounter(
            descriptor: Self.metric(
                "writes_rate_limited", unit: "total", help: "Writes refused (429) by the per-caller write rate limit."))
        heldRequestsRefused = registry.makeCounter(
            descriptor: Self.metric(
                "held_requests_refused", unit: "total",
                help: "Blocking queries and streams refused (429) because the agent held its maximum."))
        heldRequests = registry.makeGauge(
            descriptor: Self.metric("held_requests", unit: "", help: "Blocking queries and streams held now."))
        heldRequestsLimit = registry.makeGauge(
            descriptor: Self.metric(
                "held_requests_limit", unit: "", help: "The most blocking queries and streams held at once."))
        writeRateLimit = registry.makeGauge(
            descriptor: Self.metric(
                "write_rate_limit", unit: "per_second", help: "Writes per second allowed to each caller (0: none)."))
        connectionsRefused = registry.makeCounter(
            descriptor: Self.metric(
                "connections_refused", unit: "total",
                help: "Connections closed as they arrived because the agent held its maximum."))
        connections = registry.makeGauge(
            descriptor: Self.metric("connections", unit: "", help: "Connections open now (every listener)."))
        connectionsLimit = registry.makeGauge(
            descriptor: Self.metric("connections_limit", unit: "", help: "The most connections open at once."))
        aclRefusals = registry.makeCounter(
            descriptor: Self.metric(
                "acl_refusals", unit: "total", help: "Requests refused for their ACL token (401 or 403)."))
        watchResynchronisations = registry.makeCounter(
            descriptor: Self.metric(
                "watch_resynchronisations", unit: "total",
                help: "Event streams that fell behind the changes held and were sent a fresh snapshot."))
    }

    private static func metric(_ name: String, unit: String, help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "switchboard", metricName: name, unitName: unit, helpText: help)
    }

    func probes(_ kind: CheckKind, _ result: HealthStatus) -> Counter {
        probeCounters[kind]?[result] ?? probeCounters[.http]![.critical]!
    }

    func transitions(_ status: HealthStatus) -> Counter {
        transitionCounters[status]!
    }

    /// The Prometheus text exposition, with the catalog's gauges read now.
    func exposition(
        catalog: CatalogSummary, health: HealthReport, watches: WatchReport, limits: RequestLimits? = nil,
        connections connectionLimiter: ConnectionLimiter? = nil
    ) -> [UInt8] {
        if let connectionLimiter {
            connections.set(Double(connectionLimiter.openConnections))
            connectionsLimit.set(Double(connectionLimiter.maximum))
        }
        if let limits {
            heldRequests.set(Double(limits.heldRequests))
            heldRequestsLimit.set(Double(limits.configuration.maximumHeldRequests))
            writeRateLimit.set(limits.configuration.writesPerSecond)
        }
        watchersWaiting.set(Double(watches.waiting))
        watchFrameBytes.set(Double(watches.frameBytes))
        catalogIndex.set(Double(catalog.index))
        instanceGauges[.passing]?.set(Double(catalog.counts.passing))
        instanceGauges[.warning]?.set(Double(catalog.counts.warning))
        instanceGauges[.critical]?.set(Double(catalog.counts.critical))
        instanceGauges[.maintenance]?.set(Double(catalog.counts.maintenance))
        checkGauges[.ttl]?.set(Double(health.checks.ttl))
        checkGauges[.http]?.set(Double(health.checks.http))
        checkGauges[.tcp]?.set(Double(health.checks.tcp))
        return registry.emitToBuffer()
    }
}

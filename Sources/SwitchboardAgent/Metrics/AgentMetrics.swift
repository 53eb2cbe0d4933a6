import ProcessSupport
import Prometheus
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardDNS
import Synchronization

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
    /// The HTTP API's requests by route, method and status, and their durations.
    let httpRequests: HTTPRequestSeries
    /// Event streams (`text/event-stream`) open now.
    let eventStreamsOpen: Gauge
    /// DNS answers, counted by the DNS server (see `DNSQueryStatistics`) and turned into counters when scraped.
    public let dnsQueries = DNSQueryStatistics()
    private let dnsCounters: ScrapedCounters<DNSCountKey>
    /// Instances by service and status, read from the catalog when scraped.
    private let serviceGauges: ServiceGauges

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
        httpRequests = HTTPRequestSeries(registry: registry)
        eventStreamsOpen = registry.makeGauge(
            descriptor: Self.metric("event_streams_open", unit: "", help: "Event streams (text/event-stream) open now.")
        )
        dnsCounters = ScrapedCounters(registry: registry) { key in
            (
                Self.metric(
                    "dns_queries", unit: "total", help: "DNS queries answered, by question type and response code."),
                [("type", key.type), ("rcode", key.code)]
            )
        }
        serviceGauges = ServiceGauges(registry: registry)
        watchResynchronisations = registry.makeCounter(
            descriptor: Self.metric(
                "watch_resynchronisations", unit: "total",
                help: "Event streams that fell behind the changes held and were sent a fresh snapshot."))
    }

    static func metric(_ name: String, unit: String, help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "switchboard", metricName: name, unitName: unit, helpText: help)
    }

    func probes(_ kind: CheckKind, _ result: HealthStatus) -> Counter {
        probeCounters[kind]?[result] ?? probeCounters[.http]![.critical]!
    }

    func transitions(_ status: HealthStatus) -> Counter {
        transitionCounters[status]!
    }

    /// Times the catalog's commits to its store, labelled `store` (`sqlite`, `etcd`, `memory`): their duration and
    /// how many changes each held, and the commits the store refused or failed.
    public func observeCommits(of catalog: Catalog, store: String) {
        let duration = registry.makeDurationHistogram(
            descriptor: Self.metric(
                "store_commit_duration", unit: "seconds", help: "How long the store took to commit a batch of changes."),
            labels: [("store", store)],
            buckets: [
                .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5),
                .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
                .milliseconds(500), .seconds(1), .seconds(2.5),
            ])
        let size = registry.makeValueHistogram(
            descriptor: Self.metric(
                "store_commit_changes", unit: "", help: "How many changes each commit to the store held (the batch)."),
            labels: [("store", store)], buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
        let failures = registry.makeCounter(
            descriptor: Self.metric(
                "store_commit_failures", unit: "total",
                help: "Commits the store refused (a conflict, too large) or could not make (unreachable, failed)."),
            labels: [("store", store)])
        catalog.addCommitObserver { commit in
            guard commit.succeeded else {
                failures.increment()
                return
            }
            duration.record(commit.duration)
            size.record(Double(commit.changes))
        }
    }

    /// What `/metrics` reads when scraped, besides the series counted as things happen.
    struct Scrape {
        var catalog: Catalog
        var health: HealthReport
        var watches: WatchReport
        var limits: RequestLimits?
        var connections: ConnectionLimiter?
        /// Cluster mode: how long ago the view was confirmed current (nil: never since start), and how long ago the
        /// agent started (a view never confirmed is at least that old).
        var clusterViewAge: (age: Duration?, uptime: Duration)?
    }

    /// The Prometheus text exposition, with the scrape-time figures read now, the process's own at the end.
    func exposition(_ scrape: Scrape) async -> [UInt8] {
        if let connectionLimiter = scrape.connections {
            connections.set(Double(connectionLimiter.openConnections))
            connectionsLimit.set(Double(connectionLimiter.maximum))
        }
        if let limits = scrape.limits {
            heldRequests.set(Double(limits.heldRequests))
            heldRequestsLimit.set(Double(limits.configuration.maximumHeldRequests))
            writeRateLimit.set(limits.configuration.writesPerSecond)
        }
        let catalog = scrape.catalog.summary()
        watchersWaiting.set(Double(scrape.watches.waiting))
        watchFrameBytes.set(Double(scrape.watches.frameBytes))
        catalogIndex.set(Double(catalog.index))
        instanceGauges[.passing]?.set(Double(catalog.counts.passing))
        instanceGauges[.warning]?.set(Double(catalog.counts.warning))
        instanceGauges[.critical]?.set(Double(catalog.counts.critical))
        instanceGauges[.maintenance]?.set(Double(catalog.counts.maintenance))
        checkGauges[.ttl]?.set(Double(scrape.health.checks.ttl))
        checkGauges[.http]?.set(Double(scrape.health.checks.http))
        checkGauges[.tcp]?.set(Double(scrape.health.checks.tcp))
        serviceGauges.update(scrape.catalog.services().services)
        if let view = scrape.clusterViewAge {
            registry.makeGauge(
                descriptor: Self.metric(
                    "cluster_view_age", unit: "seconds",
                    help:
                        "Cluster mode: how long ago this agent last knew its view held every change etcd committed.")
            )
            .set((view.age ?? view.uptime).seconds)
        }
        dnsCounters.update(
            await dnsQueries.totals().nonZero.map { (DNSCountKey(type: $0.type, code: $0.code), $0.count) })
        var body = registry.emitToBuffer()
        ProcessFigures.current().appendExposition(to: &body)
        return body
    }
}

/// A DNS counter's labels.
struct DNSCountKey: Hashable, Sendable {
    var type: String
    var code: String
}

/// Counters whose totals are kept elsewhere (DNS's, per event loop) and brought into the registry when scraped: each
/// scrape adds what the total grew by since the last.
final class ScrapedCounters<Key: Hashable & Sendable>: Sendable {
    private struct Entry {
        var counter: Counter
        var reported: UInt64
    }

    private let registry: PrometheusCollectorRegistry
    private let describe: @Sendable (Key) -> (MetricNameDescriptor, [(String, String)])
    private let entries = Mutex<[Key: Entry]>([:])

    init(
        registry: PrometheusCollectorRegistry,
        describe: @escaping @Sendable (Key) -> (MetricNameDescriptor, [(String, String)])
    ) {
        self.registry = registry
        self.describe = describe
    }

    /// Brings each counter up to its `total`.
    func update(_ totals: [(Key, UInt64)]) {
        entries.withLock { entries in
            for (key, total) in totals {
                if entries[key] == nil {
                    let (descriptor, labels) = describe(key)
                    entries[key] = Entry(
                        counter: registry.makeCounter(descriptor: descriptor, labels: labels), reported: 0)
                }
                guard total > entries[key]!.reported else { continue }
                entries[key]!.counter.increment(by: Int64(clamping: total - entries[key]!.reported))
                entries[key]!.reported = total
            }
        }
    }
}

/// `switchboard_service_instances{service, status}`: each service's instances by status, read from the catalog when
/// scraped. One series per service and status (four per service with an instance); a service's go when its last
/// instance does.
final class ServiceGauges: Sendable {
    private let registry: PrometheusCollectorRegistry
    private let gauges = Mutex<[ServiceName: [HealthStatus: Gauge]]>([:])

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    func update(_ services: [ServiceSummary]) {
        gauges.withLock { gauges in
            var listed = Set<ServiceName>()
            for summary in services {
                listed.insert(summary.name)
                if gauges[summary.name] == nil {
                    var made: [HealthStatus: Gauge] = [:]
                    for status in HealthStatus.allCases {
                        made[status] = registry.makeGauge(
                            descriptor: AgentMetrics.metric(
                                "service_instances", unit: "", help: "Registered instances of each service, by status."),
                            labels: [("service", summary.name.rawValue), ("status", status.rawValue)])
                    }
                    gauges[summary.name] = made
                }
                let counts = summary.counts
                gauges[summary.name]?[.passing]?.set(Double(counts.passing))
                gauges[summary.name]?[.warning]?.set(Double(counts.warning))
                gauges[summary.name]?[.critical]?.set(Double(counts.critical))
                gauges[summary.name]?[.maintenance]?.set(Double(counts.maintenance))
            }
            for (name, made) in gauges where !listed.contains(name) {
                for gauge in made.values { registry.unregisterGauge(gauge) }
                gauges[name] = nil
            }
        }
    }
}

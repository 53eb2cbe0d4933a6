import NIOCore
import Prometheus

/// The gateway's metrics, in its own Prometheus registry, served at `GET /metrics` on the admin address: requests
/// per route and status class, their latency, calls per upstream instance and outcome, cache hits and 429s.
public final class GatewayMetrics: Sendable {
    /// The registry `GET /metrics` renders.
    public let registry: PrometheusCollectorRegistry

    /// Metrics kept in `registry` (a new one by default: two gateways in one process keep separate counts).
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    static let latencyBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
    ]

    private static func metric(_ name: String, unit: String, help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "switchboard_gateway", metricName: name, unitName: unit, helpText: help)
    }

    func requests(route: String, service: String, code: String) -> Counter {
        registry.makeCounter(
            descriptor: Self.metric("requests", unit: "total", help: "Requests answered, by route and status class."),
            labels: [("route", route), ("service", service), ("code", code)])
    }

    func requestDuration(route: String) -> DurationHistogram {
        registry.makeDurationHistogram(
            descriptor: Self.metric(
                "request_duration", unit: "seconds", help: "From a request's head to the end of its answer's head."),
            labels: [("route", route)], buckets: Self.latencyBuckets)
    }

    func upstreamCalls(service: String, instance: String, outcome: String) -> Counter {
        registry.makeCounter(
            descriptor: Self.metric(
                "upstream_requests", unit: "total", help: "Requests sent to instances, by instance and outcome."),
            labels: [("service", service), ("instance", instance), ("outcome", outcome)])
    }

    func upstreamDuration(service: String) -> DurationHistogram {
        registry.makeDurationHistogram(
            descriptor: Self.metric(
                "upstream_duration", unit: "seconds", help: "From a request's head to its instance's answer's head."),
            labels: [("service", service)], buckets: Self.latencyBuckets)
    }

    func cache(route: String, result: String) -> Counter {
        registry.makeCounter(
            descriptor: Self.metric("cache", unit: "total", help: "Cached routes' lookups, by hit or miss."),
            labels: [("route", route), ("result", result)])
    }

    /// Connections upgraded to WebSocket, and how many are open now.
    var upgrades: Counter {
        registry.makeCounter(
            descriptor: Self.metric(
                "upgraded_connections", unit: "total", help: "Connections upgraded to WebSocket through the gateway."))
    }

    var openTunnels: Gauge {
        registry.makeGauge(
            descriptor: Self.metric(
                "upgraded_connections_open", unit: "", help: "Upgraded (WebSocket) connections open now."))
    }

    func rateLimited(route: String) -> Counter {
        registry.makeCounter(
            descriptor: Self.metric("rate_limited", unit: "total", help: "Requests refused with 429 by route."),
            labels: [("route", route)])
    }
}

/// One event loop's handles on the gateway's metrics, made on first use: a request then costs a dictionary
/// lookup on its own loop, not a trip through the registry's lock.
final class LoopMetrics {
    private struct RequestKey: Hashable {
        var route: String
        var service: String
        var code: Int
    }

    private struct UpstreamKey: Hashable {
        var service: String
        var instance: String
        var failed: Bool
    }

    let metrics: GatewayMetrics
    private var requests: [RequestKey: Counter] = [:]
    private var durations: [String: DurationHistogram] = [:]
    private var upstreamCalls: [UpstreamKey: Counter] = [:]
    private var upstreamDurations: [String: DurationHistogram] = [:]
    private var cache: [String: (hit: Counter, miss: Counter)] = [:]
    private var rateLimited: [String: Counter] = [:]
    /// The series the last exchange was counted in: under load most exchanges share them, and comparing their
    /// keys is cheaper than hashing them into the tables.
    private var lastRequest: (key: RequestKey, counter: Counter, duration: DurationHistogram)?
    private var lastUpstream: (key: UpstreamKey, counter: Counter, duration: DurationHistogram?)?
    private lazy var upgrades = metrics.upgrades
    private lazy var openTunnels = metrics.openTunnels

    init(metrics: GatewayMetrics) {
        self.metrics = metrics
    }

    /// A connection became a WebSocket tunnel (its 101 is recorded as an exchange too).
    func recordUpgrade() {
        upgrades.increment()
        openTunnels.increment()
    }

    /// A WebSocket tunnel closed.
    func recordTunnelClosed() {
        openTunnels.decrement()
    }

    /// Records one exchange.
    func record(
        route: String, service: String, status: Int, duration: TimeAmount, upstream: (instance: String, TimeAmount?)?,
        cache cacheResult: String?
    ) {
        let code = status / 100
        let key = RequestKey(route: route, service: service, code: code)
        if let last = lastRequest, last.key == key {
            last.counter.increment()
            last.duration.recordNanoseconds(duration.nanoseconds)
        } else {
            if requests[key] == nil {
                requests[key] = metrics.requests(route: route, service: service, code: "\(code)xx")
            }
            if durations[route] == nil { durations[route] = metrics.requestDuration(route: route) }
            let series = (key, requests[key]!, durations[route]!)
            lastRequest = series
            series.1.increment()
            series.2.recordNanoseconds(duration.nanoseconds)
        }
        if let upstream {
            let failed = upstream.1 == nil || status >= 500
            let callKey = UpstreamKey(service: service, instance: upstream.instance, failed: failed)
            let series: (key: UpstreamKey, counter: Counter, duration: DurationHistogram?)
            if let last = lastUpstream, last.key == callKey {
                series = last
            } else {
                if upstreamCalls[callKey] == nil {
                    upstreamCalls[callKey] = metrics.upstreamCalls(
                        service: service, instance: upstream.instance, outcome: failed ? "failure" : "success")
                }
                series = (callKey, upstreamCalls[callKey]!, upstreamDurations[service])
                lastUpstream = series
            }
            series.counter.increment()
            if let answered = upstream.1 {
                if let duration = series.duration {
                    duration.recordNanoseconds(answered.nanoseconds)
                } else {
                    // A service's first answer: its histogram is made now (one whose calls all failed has none).
                    let duration = upstreamDurations[service] ?? metrics.upstreamDuration(service: service)
                    upstreamDurations[service] = duration
                    lastUpstream = (callKey, series.counter, duration)
                    duration.recordNanoseconds(answered.nanoseconds)
                }
            }
        }
        if let cacheResult {
            if cache[route] == nil {
                cache[route] = (metrics.cache(route: route, result: "hit"), metrics.cache(route: route, result: "miss"))
            }
            if cacheResult == "HIT" { cache[route]!.hit.increment() } else { cache[route]!.miss.increment() }
        }
        if status == 429 {
            if rateLimited[route] == nil { rateLimited[route] = metrics.rateLimited(route: route) }
            rateLimited[route]!.increment()
        }
    }
}

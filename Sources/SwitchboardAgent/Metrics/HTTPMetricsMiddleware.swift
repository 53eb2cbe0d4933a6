import HTTPTypes
import Hummingbird
import Prometheus
import Synchronization

/// Counts each request by route, method and status, and times it to the end of its body, in the agent's registry.
///
/// Hummingbird's `MetricsMiddleware` does the same through the global swift-metrics system, which only an executable
/// may bootstrap and which every agent of one process would share (the tests run several). This one writes to the
/// agent's own registry, the one `/metrics` renders, and otherwise follows it: the route is the pattern that matched
/// (`/v1/services/{service}`, never the path asked, so there are as many series as routes), `NotFound` when none
/// did, and the time runs until the body is written (a stream's is its whole life). Added before every other
/// middleware, it sees the status as sent, errors rendered.
struct HTTPMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let series: HTTPRequestSeries

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        let start = ContinuousClock.now
        let series = self.series
        do {
            var response = try await next(request, context)
            let status = response.status.code
            let body = response.body
            response.body = ResponseBody(contentLength: body.contentLength) { writer in
                defer {
                    series.record(
                        route: context.endpointPath ?? "NotFound", method: request.method, status: status,
                        duration: .now - start)
                }
                try await body.write(writer)
            }
            return response
        } catch {
            // Only an error nothing inside rendered reaches here.
            series.record(
                route: context.endpointPath ?? "NotFound", method: request.method,
                status: (error as? any HTTPResponseError)?.status.code ?? 500, duration: .now - start)
            throw error
        }
    }
}

/// The HTTP API's series: `switchboard_http_requests_total{route, method, status}` and
/// `switchboard_http_request_duration_seconds{route, method}`, each made once and then found in a dictionary.
final class HTTPRequestSeries: Sendable {
    private struct RequestKey: Hashable {
        var route: String
        var method: HTTPRequest.Method
        var status: Int
    }

    private struct DurationKey: Hashable {
        var route: String
        var method: HTTPRequest.Method
    }

    private struct Series {
        var requests: [RequestKey: Counter] = [:]
        var durations: [DurationKey: DurationHistogram] = [:]
    }

    /// From half a millisecond (a lookup) to half a minute (a blocking query); streams fall beyond.
    static let buckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .seconds(2.5), .seconds(5), .seconds(30),
    ]

    private let registry: PrometheusCollectorRegistry
    private let series = Mutex(Series())

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
    }

    /// Records one request answered.
    func record(route: String, method: HTTPRequest.Method, status: Int, duration: Duration) {
        let (counter, histogram) = series.withLock { series in
            let requestKey = RequestKey(route: route, method: method, status: status)
            let durationKey = DurationKey(route: route, method: method)
            if series.requests[requestKey] == nil {
                series.requests[requestKey] = registry.makeCounter(
                    descriptor: MetricNameDescriptor(
                        namespace: "switchboard", metricName: "http_requests", unitName: "total",
                        helpText: "HTTP requests answered, by route pattern, method and status."),
                    labels: [("route", route), ("method", method.rawValue), ("status", String(status))])
            }
            if series.durations[durationKey] == nil {
                series.durations[durationKey] = registry.makeDurationHistogram(
                    descriptor: MetricNameDescriptor(
                        namespace: "switchboard", metricName: "http_request_duration", unitName: "seconds",
                        helpText: "From a request's arrival to the end of its answer's body, by route and method."),
                    labels: [("route", route), ("method", method.rawValue)], buckets: Self.buckets)
            }
            return (series.requests[requestKey]!, series.durations[durationKey]!)
        }
        counter.increment()
        histogram.record(duration)
    }
}

import SwitchboardClient
import SwitchboardCore
import Tracing

/// The exchange's spans, when the process has a tracer (swift-distributed-tracing; the executable bootstraps one for
/// `--otlp-endpoint`): a server span for the proxied request, continuing the caller's `traceparent`, and a client
/// span under it for each attempt at an instance, whose context is the `traceparent` that instance receives.
///
/// Without a tracer none of this runs: the gateway writes its own `traceparent` (``TraceParent/init(from:random:)``),
/// which costs a few random numbers and no span.
extension ProxyHandler {
    /// Starts the exchange's server span for `head`, routed by `match`, and takes the trace's ids from it.
    func startServerSpan(_ head: RequestHead, match: RouteMatch, tracer: any Tracer) {
        var context = ServiceContext.topLevel
        // Only a well-formed traceparent reaches the propagator: a malformed one starts a new trace without a word
        // in the logs (the propagator would log each).
        tracer.extract(
            TraceHeaders(traceparent: GatewayHeaders.callerTraceparent(in: head.fields)), into: &context,
            using: TraceHeaders.Extraction())
        let service = match.target.service.rawValue
        let span = tracer.startSpan("\(head.method) \(match.route?.name ?? service)", context: context, ofKind: .server)
        if span.isRecording {
            span.attributes["http.request.method"] = head.method
            span.attributes["url.path"] = String(head.target.prefix { $0 != "?" })
            span.attributes["http.route"] = match.route?.name
            span.attributes["switchboard.service"] = service
            span.attributes["switchboard.request_id"] = exchange!.requestID
            span.attributes["client.address"] = clientAddress
        }
        exchange!.span = span
        if let traceparent = Self.traceparent(of: span, tracer: tracer),
            traceparent.split(separator: "-").dropFirst().first != nil
        {
            exchange!.traceparent = traceparent
        } else {
            // A tracer that propagates no W3C context: the gateway's own, as without a tracer.
            exchange!.trace = TraceParent(from: head.fields, random: &random)
        }
    }

    /// Starts the client span of an attempt at `instance`; the instance receives its context as `traceparent`.
    func startAttemptSpan(to instance: Instance) {
        guard let tracer, let server = exchange?.span else { return }
        endAttemptSpan(failure: nil)
        let span = tracer.startSpan(
            "\(exchange!.request?.method ?? "HTTP") \(instance.definition.service)", context: server.context,
            ofKind: .client)
        if span.isRecording {
            span.attributes["switchboard.instance"] = instance.id.rawValue
            span.attributes["server.address"] = instance.definition.address.rawValue
            span.attributes["server.port"] = instance.definition.port
            span.attributes["switchboard.attempt"] = exchange!.attempts
        }
        exchange!.attemptSpan = span
        if let traceparent = Self.traceparent(of: span, tracer: tracer) { exchange!.traceparent = traceparent }
    }

    /// Ends the attempt's span, if one is open: with the status the instance answered (once its answer is through),
    /// or with `failure`.
    func endAttemptSpan(failure: String?) {
        guard let span = exchange?.attemptSpan else { return }
        exchange!.attemptSpan = nil
        if let failure {
            span.setStatus(SpanStatus(code: .error, message: failure))
        } else if let status = exchange?.responseStatus, status > 0 {
            span.attributes["http.response.status_code"] = status
            if status >= 500 { span.setStatus(SpanStatus(code: .error)) }
        }
        span.end()
    }

    /// Ends `exchange`'s spans, with the status its caller got (none when the caller left before an answer).
    func endSpans(of exchange: Exchange) {
        guard let span = exchange.span else { return }
        if let attempt = exchange.attemptSpan {
            attempt.setStatus(SpanStatus(code: .error, message: "the exchange ended while the instance had it"))
            attempt.end()
        }
        if exchange.responseStatus > 0 { span.attributes["http.response.status_code"] = exchange.responseStatus }
        span.attributes["switchboard.instance"] = exchange.instance?.id.rawValue
        if exchange.responseStatus >= 500 || exchange.responseStatus == 0 { span.setStatus(SpanStatus(code: .error)) }
        span.end()
    }

    /// The `traceparent` that carries `span`'s context, as the tracer's propagator writes it.
    private static func traceparent(of span: any Span, tracer: any Tracer) -> String? {
        var headers = TraceHeaders()
        tracer.inject(span.context, into: &headers, using: TraceHeaders.Injection())
        return headers.traceparent
    }
}

/// The W3C Trace Context headers, as a carrier for a tracer's propagator.
struct TraceHeaders: Sendable {
    var traceparent: String?
    var tracestate: String?

    struct Extraction: Extractor {
        func extract(key: String, from carrier: TraceHeaders) -> String? {
            switch key {
            case "traceparent": carrier.traceparent
            case "tracestate": carrier.tracestate
            default: nil
            }
        }
    }

    struct Injection: Injector {
        func inject(_ value: String, forKey key: String, into carrier: inout TraceHeaders) {
            switch key {
            case "traceparent": carrier.traceparent = value
            case "tracestate": carrier.tracestate = value
            default: break
            }
        }
    }
}

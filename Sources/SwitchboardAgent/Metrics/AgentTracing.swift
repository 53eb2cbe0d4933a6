import Hummingbird
import SwitchboardCatalog
import Tracing

/// The agent's spans: a server span per HTTP request (Hummingbird's `TracingMiddleware`, continuing the caller's
/// `traceparent`) and a span per store commit, sent wherever the executable's tracer sends them.
///
/// The agent never bootstraps a tracer (only the executable does, for `--otlp-endpoint`): with the no-op one, nothing
/// here is installed, and neither requests nor commits pay for tracing.
enum AgentTracing {
    /// The tracer the process bootstrapped; nil for the no-op one.
    static var tracer: (any Tracer)? {
        let tracer = InstrumentationSystem.tracer
        return tracer is NoOpTracer ? nil : tracer
    }

    /// A span per commit of the catalog's writer to its `store` (`sqlite`, `etcd`, `memory`), spanning the store's
    /// work, with the batch's size; an error status when the store refused or failed it.
    ///
    /// Each commit is a trace of its own: one commit holds the writes of many requests, and the writer's task
    /// belongs to none of them.
    static func observeCommits(of catalog: Catalog, store: String, tracer: any Tracer) {
        catalog.addCommitObserver { commit in
            let end = DefaultTracerClock.now
            let (seconds, attoseconds) = commit.duration.components
            let nanoseconds = UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
            let start = DefaultTracerClock.Instant(
                nanosecondsSinceEpoch: end.nanosecondsSinceEpoch - min(nanoseconds, end.nanosecondsSinceEpoch))
            let span = tracer.startSpan("store commit", context: .topLevel, ofKind: .internal, at: start)
            span.attributes["switchboard.store"] = store
            span.attributes["switchboard.commit.changes"] = commit.changes
            if !commit.succeeded { span.setStatus(SpanStatus(code: .error)) }
            span.end(at: end)
        }
    }
}

/// The caller's address on the request spans (`net.sock.peer.addr`).
extension AgentRequestContext: RemoteAddressRequestContext {}

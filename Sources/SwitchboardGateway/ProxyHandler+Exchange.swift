import NIOCore
import SwitchboardClient
import SwitchboardCore
import Tracing

extension ProxyHandler {
    /// What one exchange (a request and its answer) knows: made whole when its head is read and dropped whole when
    /// its answer is out, so nothing of one exchange can reach the next on the same connection. What belongs to the
    /// connection (the caller's buffer, the timer, whether it is closing) stays on the handler.
    ///
    /// The handler holds it as ``ProxyHandler/exchange`` and changes it in place (`exchange!.sentBytes += ...`): it
    /// keeps body parts and sets, and a copy taken out and written back would cost a copy of them on the hot path.
    /// No access to it spans a call that may come back into the handler (a write, a flush, a close): such a call
    /// may end the exchange.
    struct Exchange {
        /// Nil for a head that could not be read: it is answered with a refusal and not logged.
        var request: RequestHead?
        var id: RequestID
        /// The id as a string, made when read (logs, error bodies, spans).
        var requestID: String { id.description }
        /// Whether the caller's connection serves another exchange after this one.
        var keepAlive: Bool
        let started: NIODeadline
        /// Where the request's body ends; says whether all of it has come.
        var requestBody: BodyFramer
        var match: RouteMatch?
        /// The caller, once a route's authentication let it through.
        var identity: Identity?
        /// The `traceparent` the instance receives: `00-<trace id>-<parent id>-<flags>`.
        var trace = TraceParent(header: "")
        /// ``trace`` as a string, made when read; a tracer's own header is set through it.
        var traceparent: String {
            get { trace.description }
            set { trace = TraceParent(header: newValue) }
        }
        /// The trace's id, made when read (the access log).
        var traceID: String { trace.traceID }
        /// With a tracer: the exchange's server span, and the client span of the attempt under way.
        var span: (any Span)?
        var attemptSpan: (any Span)?
        /// The route's cache key when the response may be stored, and what of it arrived so far.
        var cacheKey: String?
        var cacheCapture: (head: ResponseHead, body: ByteBuffer, freshness: Duration)?
        /// Headers the route's policies add to the answer, whoever gives it.
        var downstreamExtras: DownstreamExtras?
        var upstreamAnswered: NIODeadline?
        var responseStatus = 0
        /// The body parts sent so far, kept while they fit the replay limit, so another instance can be sent them.
        var sentBody: [ByteBuffer] = []
        var sentBytes = 0
        var replayable = true
        var continueSent = false
        /// A WebSocket handshake: the instance is asked to upgrade, and its `101` turns the connection into a tunnel.
        var webSocket = false
        /// On a sticky route: the key the caller's requests are hashed by (its cookie or header value).
        var stickyKey: String?
        /// Whether a pooled connection already failed this exchange (retried once on a new one, not counted).
        var retriedStaleConnection = false
        /// Instances that failed this exchange: a retry avoids them. The instance of the attempt under way joins
        /// only when it fails, so an exchange that never retries never fills (nor allocates) the set.
        var tried: Set<InstanceID> = []
        /// How many instances were picked for this exchange.
        var attempts = 0
        /// Why the last attempt failed, when the request is being retried: the answer if no instance is left to try.
        var lastFailure: String?
        /// The instance the request goes to (the last one picked).
        var instance: Instance?
        /// How many instances the service had when ``instance`` was picked (bounds how many may be ejected).
        var knownInstances = 0
        /// The balancer that picked ``instance``, told when the call ends.
        var balancerKey: UpstreamSelector.BalancerKey?
        /// The instance's circuit breaker's leave for this call, handed back with its outcome.
        var breakerPermit: CircuitBreaker.Permit?
        /// The connection to ``instance`` while the request goes up or its answer comes back.
        var upstream: UpstreamConnection?
        /// When the instance must have started answering; set once the whole request is sent.
        var responseDeadline: NIODeadline?

        /// The exchange of a request whose head was read.
        init(request: RequestHead, id: RequestID, keepAlive: Bool) {
            self.request = request
            self.id = id
            self.keepAlive = keepAlive
            started = .now()
            requestBody = BodyFramer(request.framing)
        }

        /// The exchange of a head that could not be read: only a refusal is sent, and the connection ends.
        init(refusingWith id: RequestID) {
            self.id = id
            keepAlive = false
            started = .now()
            requestBody = BodyFramer(.none)
        }

        /// Keeps a body part sent to the instance while the body so far fits `limit`; past it, the request can no
        /// longer be sent to another instance, and what was kept goes.
        mutating func keepForReplay(_ part: ByteBuffer, limit: Int) {
            guard replayable else { return }
            sentBytes += part.readableBytes
            if sentBytes > limit {
                replayable = false
                sentBody = []
            } else {
                sentBody.append(part)
            }
        }

        /// The instance started answering with `status`: the request cannot go elsewhere any more. `closing` when
        /// the answer ends the caller's connection (a body delimited by the close, or dechunked for HTTP/1.0).
        mutating func responseStarted(status: Int, closing: Bool) {
            responseDeadline = nil
            sentBody = []
            replayable = false
            if closing { keepAlive = false }
            upstreamAnswered = .now()
            responseStatus = status
        }

        /// Changes the headers the answer gets from the route's policies, made empty the first time.
        mutating func editDownstreamExtras(_ change: (inout DownstreamExtras) -> Void) {
            if downstreamExtras == nil { downstreamExtras = DownstreamExtras() }
            change(&downstreamExtras!)
        }
    }
}

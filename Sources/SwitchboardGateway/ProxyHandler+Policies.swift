import NIOCore
import NIOHTTP1
import SwitchboardCore

/// The route's policies, applied between routing and connecting: CORS preflights, authentication, rate limits
/// and the response cache; and the exchange's end: the balancer told, the access log written.
extension ProxyHandler {
    /// Runs the route's checks, then sends the request on (or answers it from the cache, or refuses it).
    func admit(_ head: RequestHead, match: RouteMatch) {
        guard let policies = match.route?.policies, let context else {
            connect()
            return
        }
        let origin = policies.cors == nil ? nil : head.fields.first("origin")
        if let cors = policies.cors, let origin {
            guard cors.allows(origin: origin) else {
                respondWithError(
                    .forbidden, service: match.target.service, reason: "origin \(origin) is not allowed on this route")
                return
            }
            if head.method == "OPTIONS", let method = head.fields.first("access-control-request-method") {
                answerPreflight(cors, origin: origin, method: method)
                return
            }
            exchange!.downstreamExtras = DownstreamExtras(cors: (cors, origin))
        } else if let cors = policies.cors, !cors.origins.contains("*") {
            // The answer differs with the origin: caches behind must keep them apart, even for no origin.
            exchange!.downstreamExtras = DownstreamExtras(varyOrigin: true)
        }
        if !policies.responseHeaders.isEmpty {
            exchange!.editDownstreamExtras { $0.edits = policies.responseHeaders }
        }
        guard let requirement = policies.authentication else {
            authenticated(head, match: match, policies: policies)
            return
        }
        let proxy = NIOLoopBound(self, eventLoop: context.eventLoop)
        requirement.keys.authenticate(head, requirement: requirement, on: context.eventLoop).whenComplete { result in
            let handler = proxy.value
            guard handler.state == .connecting else { return }
            switch result {
            case .success(let identity):
                handler.exchange?.identity = identity
                handler.authenticated(head, match: match, policies: policies)
            case .failure(let failure as AuthenticationFailure):
                handler.respondWithError(
                    HTTPResponseStatus(statusCode: failure.status), service: match.target.service,
                    reason: failure.message, headers: failure.challenge.map { [("WWW-Authenticate", $0)] } ?? [])
            case .failure(let error):
                handler.respondWithError(.unauthorized, service: match.target.service, reason: "\(error)")
            }
        }
    }

    private func authenticated(_ head: RequestHead, match: RouteMatch, policies: RoutePolicies) {
        if let limiter = policies.rateLimit {
            let identity = exchange?.identity
            let caller: String
            switch limiter.key {
            // A key counts only once checked: an unchecked one would give every made-up key a full bucket.
            case .apiKey: caller = identity?.method == "api-key" ? "key:\(identity!.user)" : clientAddress ?? ""
            case .user: caller = identity?.user ?? clientAddress ?? ""
            case .clientIP: caller = clientAddress ?? ""
            }
            let decision = limiter.decide(for: caller, gateways: limiter.shared ? router.liveGateways : 1)
            exchange!.editDownstreamExtras { $0.rateLimit = (limiter.burst, decision.remaining) }
            guard decision.allowed else {
                respondWithError(
                    .tooManyRequests, service: match.target.service,
                    reason: "more than \(limiter.burst) requests at once or \(limiter.rate) a second on this route",
                    headers: [("Retry-After", String(decision.retryAfter))])
                return
            }
        }
        if let aggregate = match.route?.aggregate {
            answerAggregate(aggregate, head: head, match: match)
            return
        }
        if head.method == "PURGE", let cache = policies.cache {
            answerPurge(head, cache: cache, match: match)
            return
        }
        if let cache = policies.cache, !exchange!.webSocket, ResponseCache.admits(head) {
            let host = head.fields.first("host").map(Route.hostName) ?? ""
            // The target with its tags and metadata: each side of a split has its own answers.
            let key = ResponseCache.key(
                host: host, target: head.target, service: match.target.service,
                parameters: match.target.query.parameters)
            if let entry = cache.lookup(key) {
                answerFromCache(entry, head: head)
                return
            }
            exchange!.cacheKey = key
            exchange!.editDownstreamExtras { $0.cache = ("MISS", nil) }
        }
        connect()
    }

    /// Fans the request out to the aggregate's parts through the client library, and answers with one object.
    private func answerAggregate(_ spec: AggregateSpec, head: RequestHead, match: RouteMatch) {
        guard let context else { return }
        guard head.method == "GET" || head.method == "HEAD" else {
            respondWithError(
                .methodNotAllowed, service: match.target.service, reason: "an aggregate route answers GET and HEAD only"
            )
            return
        }
        let queryStart = match.path.firstIndex(of: "?")
        let rest = String(match.rest.drop { $0 == "/" })
        let query = queryStart.map { String(match.path[match.path.index(after: $0)...]) }
        var headers = HTTPHeaders()
        headers.add(name: "X-Request-ID", value: exchange!.requestID)
        headers.add(name: "traceparent", value: exchange!.traceparent)
        if let identity = exchange!.identity {
            headers.add(name: "X-User-ID", value: identity.user)
            headers.add(name: "X-User-Roles", value: identity.roles.joined(separator: ","))
        }
        let proxy = NIOLoopBound(self, eventLoop: context.eventLoop)
        let headersToSend = headers
        aggregator.map { aggregator in
            context.eventLoop.makeFutureWithTask {
                await aggregator.answer(spec, rest: rest, query: query, headers: headersToSend)
            }
        }?.whenSuccess { answer in
            let handler = proxy.value
            guard handler.state == .connecting, let context = handler.context,
                let request = handler.exchange?.request
            else {
                return
            }
            if answer.allFailed {
                handler.respondWithError(
                    .badGateway, service: match.target.service,
                    reason: "every part failed: \(String(buffer: answer.body))")
                return
            }
            handler.exchange!.responseStatus = 200
            let closing = !handler.exchange!.keepAlive || !handler.exchange!.requestBody.isComplete
            let response = GatewayHeaders.response(
                status: .ok, body: answer.body, requestID: handler.exchange!.requestID,
                callerMinorVersion: request.minorVersion, closing: closing, extras: handler.exchange!.downstreamExtras,
                omitBody: request.isHEAD, allocator: context.channel.allocator)
            context.write(handler.wrapOutboundOut(response), promise: nil)
            handler.finishExchange(closing: closing)
        }
    }

    private func answerPreflight(_ cors: CORSPolicy, origin: String, method: String) {
        guard let context, let request = exchange?.request else { return }
        guard cors.methods.contains(method.uppercased()) else {
            respondWithError(
                .forbidden, service: exchange!.match?.target.service, reason: "\(method) is not allowed from \(origin)")
            return
        }
        exchange!.responseStatus = 204
        let closing = !exchange!.keepAlive || !exchange!.requestBody.isComplete
        let answer = GatewayHeaders.response(
            status: .noContent, body: ByteBuffer(), requestID: exchange!.requestID,
            callerMinorVersion: request.minorVersion, closing: closing,
            headers: cors.preflightHeaders(
                origin: origin, requestedHeaders: request.fields.first("access-control-request-headers")),
            allocator: context.channel.allocator)
        context.write(wrapOutboundOut(answer), promise: nil)
        finishExchange(closing: closing)
    }

    /// `PURGE /path` on a cached route: drops the answers kept for it (every target; a path ending in `*`, every
    /// path under it) and says how many, or 405 when the route's cache does not take purges.
    private func answerPurge(_ head: RequestHead, cache: ResponseCache, match: RouteMatch) {
        guard let context else { return }
        guard cache.allowsPurge else {
            respondWithError(
                .methodNotAllowed, service: match.target.service,
                reason: "PURGE is off on route \(match.route?.name ?? "?"): set cache.purge: true in the route file")
            return
        }
        skipArrivedRequestBody()
        let host = head.fields.first("host").map(Route.hostName) ?? ""
        let purged = cache.purge(host: host, path: head.target)
        exchange!.responseStatus = 200
        let closing = !exchange!.keepAlive || !exchange!.requestBody.isComplete
        let response = GatewayHeaders.response(
            status: .ok, body: ByteBuffer(string: "{\"purged\":\(purged)}\n"), requestID: exchange!.requestID,
            callerMinorVersion: head.minorVersion, closing: closing, extras: exchange!.downstreamExtras,
            allocator: context.channel.allocator)
        context.write(wrapOutboundOut(response), promise: nil)
        finishExchange(closing: closing)
    }

    private func answerFromCache(_ entry: ResponseCache.Entry, head: RequestHead) {
        guard let context else { return }
        exchange!.responseStatus = entry.head.status
        exchange!.editDownstreamExtras { $0.cache = ("HIT", Int((ContinuousClock.now - entry.stored).seconds)) }
        // A request body (unusual on a GET) that has not all arrived ends the connection after the answer.
        skipArrivedRequestBody()
        let closing = !exchange!.keepAlive || !exchange!.requestBody.isComplete
        GatewayHeaders.downstreamResponse(
            entry.head, callerMinorVersion: head.minorVersion, keepAlive: !closing, chunked: false,
            requestID: exchange!.id, extras: exchange!.downstreamExtras, into: &responseHeadBuffer)
        context.write(wrapOutboundOut(responseHeadBuffer), promise: nil)
        context.write(wrapOutboundOut(entry.body), promise: nil)
        finishExchange(closing: closing)
    }

    /// Starts keeping the response for the cache when the route caches and the response may be stored.
    func startCapture(_ head: ResponseHead, framing: BodyFraming) {
        guard exchange?.cacheKey != nil, let cache = exchange?.match?.route?.policies.cache,
            let request = exchange?.request
        else { return }
        let credentials =
            request.fields.contains("authorization") || request.fields.contains("x-api-key")
            || request.fields.contains("cookie")
        guard let freshness = cache.freshness(of: head, framing: framing, requestHasCredentials: credentials)
        else { return }
        exchange!.cacheCapture = (head, ByteBuffer(), freshness)
    }

    func capture(_ bytes: ByteBuffer) {
        var bytes = bytes
        exchange!.cacheCapture!.body.writeBuffer(&bytes)
    }

    func storeCapture() {
        guard let capture = exchange?.cacheCapture, let cacheKey = exchange?.cacheKey,
            let cache = exchange?.match?.route?.policies.cache
        else { return }
        exchange!.cacheCapture = nil
        cache.store(cacheKey, head: capture.head, body: capture.body, for: capture.freshness)
    }

    /// Tells the balancer the call to the exchange's instance ended (least-requests counts calls in flight), and
    /// gives back a breaker permit no outcome used.
    func finishPick() {
        guard let balancerKey = exchange?.balancerKey, let instance = exchange?.instance else { return }
        exchange!.balancerKey = nil
        let permit = exchange!.breakerPermit
        // Only least-requests counts calls in flight: the others need not be told (nor the lock taken).
        guard balancerKey.balancer == .leastRequests || permit != nil else { return }
        exchange!.breakerPermit = nil
        router.selector.finished(balancerKey, on: instance, permit: permit)
    }

    /// Counts a call's outcome against `instance` (outlier detection, its circuit breaker).
    func recordOutcome(_ succeeded: Bool, on instance: Instance) {
        let permit = exchange?.breakerPermit
        exchange?.breakerPermit = nil
        router.selector.record(
            succeeded, on: instance, knownInstances: exchange?.knownInstances ?? 0, permit: permit)
    }

    /// The exchange's line in the access log, and its metrics.
    func logExchange(_ exchange: Exchange) {
        guard let request = exchange.request else { return }
        let now = NIODeadline.now()
        let duration = now - exchange.started
        let upstreamDuration = exchange.upstreamAnswered.map { $0 - exchange.started }
        let match = exchange.match
        let instance = exchange.instance
        let extras = exchange.downstreamExtras
        // Labels only from the route file or from services that had an instance: a name a caller makes up must not
        // become a metric series.
        let routeName = match?.route?.name ?? (match == nil ? "none" : "default")
        let service = instance == nil && match?.route == nil ? "none" : match?.target.service.rawValue ?? "none"
        metrics?.record(
            route: routeName, service: service, status: exchange.responseStatus, duration: duration,
            upstream: instance.map { ($0.id.rawValue, upstreamDuration) }, cache: extras?.cache?.state)
        accessLog?.record(
            AccessLog.Line(
                requestID: exchange.requestID, traceID: exchange.traceID, clientIP: clientAddress,
                user: exchange.identity?.user, method: request.method, target: request.target,
                status: exchange.responseStatus, duration: duration, upstreamDuration: upstreamDuration,
                route: match?.route?.name, service: match?.target.service.rawValue, instance: instance?.id.rawValue,
                cache: extras?.cache?.state, rateLimitRemaining: extras?.rateLimit?.remaining))
    }
}

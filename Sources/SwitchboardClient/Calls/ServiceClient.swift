import AsyncHTTPClient
import CoreMetrics
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardCore
import Synchronization
import Tracing

/// One call site: calls to one service, with its balancer and its resilience policy.
///
/// ``execute(_:context:)`` resolves the service from the discovery cache, picks an instance, sends the request
/// with AsyncHTTPClient and applies the ``CallPolicy``: a failed attempt (connection refused, 5xx, timeout) goes to
/// another instance while the retry budget allows, instances that keep failing are ejected from this client's
/// picks, and per-instance circuit breakers stop calls to an instance that mostly fails. That is how an instance
/// that dies costs callers no failed calls: the attempt that finds it dead is retried elsewhere, and within a few
/// calls it is not picked any more, long before the registry's health check notices.
///
/// Every call is a span (swift-distributed-tracing) named for the method and the service, with an event per
/// attempt; AsyncHTTPClient adds a client span per attempt under it and injects the trace context into the request
/// headers through the bootstrapped tracer's propagator (W3C `traceparent` with swift-otel). Counters and timers
/// per service and instance go to swift-metrics (the names are in <doc:Observability>), and ejections are reported
/// to the agent as observations.
///
/// ```swift
/// let orders = ServiceClient(service: "order", discovery: discovery, balancer: LeastRequestsBalancer())
/// let response = try await orders.execute(ServiceRequest(path: "/orders/42"))
/// ```
public final class ServiceClient<Balancer: LoadBalancer>: Sendable {
    private struct State {
        var balancer: Balancer
        /// The outlier detector and the breakers, and the pick that consults them.
        var picker: InstancePicker
        var budget: RetryBudget?
        var bucket: TokenBucket?
        var inFlight = 0
        /// Metric handles per instance, made on first use; pruned with the picker's tables.
        var instanceMetrics: [InstanceID: CallMetrics.InstanceHandles] = [:]
    }

    public let service: ServiceName
    public let discovery: ServiceDiscovery
    public let policy: CallPolicy
    private let httpClient: HTTPClient
    private let logger: Logger
    private let metrics: CallMetrics
    /// nil when the process traces nothing (the no-op tracer): calls then skip the span machinery altogether.
    private let tracer: (any Tracer)?
    private let state: Mutex<State>

    /// A call site for `service`. `httpClient` sends the calls: by default one shared by every call site, which
    /// gives up on a connection after a second (so a dead instance costs a second at most, not the attempt
    /// timeout), does not retry connects itself (the policy retries on another instance) and follows no redirects.
    /// `metricsFactory` and `tracer` default to the ones the process bootstrapped (`MetricsSystem`,
    /// `InstrumentationSystem`); tests pass their own.
    public init(
        service: ServiceName, discovery: ServiceDiscovery, balancer: Balancer, policy: CallPolicy = CallPolicy(),
        httpClient: HTTPClient = ServiceClientDefaults.httpClient, logger: Logger? = nil,
        metricsFactory: (any MetricsFactory)? = nil, tracer: (any Tracer)? = nil
    ) {
        self.service = service
        self.discovery = discovery
        self.policy = policy
        self.httpClient = httpClient
        self.logger = logger ?? Logger(label: "switchboard.calls", factory: { _ in SwiftLogNoOpLogHandler() })
        self.metrics = CallMetrics(service: service, factory: metricsFactory ?? MetricsSystem.factory)
        let chosen = tracer ?? InstrumentationSystem.tracer
        self.tracer = chosen is NoOpTracer ? nil : chosen
        state = Mutex(
            State(
                balancer: balancer,
                picker: InstancePicker(
                    outlierDetection: policy.outlierDetection, circuitBreaker: policy.circuitBreaker),
                budget: policy.retryBudget.map { RetryBudget(configuration: $0) },
                bucket: policy.rateLimit.map { TokenBucket(capacity: $0.burst, refillPerSecond: $0.perSecond) }))
    }

    /// ``execute(_:context:)``, answering with `fallback` when the call fails (a cached or default answer, a
    /// degraded response): the fallback gets the error and may rethrow it.
    public func execute(
        _ request: ServiceRequest, context: PickContext = PickContext(),
        fallback: @Sendable (SwitchboardClientError) async throws(SwitchboardClientError) -> ServiceResponse
    ) async throws(SwitchboardClientError) -> ServiceResponse {
        do {
            return try await execute(request, context: context)
        } catch {
            return try await fallback(error)
        }
    }

    /// Sends `request` to an instance of the service and returns its answer; see the type's description.
    ///
    /// Any answer below 500 is returned as it is (a 404 is the service's answer, not a failure). When every
    /// attempt fails, the last 5xx answer is returned if there was one, else the error is thrown:
    /// ``SwitchboardClientError/Code/noInstance`` when no instance could be picked, ``SwitchboardClientError/Code/rejected``
    /// when the rate limit or bulkhead refused the call, ``SwitchboardClientError/Code/timedOut`` when the last
    /// attempt ran out of time, ``SwitchboardClientError/Code/agentUnreachable`` when nothing is known of the service.
    public func execute(
        _ request: ServiceRequest, context: PickContext = PickContext()
    ) async throws(SwitchboardClientError) -> ServiceResponse {
        let started = ContinuousClock.now
        let result: Result<ServiceResponse, SwitchboardClientError>
        if let tracer {
            result = await traced(request, context: context, tracer: tracer)
        } else {
            result = await attempts(request, context: context, span: nil)
        }
        let outcome: CallMetrics.CallOutcome
        switch result {
        case .success(let response): outcome = response.status.code >= 500 ? .serverError : .success
        case .failure(let error):
            switch error.code {
            case _ where Task.isCancelled: outcome = .cancelled
            case .rejected: outcome = .rejected
            case .noInstance, .unknownService, .agentUnreachable: outcome = .noInstance
            default: outcome = .failed
            }
        }
        metrics.recordCall(outcome, duration: .now - started)
        return try result.get()
    }

    /// The call's attempts inside a span named for the method and the service.
    private func traced(
        _ request: ServiceRequest, context: PickContext, tracer: any Tracer
    ) async -> Result<ServiceResponse, SwitchboardClientError> {
        await tracer.withSpan("\(request.method.rawValue) \(service)", ofKind: .client) { span in
            span.attributes["switchboard.service"] = service.rawValue
            span.attributes["http.request.method"] = request.method.rawValue
            span.attributes["url.path"] = request.path
            let result = await attempts(request, context: context, span: span)
            switch result {
            case .success(let response):
                span.attributes["http.response.status_code"] = Int(response.status.code)
                span.attributes["switchboard.instance"] = response.instance?.id.rawValue
                span.attributes["switchboard.attempts"] = response.attempts
                if response.status.code >= 500 { span.setStatus(SpanStatus(code: .error)) }
            case .failure where Task.isCancelled:
                // The caller gave up: no verdict on the service.
                span.attributes["switchboard.cancelled"] = true
            case .failure(let error):
                span.recordError(error)
                span.setStatus(SpanStatus(code: .error, message: error.message))
            }
            return result
        }
    }

    /// The attempts of one call (see ``execute(_:context:)``), each noted on the call's span.
    private func attempts(
        _ request: ServiceRequest, context: PickContext, span: (any Span)?
    ) async -> Result<ServiceResponse, SwitchboardClientError> {
        do {
            try admit()
        } catch {
            return .failure(error)
        }
        defer { state.withLock { $0.inFlight -= 1 } }
        state.withLock { $0.budget?.recordCall(at: .now) }
        var tried: Set<InstanceID> = []
        var lastFailure: SwitchboardClientError?
        var lastServerError: ServiceResponse?
        attempts: for attempt in 0...max(0, policy.maximumRetries) {
            if attempt > 0 {
                guard state.withLock({ $0.budget?.tryRetry(at: .now) ?? true }) else { break }
                metrics.retries.increment()
                try? await Task.sleep(for: policy.retryBackoff.delay(forAttempt: attempt - 1))
            }
            if Task.isCancelled {
                return .failure(SwitchboardClientError(.timedOut, "the call to \(service) was cancelled"))
            }
            let snapshot: DiscoverySnapshot
            do {
                snapshot = try await currentSnapshot()
            } catch {
                return .failure(error)
            }
            guard let picked = pick(from: snapshot, avoiding: tried, context: context) else {
                lastFailure =
                    lastFailure
                    ?? SwitchboardClientError(
                        .noInstance,
                        "no instance of \(service) to call: \(snapshot.instances.count) healthy, none available "
                            + "(ejected or circuit open)")
                break
            }
            let instance = picked.instance
            tried.insert(instance.id)
            let outcome = await send(
                request, to: instance, permit: picked.permit, knownInstances: snapshot.instances.count)
            if let span, span.isRecording {
                span.addEvent(
                    SpanEvent(
                        name: "attempt",
                        attributes: [
                            "switchboard.instance": .string(instance.id.rawValue),
                            "switchboard.outcome": .string(outcome.metricsOutcome.rawValue),
                        ]))
            }
            switch outcome {
            case .answered(var response):
                response.attempts = attempt + 1
                return .success(response)
            case .serverError(var response):
                response.attempts = attempt + 1
                lastServerError = response
                lastFailure = nil
                // The instance took the request: only idempotent requests go again.
                guard request.isIdempotent else { break attempts }
            case .notSent(let error):
                lastFailure = error
            case .failed(let error):
                lastFailure = error
                guard request.isIdempotent else { break attempts }
            case .cancelled:
                return .failure(SwitchboardClientError(.timedOut, "the call to \(service) was cancelled"))
            }
        }
        if let lastServerError { return .success(lastServerError) }
        return .failure(
            lastFailure ?? SwitchboardClientError(.noInstance, "no attempt could be made to call \(service)"))
    }

    private enum AttemptOutcome {
        case answered(ServiceResponse)
        case serverError(ServiceResponse)
        /// The request never left (connection refused or not made in time): safe to send elsewhere.
        case notSent(SwitchboardClientError)
        /// It may have been received.
        case failed(SwitchboardClientError)
        /// The caller cancelled: says nothing about the instance.
        case cancelled

        var metricsOutcome: CallMetrics.AttemptOutcome {
            switch self {
            case .answered: .success
            case .serverError: .serverError
            case .notSent: .notSent
            case .failed: .failed
            case .cancelled: .cancelled
            }
        }
    }

    /// The rate limit and bulkhead; counts the call in flight when admitted.
    private func admit() throws(SwitchboardClientError) {
        let refusal = state.withLock { state -> String? in
            if let limit = policy.maximumConcurrentCalls, state.inFlight >= limit {
                return "\(service): \(limit) calls already under way (bulkhead)"
            }
            if state.bucket?.tryTake(at: .now) == false { return "\(service): rate limit reached" }
            state.inFlight += 1
            return nil
        }
        if let refusal { throw SwitchboardClientError(.rejected, refusal) }
    }

    /// The service's instances: from the cache while discovery follows the service, else asked from the agent.
    private func currentSnapshot() async throws(SwitchboardClientError) -> DiscoverySnapshot {
        try await discovery.snapshot(of: service)
    }

    /// Picks an instance not ejected, not tried yet (while others remain) and whose circuit lets a call through.
    private func pick(
        from snapshot: DiscoverySnapshot, avoiding tried: Set<InstanceID>, context: PickContext
    ) -> InstancePicker.Pick? {
        let now = ContinuousClock.now
        return state.withLock { state -> InstancePicker.Pick? in
            let all = snapshot.instances
            if state.picker.prune(to: all) {
                // Metric handles of instances that left go with their breakers and outlier records.
                let current = Set(all.instances.map(\.id))
                state.instanceMetrics = state.instanceMetrics.filter { current.contains($0.key) }
            }
            return state.picker.pick(
                from: all, outOf: all, avoiding: tried, balancer: &state.balancer, context: context, at: now)
        }
    }

    private func send(
        _ request: ServiceRequest, to instance: Instance, permit: CircuitBreaker.Permit?, knownInstances: Int
    ) async -> AttemptOutcome {
        let handles = instanceMetrics(for: instance.id)
        state.withLock { $0.balancer.callStarted(on: instance.id) }
        let started = ContinuousClock.now
        let outcome = await attempt(request, on: instance)
        handles.recordAttempt(outcome.metricsOutcome, duration: .now - started)
        let succeeded: Bool
        switch outcome {
        case .answered: succeeded = true
        case .serverError, .notSent, .failed: succeeded = false
        case .cancelled:
            state.withLock { state in
                state.balancer.callFinished(on: instance.id)
                // A cancelled probe frees its slot without a verdict.
                if let permit { state.picker.abandon(permit, on: instance.id) }
            }
            return outcome
        }
        let now = ContinuousClock.now
        let effects = state.withLock { state in
            state.balancer.callFinished(on: instance.id)
            return state.picker.record(
                succeeded, on: instance.id, permit: permit, knownInstances: knownInstances, at: now)
        }
        if let transition = effects.transition {
            logger.warning("circuit \(transition)", metadata: ["service": "\(service)", "instance": "\(instance.id)"])
            handles.recordCircuitTransition(to: transition == .opened ? "open" : "closed")
        }
        if let ejection = effects.ejection {
            logger.warning(
                "instance ejected after consecutive failures",
                metadata: ["service": "\(service)", "instance": "\(instance.id)", "for": "\(ejection.duration)"])
            handles.ejections.increment()
            discovery.report(
                .ejected, about: instance,
                reason:
                    "\(policy.outlierDetection?.consecutiveFailures ?? 0) consecutive failed calls "
                    + "(ejection \(ejection.count) in a row)",
                duration: ejection.duration)
        }
        return outcome
    }

    /// `instance`'s metric handles, made the first time it is called.
    private func instanceMetrics(for instance: InstanceID) -> CallMetrics.InstanceHandles {
        if let handles = state.withLock({ $0.instanceMetrics[instance] }) { return handles }
        let made = metrics.handles(for: instance)
        return state.withLock { state in
            if let existing = state.instanceMetrics[instance] { return existing }
            state.instanceMetrics[instance] = made
            return made
        }
    }

    /// One attempt on `instance`: the attempt timeout covers the whole answer, head and body, as Envoy's per-try
    /// timeout does; an instance that sends a head and then stalls is a timed-out attempt, not a 30 s wait.
    private func attempt(_ request: ServiceRequest, on instance: Instance) async -> AttemptOutcome {
        let address = instance.definition.address.rawValue
        let host = address.contains(":") ? "[\(address)]" : address
        var call = HTTPClientRequest(url: "http://\(host):\(instance.definition.port)\(request.path)")
        call.method = request.method
        call.headers = request.headers
        if let body = request.body { call.body = .bytes(body) }
        let timeout = TimeAmount.nanoseconds(policy.attemptTimeout.nanoseconds)
        let deadline = ContinuousClock.now + policy.attemptTimeout
        do {
            let response = try await httpClient.execute(call, timeout: timeout)
            let body = try await Self.collect(response.body, upTo: policy.maximumResponseBytes, before: deadline)
            let answer = ServiceResponse(
                status: response.status, headers: response.headers, body: body, instance: instance, attempts: 1)
            return response.status.code >= 500 ? .serverError(answer) : .answered(answer)
        } catch {
            if Task.isCancelled || error is CancellationError { return .cancelled }
            let failure = TransportFailure(error)
            let where_ = "\(service)/\(instance.id) at \(host):\(instance.definition.port)"
            switch failure {
            case .refused, .connectTimedOut, .certificateRejected:
                return .notSent(SwitchboardClientError(.instanceFailed, "\(where_): \(failure)"))
            case .timedOut:
                return .failed(
                    SwitchboardClientError(.timedOut, "\(where_) did not answer in \(policy.attemptTimeout)"))
            case .other(let text):
                return .failed(SwitchboardClientError(.instanceFailed, "\(where_) failed: \(text)"))
            }
        }
    }
}

extension ServiceClient {
    /// The body, read before `deadline` (AsyncHTTPClient's own deadline ends with the head). Past it the read is
    /// cancelled, which closes the connection, and the attempt has timed out.
    static func collect(
        _ body: HTTPClientResponse.Body, upTo limit: Int, before deadline: ContinuousClock.Instant
    ) async throws -> ByteBuffer {
        try await withThrowingTaskGroup(of: ByteBuffer?.self) { group in
            group.addTask { try await body.collect(upTo: limit) }
            group.addTask {
                try await Task.sleep(until: deadline)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let collected = first else {
                throw HTTPClientError.deadlineExceeded
            }
            return collected
        }
    }
}

/// What call sites share unless told otherwise.
public enum ServiceClientDefaults {
    /// The HTTP client of call sites created without one; it lives as long as the process, like
    /// `HTTPClient.shared`.
    public static let httpClient: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.timeout.connect = .seconds(1)
        configuration.timeout.read = .seconds(30)
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.redirectConfiguration = .disallow
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()
}

import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import SwitchboardCore
import Synchronization

/// Client-side discovery: the instances of the services a process calls, kept current by the agent's watch
/// stream and answered from memory.
///
/// Shaped like the Swift server ecosystem's service-discovery idiom: ``lookup(_:deadline:)-(ServiceName,_)`` for a one-shot answer
/// and ``subscribe(to:)-(ServiceName)`` for an `AsyncSequence` of snapshots (the current one first, then one per change). The
/// first lookup of a service asks the agent directly and starts following the service's event stream; later ones
/// are answered from the cache. When the stream cannot be had, a blocking query keeps the cache fresh; when no agent
/// answers at all, the last known instances are kept and served (see ``DiscoverySnapshot/staleness(at:)``).
///
/// It is a swift-service-lifecycle `Service`: run it in the process's `ServiceGroup` (its ``run()`` hosts the
/// watch streams and ends them on graceful shutdown). Without ``run()`` running, lookups still work, each one
/// asking the agent.
///
/// ```swift
/// let discovery = ServiceDiscovery(connection: AgentConnection())
/// // in a ServiceGroup with the rest of the process:
/// let payments = try await discovery.lookup("payment")
/// for await snapshot in discovery.subscribe(to: "payment") { ... }
/// ```
public final class ServiceDiscovery: Service, Sendable {
    /// How discovery follows services.
    public struct Configuration: Sendable {
        /// Which instances a lookup returns (healthy ones by default).
        public var query: InstanceQuery
        /// Waits between reconnection attempts when a stream drops.
        public var reconnectBackoff: Backoff
        /// How long a blocking query is held while the stream cannot be had.
        public var fallbackWait: Duration
        /// The name this process gives when it reports an observation to the agent (see
        /// ``report(_:about:reason:duration:)``): by default the program's name and process id, such as `cart/4711`.
        public var reporter: String

        public init(
            query: InstanceQuery = InstanceQuery(),
            reconnectBackoff: Backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(2)),
            fallbackWait: Duration = .seconds(10),
            reporter: String = "\(ProcessInfo.processInfo.processName)/\(ProcessInfo.processInfo.processIdentifier)"
        ) {
            self.query = query
            self.reconnectBackoff = reconnectBackoff
            self.fallbackWait = fallbackWait
            self.reporter = reporter
        }
    }

    private struct Entry {
        var snapshot: DiscoverySnapshot?
        var instances: [InstanceID: Instance] = [:]
        var subscribers: [Int: AsyncStream<DiscoverySnapshot>.Continuation] = [:]
        var watched = false
    }

    private struct State {
        var entries: [ServiceName: Entry] = [:]
        var nextSubscriber = 0
        var running = false
        /// Set for ``init(fixed:)``: answers come from the cache only.
        var fixed = false
    }

    public let connection: AgentConnection
    /// The typed API over ``connection``.
    public let agent: AgentClient
    public let configuration: Configuration
    let logger: Logger
    private let state = Mutex(State())
    private let watchRequests: AsyncStream<ServiceName>
    private let watchRequestsContinuation: AsyncStream<ServiceName>.Continuation
    let reports: AsyncStream<ObservationReport>
    let reportsContinuation: AsyncStream<ObservationReport>.Continuation

    public init(connection: AgentConnection, configuration: Configuration = Configuration(), logger: Logger? = nil) {
        self.connection = connection
        self.agent = AgentClient(connection: connection)
        self.configuration = configuration
        self.logger = logger ?? Logger(label: "switchboard.discovery", factory: { _ in SwiftLogNoOpLogHandler() })
        (watchRequests, watchRequestsContinuation) = AsyncStream.makeStream()
        // A burst of ejections (a whole zone failing) must not queue without bound: past 64, the newest are dropped.
        (reports, reportsContinuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingOldest(64))
    }

    /// A discovery that knows exactly `services` and never contacts an agent: for tests of code that takes a
    /// ``ServiceDiscovery`` (and for benchmarks of the call path). ``setInstances(_:of:)`` changes what it knows.
    public convenience init(fixed services: [ServiceName: [Instance]]) {
        self.init(connection: AgentConnection(configuration: .init(agents: ["http://127.0.0.1:1"])))
        state.withLock { $0.fixed = true }
        for (service, instances) in services { setInstances(instances, of: service) }
    }

    /// Replaces what a ``init(fixed:)`` discovery knows of `service`; subscribers get the new snapshot.
    public func setInstances(_ instances: [Instance], of service: ServiceName) {
        let index = (state.withLock { $0.entries[service]?.snapshot?.index } ?? 0) + 1
        replace(service, with: instances, index: index, isLive: true)
    }

    // MARK: Lookups

    /// The instances of `service` passing the configured query.
    ///
    /// Answers from the cache once the service is followed; the first time, asks the agent. Throws
    /// ``SwitchboardClientError/Code/agentUnreachable`` only when no agent answers and nothing is known yet, and
    /// ``SwitchboardClientError/Code/timedOut`` when `deadline` passes first.
    public func lookup(
        _ service: ServiceName, deadline: ContinuousClock.Instant? = nil
    ) async throws(SwitchboardClientError) -> [Instance] {
        try await snapshot(of: service, deadline: deadline).instances.instances
    }

    /// ``lookup(_:deadline:)-(ServiceName,_)`` by name; an invalid name is refused before any request.
    public func lookup(
        _ service: String, deadline: ContinuousClock.Instant? = nil
    ) async throws(SwitchboardClientError)
        -> [Instance]
    {
        try await lookup(try Self.serviceName(service), deadline: deadline)
    }

    /// The whole snapshot of `service`, with its freshness; see ``lookup(_:deadline:)-(ServiceName,_)``.
    public func snapshot(
        of service: ServiceName, deadline: ContinuousClock.Instant? = nil
    ) async throws(SwitchboardClientError) -> DiscoverySnapshot {
        let (cached, running, fixed) = state.withLock { ($0.entries[service]?.snapshot, $0.running, $0.fixed) }
        if fixed { return cached ?? Self.snapshot(service, [:], index: 0, isLive: true) }
        startWatching(service)
        // While the stream runs, the cache is the answer (live, or the last known when the agents are gone).
        if let cached, running { return cached }
        let timeout = deadline.map { max(.zero, $0 - .now) }
        do throws(SwitchboardClientError) {
            let lookup: ServiceLookup
            do {
                lookup = try await agent.lookup(service, matching: configuration.query, timeout: timeout)
            } catch let error where error.code == .refused && error.status == .notFound {
                throw SwitchboardClientError(
                    .unknownService, "the agent refused the lookup of \(service): 404", status: error.status,
                    apiError: error.apiError)
            }
            return replace(service, with: lookup.instances, index: lookup.index, isLive: false)
        } catch {
            if let cached { return cached }
            if let deadline, ContinuousClock.now >= deadline {
                throw SwitchboardClientError(
                    .timedOut, "no answer about \(service) before the deadline: \(error.message)")
            }
            throw error
        }
    }

    /// The cached snapshot of `service`, without waiting (nil until it was looked up or subscribed to once).
    ///
    /// The hot path of a call: no lock beyond one read, no allocation.
    public func cachedSnapshot(of service: ServiceName) -> DiscoverySnapshot? {
        state.withLock { $0.entries[service]?.snapshot }
    }

    /// Snapshots of `service`: the current one (as soon as it is known), then one after every change, until the
    /// consumer stops iterating or discovery stops. Only the newest is buffered: a slow consumer skips to it.
    public func subscribe(to service: ServiceName) -> AsyncStream<DiscoverySnapshot> {
        let (stream, continuation) = AsyncStream.makeStream(
            of: DiscoverySnapshot.self, bufferingPolicy: .bufferingNewest(1))
        let id = state.withLock { state in
            defer { state.nextSubscriber += 1 }
            state.entries[service, default: Entry()].subscribers[state.nextSubscriber] = continuation
            if let snapshot = state.entries[service]?.snapshot { continuation.yield(snapshot) }
            return state.nextSubscriber
        }
        continuation.onTermination = { [weak self] _ in
            self?.state.withLock { _ = $0.entries[service]?.subscribers.removeValue(forKey: id) }
        }
        startWatching(service)
        return stream
    }

    /// ``subscribe(to:)-(ServiceName)`` by name; an invalid name is refused.
    public func subscribe(to service: String) throws(SwitchboardClientError) -> AsyncStream<DiscoverySnapshot> {
        subscribe(to: try Self.serviceName(service))
    }

    static func serviceName(_ text: String) throws(SwitchboardClientError) -> ServiceName {
        do {
            return try ServiceName(text)
        } catch {
            throw SwitchboardClientError(.unknownService, "'\(text)' is not a service name: \(error.message)")
        }
    }

    // MARK: Following services

    /// Follows every service asked for until graceful shutdown (or cancellation), then ends every subscription.
    ///
    /// Run it once.
    public func run() async throws {
        state.withLock { $0.running = true }
        await withDiscardingTaskGroup { group in
            group.addTask { await self.sendReports() }
            for await service in watchRequests.cancelOnGracefulShutdown() {
                group.addTask { await self.follow(service) }
            }
            group.cancelAll()
        }
        let subscribers = state.withLock { state in
            state.running = false
            return state.entries.values.flatMap { $0.subscribers.values }
        }
        for subscriber in subscribers { subscriber.finish() }
    }

    private func startWatching(_ service: ServiceName) {
        let start = state.withLock { state in
            guard !state.fixed, state.entries[service]?.watched != true else { return false }
            state.entries[service, default: Entry()].watched = true
            return true
        }
        if start { watchRequestsContinuation.yield(service) }
    }

    /// Keeps `service`'s snapshot current until cancelled: the event stream when it can be had, blocking queries
    /// while it cannot, the last known instances when nothing answers.
    private func follow(_ service: ServiceName) async {
        var resume: (agent: String, eventID: String)?
        var failures = 0
        while !Task.isCancelled {
            let agent = connection.currentAgent
            do {
                // An event id means something only to the agent that sent it: another agent starts from a snapshot.
                try await stream(
                    service, from: agent, resumingAfter: resume?.agent == agent ? resume?.eventID : nil,
                    connected: { failures = 0 }, delivered: { resume = (agent, $0) })
            } catch let refusal as SwitchboardClientError where refusal.code == .refused {
                logger.debug("watch refused", metadata: ["service": "\(service)", "error": "\(refusal)"])
            } catch {
                if Task.isCancelled { break }
                // The agent could not be reached or the connection dropped: the next attempt goes to the next agent.
                connection.reportUnreachable(agent)
                logger.debug(
                    "watch stream interrupted",
                    metadata: ["service": "\(service)", "agent": "\(agent)", "error": "\(error)"])
            }
            markNotLive(service)
            guard !Task.isCancelled else { return }
            failures += 1
            if failures > 1, await blockingQueryRound(service) {
                // The cache now holds the blocking query's answer: resuming the stream from an older event would
                // replay changes over it.
                resume = nil
            }
            try? await Task.sleep(for: configuration.reconnectBackoff.delay(forAttempt: failures - 1))
        }
    }

    /// Reads `service`'s event stream from `agent` until it ends; `delivered` is told each event id.
    private func stream(
        _ service: ServiceName, from agent: String, resumingAfter eventID: String?,
        connected: () -> Void, delivered: (String) -> Void
    ) async throws {
        let stream = try await self.agent.openWatch(
            service, matching: configuration.query, resumingAfter: eventID, on: agent)
        connected()
        if eventID != nil {
            // The agent accepted the resumption: the cache is current as of the last event, and only changes since
            // will follow (a snapshot comes instead when the agent no longer holds them).
            markLive(service)
        }
        for try await event in stream {
            try apply(event, to: service)
            if let id = event.raw.id { delivered(id) }
        }
    }

    /// Applies one stream event to the cache; throws for a change it cannot read (the cache cannot skip one: the
    /// stream is opened again, and another agent, or a snapshot, may do better).
    private func apply(_ event: WatchEvent, to service: ServiceName) throws(SwitchboardClientError) {
        let change: ChangeEvent
        switch event.content {
        case .snapshot(let snapshot):
            replace(service, with: snapshot.instances, index: snapshot.index, isLive: true)
            return
        case .change(let event) where event.kind != .observed:
            change = event
        case .unreadable(let error) where event.raw.event != ChangeEvent.Kind.observed.rawValue:
            throw error
        case .change, .other, .unreadable:
            // Observations (read or not) and unknown kinds (from a newer agent) change no instance.
            return
        }
        update(service, index: change.index) { instances in
            // A stream with filters sends a change when the instance matched before or after it: keep it only if
            // it matches now.
            if change.kind != ChangeEvent.Kind.removed, configuration.query.matches(change.instance) {
                instances[change.id] = change.instance
            } else {
                instances[change.id] = nil
            }
        }
    }

    /// One blocking query for `service`, used while its stream cannot be had; returns whether it answered.
    private func blockingQueryRound(_ service: ServiceName) async -> Bool {
        let index = state.withLock { $0.entries[service]?.snapshot?.index } ?? 0
        let wait = configuration.fallbackWait
        guard
            let lookup = try? await agent.lookup(
                service, matching: configuration.query, blocking: BlockingQuery(index: index, wait: wait),
                timeout: wait + .seconds(2))
        else { return false }
        replace(service, with: lookup.instances, index: lookup.index, isLive: false)
        return true
    }

    // MARK: The cache

    /// Replaces the instances of `service`. An answer that is not from the stream (a lookup, a blocking query)
    /// never replaces what the stream delivered, nor anything newer: it may have been sent before either.
    @discardableResult
    private func replace(
        _ service: ServiceName, with instances: [Instance], index: UInt64, isLive: Bool
    ) -> DiscoverySnapshot {
        let matching = instances.filter(configuration.query.matches)
        return publish(service) { entry in
            if !isLive, let current = entry.snapshot, current.isLive || current.index > index { return nil }
            entry.instances = Dictionary(matching.map { ($0.id, $0) }, uniquingKeysWith: { _, last in last })
            return Self.snapshot(service, entry.instances, index: index, isLive: isLive)
        }
    }

    private func update(_ service: ServiceName, index: UInt64, _ change: (inout [InstanceID: Instance]) -> Void) {
        publish(service) { entry in
            change(&entry.instances)
            return Self.snapshot(service, entry.instances, index: index, isLive: true)
        }
    }

    private func markLive(_ service: ServiceName) {
        publish(service) { entry in
            guard let snapshot = entry.snapshot, !snapshot.isLive else { return nil }
            return snapshot.with(isLive: true, confirmedAt: .now)
        }
    }

    private func markNotLive(_ service: ServiceName) {
        publish(service) { entry in
            guard let snapshot = entry.snapshot, snapshot.isLive else { return nil }
            return snapshot.with(isLive: false, confirmedAt: .now)
        }
    }

    /// Stores the snapshot `make` builds (nil: no change) and hands it to the subscribers.
    @discardableResult
    private func publish(
        _ service: ServiceName, _ make: (inout Entry) -> DiscoverySnapshot?
    ) -> DiscoverySnapshot {
        // Subscribers are handed the snapshot under the lock (yielding never blocks), so two publishers cannot
        // deliver out of order and leave a subscriber holding the older one.
        let snapshot = state.withLock { state -> DiscoverySnapshot? in
            var entry = state.entries[service] ?? Entry()
            defer { state.entries[service] = entry }
            guard let snapshot = make(&entry) else { return entry.snapshot }
            entry.snapshot = snapshot
            for subscriber in entry.subscribers.values { subscriber.yield(snapshot) }
            return snapshot
        }
        return snapshot ?? Self.snapshot(service, [:], index: 0, isLive: false)
    }

    private static func snapshot(
        _ service: ServiceName, _ instances: [InstanceID: Instance], index: UInt64, isLive: Bool
    ) -> DiscoverySnapshot {
        DiscoverySnapshot(
            service: service, instances: InstanceSet(instances.values.sorted { $0.id < $1.id }), index: index,
            isLive: isLive, confirmedAt: .now)
    }
}

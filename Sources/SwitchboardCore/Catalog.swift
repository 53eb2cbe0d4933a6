import HashTreeCollections
import Synchronization

import struct Foundation.Date

/// The live catalog: safe to read from any task at any time, written through one committing writer.
///
/// Reads take a lock only long enough to grab the one service they need (the catalog's dictionaries are
/// persistent, so that is a reference, not a copy, and the writer's next change copies only the path it touches),
/// then filter outside the lock: a lookup costs the size of its service, never the size of the catalog. Hot reads
/// answer from each instance's JSON, encoded once per change.
///
/// Writes are queued and committed by ``runWriter()`` in batches (group commit): each batch is planned against the
/// current state, made durable by the ``CatalogStore`` in one transaction, applied in memory, and only then
/// acknowledged. Readers therefore never see a change that a crash could take back.
///
/// ```swift
/// let catalog = try await Catalog.load(from: InMemoryCatalogStore())
/// async let writer: Void = catalog.runWriter()
/// _ = try await catalog.register(definition)
/// ```
public final class Catalog: Sendable {
    /// Tunables, with defaults that suit a single agent.
    public struct Configuration: Sendable {
        /// How many recent events stay in memory for `GET /v1/events` and watch resumption.
        public var eventCapacity: Int
        /// The most writes committed in one store transaction.
        public var maximumBatch: Int

        public init(eventCapacity: Int = 4096, maximumBatch: Int = 512) {
            self.eventCapacity = eventCapacity
            self.maximumBatch = maximumBatch
        }
    }

    /// What a successful write returns.
    public struct WriteOutcome: Sendable {
        /// The instance after the change (for a deregistration, as it was when removed).
        public var instance: Instance
        /// The change, or `nil` when the write changed nothing.
        public var event: ChangeEvent?
        /// The catalog index once the write is applied.
        public var index: UInt64
        /// The instance as JSON when the write changed it (encoded once, by the writer).
        public var instanceJSON: [UInt8]?
    }

    private struct PendingWrite {
        var mutation: CatalogMutation
        var continuation: CheckedContinuation<WriteOutcome, any Error>
    }

    private struct WriteQueue {
        var pending: [PendingWrite] = []
        var closed = false
    }

    /// Called with each applied batch's changes (events and their encodings) before its writes are acknowledged.
    public typealias ChangeObserver = @Sendable ([CommittedChange]) -> Void

    private let state: Mutex<CatalogState>
    private let observers = Mutex<[ChangeObserver]>([])
    private let queue = Mutex(WriteQueue())
    private let wakeups: AsyncStream<Void>
    private let wakeupSignal: AsyncStream<Void>.Continuation
    private let store: any CatalogStore
    private let configuration: Configuration

    private init(state: CatalogState, store: any CatalogStore, configuration: Configuration) {
        self.state = Mutex(state)
        self.store = store
        self.configuration = configuration
        (wakeups, wakeupSignal) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Loads the catalog from `store`.
    public static func load(
        from store: any CatalogStore, configuration: Configuration = Configuration()
    ) async throws
        -> Catalog
    {
        let stored = try await store.load()
        return Catalog(
            state: CatalogState(restoring: stored, eventCapacity: configuration.eventCapacity),
            store: store,
            configuration: configuration
        )
    }

    // MARK: Writes

    /// Registers or updates an instance; with `cas`, only if its modify index still equals `cas` (0: only create).
    public func register(_ definition: InstanceDefinition, cas: UInt64? = nil) async throws -> WriteOutcome {
        try await submit(.register(definition, cas: cas))
    }

    /// Removes an instance; throws ``CatalogError/instanceNotFound(service:id:)`` when it is not registered.
    public func deregister(service: ServiceName, id: InstanceID) async throws -> WriteOutcome {
        try await submit(.deregister(service: service, id: id))
    }

    /// Turns maintenance (drain) on or off for an instance.
    public func setMaintenance(
        service: ServiceName, id: InstanceID, enabled: Bool, reason: String = ""
    ) async throws
        -> WriteOutcome
    {
        try await submit(.maintenance(service: service, id: id, enabled: enabled, reason: reason))
    }

    /// Logs what a client saw of an instance as an `observed` event; the instance and its health stay as they are.
    /// Throws ``CatalogError/instanceNotFound(service:id:)`` when the instance is not registered.
    public func recordObservation(
        _ observation: Observation, service: ServiceName, id: InstanceID
    ) async throws -> WriteOutcome {
        try await submit(.observe(service: service, id: id, observation: observation))
    }

    /// Records a check's new status (the health checker's verdict after its thresholds) as a change event.
    public func recordCheckStatus(_ update: CheckStatusUpdate) async throws -> WriteOutcome {
        try await submit(.checkStatus(update))
    }

    /// Replaces the output of check `checkID` of instance `key` while its status stays `status`, in memory and
    /// without a new index (see ``CatalogState/replaceOutput(of:with:encoded:)``).
    ///
    /// Returns `false` when the check is gone, was redefined or has another status: the result is stale.
    @discardableResult
    public func replaceCheckOutput(
        _ key: InstanceKey, checkID: String, definition: CheckDefinition, status: HealthStatus, output: String
    ) -> Bool {
        guard let current = state.withLock({ $0.instance(key) }),
            let position = current.checks.firstIndex(where: { $0.id == checkID }),
            current.checks[position].definition == definition, current.checks[position].status == status
        else { return false }
        let capped = CheckState.capped(output)
        if current.checks[position].output == capped { return true }
        var updated = current
        updated.checks[position].output = capped
        // Encoded outside the lock; the swap below refuses it if the writer changed the instance meanwhile.
        let encoded = CommittedChange.encode(updated)
        return state.withLock { $0.replaceOutput(of: current, with: updated, encoded: encoded) }
    }

    /// Registers `observer` to be told of every applied change, before the writes that made it are acknowledged.
    ///
    /// So a component that mirrors the catalog (the health checker's heartbeat table, say) is never behind a
    /// client that saw its write acknowledged. The observer runs on the writer: it must be quick and must not wait.
    public func addChangeObserver(_ observer: @escaping ChangeObserver) {
        observers.withLock { $0.append(observer) }
    }

    /// Queues `mutation` for the writer and waits until it is durable and applied (or refused).
    public func submit(_ mutation: CatalogMutation) async throws -> WriteOutcome {
        try await withCheckedThrowingContinuation { continuation in
            let accepted = queue.withLock { queue in
                guard !queue.closed else { return false }
                queue.pending.append(PendingWrite(mutation: mutation, continuation: continuation))
                return true
            }
            if accepted {
                wakeupSignal.yield()
            } else {
                continuation.resume(throwing: CatalogError.unavailable)
            }
        }
    }

    /// Commits queued writes until ``finishWrites()`` is called or the calling task is cancelled.
    ///
    /// Run it exactly once, for as long as the catalog takes writes (the agent runs it as a service). After
    /// ``finishWrites()`` it commits what was already queued, then returns; on cancellation it fails the writes
    /// still queued with ``CatalogError/unavailable``. Either way no caller waits forever.
    public func runWriter() async {
        await withTaskCancellationHandler {
            for await _ in wakeups {
                while await commitNextBatch() {}
            }
            // A write queued just before finishWrites() may have lost its wake-up to the finished stream.
            while await commitNextBatch() {}
        } onCancel: {
            finishWrites()
        }
        failQueuedWrites()
    }

    /// Stops taking writes: later ones fail with ``CatalogError/unavailable``; queued ones are still committed.
    ///
    /// The graceful way to stop ``runWriter()``: call it once the HTTP server no longer takes requests.
    public func finishWrites() {
        queue.withLock { $0.closed = true }
        wakeupSignal.finish()
    }

    /// The number of writes waiting for the writer (a gauge of write pressure).
    public var queuedWrites: Int { queue.withLock { $0.pending.count } }

    private func failQueuedWrites() {
        let leftover = queue.withLock { queue in
            queue.closed = true
            defer { queue.pending = [] }
            return queue.pending
        }
        for write in leftover {
            write.continuation.resume(throwing: CatalogError.unavailable)
        }
    }

    /// Commits one batch; returns `false` when the queue was empty or the writer was cancelled.
    private func commitNextBatch() async -> Bool {
        // A cancelled writer commits nothing more: the store would refuse it anyway, and the callers learn at once.
        guard !Task.isCancelled else { return false }
        let batch = queue.withLock { queue in
            let count = min(queue.pending.count, configuration.maximumBatch)
            defer { queue.pending.removeFirst(count) }
            return Array(queue.pending.prefix(count))
        }
        guard !batch.isEmpty else { return false }

        let now = SwitchboardJSON.millisecondPrecision(Date())
        // Writes in one batch may touch the same instance; later ones are planned against earlier ones' results,
        // which are not durable yet: if the commit fails, every write to a key the batch changed fails with it.
        var planned: [InstanceKey: Instance?] = [:]
        var changes: [CommittedChange] = []
        var outcomes: [Result<WriteOutcome, CatalogError>] = []
        let current = state.withLock { state in
            (index: state.index, instances: batch.map { state.instance($0.mutation.key) })
        }
        for (position, write) in batch.enumerated() {
            let key = write.mutation.key
            let before = planned[key] ?? current.instances[position]
            let index = current.index + UInt64(changes.count) + 1
            do {
                if let event = try CatalogState.plan(write.mutation, current: before, index: index, at: now) {
                    let change = CommittedChange(event: event, previous: before)
                    changes.append(change)
                    planned[key] = .some(event.kind == .removed ? nil : event.instance)
                    outcomes.append(
                        .success(
                            WriteOutcome(
                                instance: event.instance, event: event, index: 0, instanceJSON: change.instanceJSON))
                    )
                } else if let before {
                    outcomes.append(.success(WriteOutcome(instance: before, event: nil, index: 0, instanceJSON: nil)))
                } else {
                    outcomes.append(.failure(.storeFailed("a write planned no change for a missing instance")))
                }
            } catch {
                outcomes.append(.failure(error))
            }
        }

        var storeError: CatalogError?
        if !changes.isEmpty {
            do {
                try await store.commit(changes)
            } catch {
                storeError = error is CancellationError ? .unavailable : .storeFailed(String(describing: error))
            }
        }
        let index = state.withLock { state in
            if storeError == nil {
                for change in changes { state.apply(change) }
            }
            return state.index
        }
        if storeError == nil, !changes.isEmpty {
            for observer in observers.withLock({ $0 }) { observer(changes) }
        }
        for (write, outcome) in zip(batch, outcomes) {
            if let storeError, planned[write.mutation.key] != nil {
                write.continuation.resume(throwing: storeError)
                continue
            }
            switch outcome {
            case .success(var result):
                result.index = index
                write.continuation.resume(returning: result)
            case .failure(let error):
                write.continuation.resume(throwing: error)
            }
        }
        return true
    }

    // MARK: Reads

    /// The index of the latest change.
    public var index: UInt64 { state.withLock { $0.index } }

    /// The index of `service`'s latest change (0 if it never had an instance): what a blocking query on it waits past.
    public func serviceIndex(_ service: ServiceName) -> UInt64 {
        state.withLock { $0.services[service]?.index ?? 0 }
    }

    /// `service`'s index and output revision: together they change whenever any answer about the service would.
    public func serviceVersion(_ service: ServiceName) -> (index: UInt64, outputRevision: UInt64) {
        state.withLock { state in
            let entry = state.services[service]
            return (entry?.index ?? 0, entry?.outputRevision ?? 0)
        }
    }

    /// The instances of `service` that pass `query`, sorted by id, with the service's own index.
    public func instances(of service: ServiceName, matching query: InstanceQuery = InstanceQuery()) -> ServiceLookup {
        let (catalogIndex, entry) = state.withLock { ($0.index, $0.services[service]) }
        guard let entry else { return ServiceLookup(service: service, index: catalogIndex, instances: []) }
        let instances = entry.instances.values.filter(query.matches).sorted { $0.id < $1.id }
        return ServiceLookup(service: service, index: entry.index, instances: instances)
    }

    /// The instances of `service` that pass `query`, in no order: for readers that shuffle or pick anyway (DNS),
    /// which need not pay for the sort.
    public func unorderedInstances(
        of service: ServiceName, matching query: InstanceQuery = InstanceQuery()
    ) -> [Instance] {
        guard let entry = state.withLock({ $0.services[service] }) else { return [] }
        return entry.instances.values.filter(query.matches)
    }

    /// The same answer as ``instances(of:matching:)`` as JSON, built from each instance's cached encoding.
    ///
    /// The hot path of the API: no instance is encoded again, so a lookup costs a filter, a sort and a copy.
    public func instancesJSON(
        of service: ServiceName, matching query: InstanceQuery = InstanceQuery()
    ) -> (
        index: UInt64, body: [UInt8]
    ) {
        let (catalogIndex, entry) = state.withLock { ($0.index, $0.services[service]) }
        // A service never registered answers with the catalog's index, not 0: a blocking query sent back with it
        // then waits for the service to appear instead of answering at once, again and again.
        let index = entry?.index ?? catalogIndex
        var json = JSONText()
        json.append(#"{"index":\#(index),"instances":["#)
        if let entry { _ = Self.appendInstances(of: entry, matching: query, to: &json, first: true) }
        json.append(#"],"service":"\#(service.rawValue)"}"#)
        return (index, json.bytes)
    }

    /// What an event stream starts from: the instances of `service` (nil: of every service) that pass `query`, as
    /// JSON, with the catalog index they are current at (the stream's first event id) and their keys.
    ///
    /// The index is the whole catalog's, read with the instances under one lock, so every change after it is one
    /// the snapshot does not hold.
    public func watchSnapshot(of service: ServiceName?, matching query: InstanceQuery) -> WatchSnapshot {
        let (index, services) = state.withLock { state in
            (state.index, service.map { name in state.services[name].map { [name: $0] } ?? [:] } ?? state.services)
        }
        var json = JSONText()
        json.append(#"{"index":\#(index),"instances":["#)
        var keys: [InstanceKey] = []
        var first = true
        for (_, entry) in services.sorted(by: { $0.key < $1.key }) {
            let listed = Self.appendInstances(of: entry, matching: query, to: &json, first: first)
            first = first && listed.isEmpty
            keys += listed
        }
        json.append(service.map { #"],"service":"\#($0.rawValue)"}"# } ?? "]}")
        return WatchSnapshot(index: index, keys: keys, body: json.bytes)
    }

    /// Appends the cached JSON of `entry`'s instances that pass `query`, sorted by id, comma-separated (with a
    /// leading comma unless `first`); returns their keys.
    private static func appendInstances(
        of entry: ServiceEntry, matching query: InstanceQuery, to json: inout JSONText, first: Bool
    ) -> [InstanceKey] {
        let matching = entry.instances.values.filter(query.matches).sorted { $0.id < $1.id }
        for (position, instance) in matching.enumerated() {
            if position > 0 || !first { json.append(",") }
            json.bytes += entry.encodedInstances[instance.id] ?? CommittedChange.encode(instance)
        }
        return matching.map { InstanceKey(service: $0.service, id: $0.id) }
    }

    /// One instance as JSON (its cached encoding), with its service's index; `nil` when not registered.
    public func instanceJSON(service: ServiceName, id: InstanceID) -> (index: UInt64, body: [UInt8]?) {
        let (catalogIndex, entry) = state.withLock { ($0.index, $0.services[service]) }
        return (entry?.index ?? catalogIndex, entry?.encodedInstances[id])
    }

    /// The same answer as ``services()`` as JSON, written by hand (the generic encoder is the cost of this call).
    public func servicesJSON() -> (index: UInt64, body: [UInt8]) {
        let (index, services) = state.withLock { ($0.index, $0.services) }
        // Each service's summary is encoded when the service changes; a request only sorts and joins them.
        let listed = services.filter { $0.value.counts.total > 0 }.sorted { $0.key < $1.key }
        var json = JSONText()
        json.append(#"{"index":\#(index),"services":["#)
        for (position, service) in listed.enumerated() {
            if position > 0 { json.append(",") }
            json.bytes += service.value.encodedSummary
        }
        json.append("]}")
        return (index, json.bytes)
    }

    /// One instance, with its service's index; `nil` when not registered.
    public func instance(service: ServiceName, id: InstanceID) -> (index: UInt64, instance: Instance?) {
        let (catalogIndex, entry) = state.withLock { ($0.index, $0.services[service]) }
        return (entry?.index ?? catalogIndex, entry?.instances[id])
    }

    /// Every service with at least one instance: names, tags and counts by status.
    public func services() -> ServiceList {
        let (index, services) = state.withLock { ($0.index, $0.services) }
        let summaries = services.compactMap { name, entry -> ServiceSummary? in
            guard entry.counts.total > 0 else { return nil }
            return ServiceSummary(
                name: name, index: entry.index, tags: entry.tagCounts.keys.sorted(), counts: entry.counts)
        }
        return ServiceList(index: index, services: summaries.sorted { $0.name < $1.name })
    }

    /// Every registered instance, with the catalog index they are current at.
    public func allInstances() -> (index: UInt64, instances: [Instance]) {
        let (index, services) = state.withLock { ($0.index, $0.services) }
        return (index, services.values.flatMap { $0.instances.values })
    }

    /// Totals for `GET /v1/agent`.
    public func summary() -> CatalogSummary {
        state.withLock { state in
            CatalogSummary(
                index: state.index,
                services: state.services.values.count { $0.counts.total > 0 },
                instances: state.instanceCount,
                counts: state.counts
            )
        }
    }

    /// Changes after `since`, from memory when the ring still holds them, else from the store's log.
    public func events(since: UInt64, limit: Int) async throws -> EventPage {
        let (index, recent) = state.withLock { ($0.index, $0.recentEvents(after: since, limit: limit)) }
        let events: [ChangeEvent]
        if let recent {
            events = recent
        } else {
            events = try await store.events(after: since, limit: limit)
        }
        // A gap between `since` and the first event held means older events were pruned from every log.
        let truncated = since < index && (events.first.map { $0.index > since + 1 } ?? true)
        return EventPage(index: index, events: events, truncated: truncated)
    }
}

/// The start of an event stream (see ``Catalog/watchSnapshot(of:matching:)``).
public struct WatchSnapshot: Sendable {
    /// The catalog index the snapshot is current at.
    public var index: UInt64
    /// The instances it holds.
    public var keys: [InstanceKey]
    /// `{"index": N, "instances": [...]}`, with `"service"` for a service's stream.
    public var body: [UInt8]
}

/// The answer to a service lookup.
public struct ServiceLookup: Sendable, Codable {
    public var service: ServiceName
    /// The index of the service's latest change (what a blocking query on it waits past).
    public var index: UInt64
    public var instances: [Instance]
}

/// One row of `GET /v1/services`.
public struct ServiceSummary: Sendable, Codable, Hashable {
    public var name: ServiceName
    public var index: UInt64
    public var tags: [String]
    public var counts: StatusCounts
}

/// The answer of `GET /v1/services`.
public struct ServiceList: Sendable, Codable {
    public var index: UInt64
    public var services: [ServiceSummary]
}

/// Catalog totals.
public struct CatalogSummary: Sendable, Codable {
    public var index: UInt64
    public var services: Int
    public var instances: Int
    public var counts: StatusCounts
}

/// A page of the change log.
public struct EventPage: Sendable, Codable {
    /// The catalog's index now.
    public var index: UInt64
    public var events: [ChangeEvent]
    /// `true` when events after the requested index are gone from every log: re-read the catalog instead.
    public var truncated: Bool
}

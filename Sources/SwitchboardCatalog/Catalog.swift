import HashTreeCollections
import SwitchboardCore
import Synchronization

import struct Foundation.Date

/// The live catalog: safe to read from any task at any time, changed only by what its store commits.
///
/// Reads take a lock only long enough to grab the one service they need (the catalog's dictionaries are
/// persistent, so that is a reference, not a copy, and the next change copies only the path it touches), then
/// filter outside the lock: a lookup costs the size of its service, never the size of the catalog. Hot reads
/// answer from each instance's JSON, encoded once per change.
///
/// Writes are queued and committed in batches (group commit) by ``run()``: each batch is planned against the
/// current state and committed by the ``CatalogStore`` in one transaction, which gives the changes their indexes
/// and checks that nothing changed under the plan. The catalog never applies its own writes directly: ``run()``
/// also follows the store's committed changes and applies each one, its own and any other writer's, and a write
/// is acknowledged once its changes are applied. Readers therefore never see a change that a crash could take
/// back, and a change made elsewhere reaches readers by the same path as a local one.
///
/// ```swift
/// let catalog = try await Catalog.load(from: InMemoryCatalogStore())
/// async let running: Void = catalog.run()
/// _ = try await catalog.register(definition)
/// ```
public final class Catalog: Sendable {
    /// Tunables, with defaults that suit a single agent.
    public struct Configuration: Sendable {
        /// How many recent events stay in memory for `GET /v1/events` and watch resumption.
        public var eventCapacity: Int
        /// The most writes committed in one store transaction.
        public var maximumBatch: Int
        /// How many times a batch is planned again after the store found that an instance changed under it (another
        /// writer got there first) before its writes fail with a conflict.
        public var maximumReplans: Int
        /// How long the writer waits, after such a refusal, for the change that caused it to be applied before it
        /// plans again anyway.
        public var catchUpWait: Duration
        /// How long a committed write waits to see its change applied before it is answered as unconfirmed.
        public var applyWait: Duration

        public init(
            eventCapacity: Int = 4096, maximumBatch: Int = 512, maximumReplans: Int = 8,
            catchUpWait: Duration = .seconds(1), applyWait: Duration = .seconds(30)
        ) {
            self.eventCapacity = eventCapacity
            self.maximumBatch = maximumBatch
            self.maximumReplans = maximumReplans
            self.catchUpWait = catchUpWait
            self.applyWait = applyWait
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
        /// The instance as JSON when the write changed it (encoded once, when committed).
        public var instanceJSON: [UInt8]?
    }

    /// Called with each applied commit's changes (events, encodings and the instances as they were before) before
    /// the writes that made them are acknowledged.
    public typealias ChangeObserver = @Sendable ([CommittedChange]) -> Void

    /// What one commit of the writer cost the store: for metrics.
    public struct CommitMeasurement: Sendable, Equatable {
        /// From handing the batch to the store until it answered.
        public var duration: Duration
        /// The changes committed together (the batch's size, as the store saw it).
        public var changes: Int
        /// Whether the store committed them (a refused precondition, a store out of reach or too large a batch
        /// is a failure).
        public var succeeded: Bool
    }

    /// Called after each commit the writer asks of the store, on the writer's task: it must be quick.
    public typealias CommitObserver = @Sendable (CommitMeasurement) -> Void

    let state: Mutex<CatalogState>
    let observers = Mutex<[ChangeObserver]>([])
    let commitObservers = Mutex<[CommitObserver]>([])
    let writes = WriteQueue()
    let applied = AppliedIndex()
    let store: any CatalogStore
    let configuration: Configuration

    private init(state: CatalogState, store: any CatalogStore, configuration: Configuration) {
        self.state = Mutex(state)
        self.store = store
        self.configuration = configuration
    }

    /// Loads the catalog from `store`.
    public static func load(
        from store: any CatalogStore, configuration: Configuration = Configuration()
    ) async throws -> Catalog {
        let stored = try await store.load()
        return Catalog(
            state: CatalogState(restoring: stored, eventCapacity: configuration.eventCapacity),
            store: store,
            configuration: configuration
        )
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
        // Encoded outside the lock; the swap below refuses it if a change applied meanwhile touched the instance.
        let encoded = CommittedChange.encode(updated)
        return state.withLock { $0.replaceOutput(of: current, with: updated, encoded: encoded) }
    }

    /// Registers `observer` to be told of every change applied from now on, before the writes that made it are
    /// acknowledged; returns the catalog index it starts after (every change above it reaches the observer).
    ///
    /// So a component that mirrors the catalog (the health checker's heartbeat table, say) is never behind a
    /// client that saw its write acknowledged. The observer runs on the task that applies changes: it must be quick
    /// and must not wait.
    @discardableResult
    public func addChangeObserver(_ observer: @escaping ChangeObserver) -> UInt64 {
        // Under the state's lock, which applying a change also holds: no change falls between the index returned
        // and the first one the observer sees.
        state.withLock { state in
            observers.withLock { $0.append(observer) }
            return state.index
        }
    }

    /// Registers `observer` to be told what each commit from now on took and how many changes it held.
    public func addCommitObserver(_ observer: @escaping CommitObserver) {
        commitObservers.withLock { $0.append(observer) }
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
        if let recent { return EventPage(index: index, events: recent, truncated: false) }
        let page = try await store.events(after: since, limit: limit)
        // Older events pruned from every log: the caller missed changes it can only learn by reading the catalog.
        return EventPage(index: index, events: page.events, truncated: !page.complete)
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

/// Catalog totals.
public struct CatalogSummary: Sendable, Codable {
    public var index: UInt64
    public var services: Int
    public var instances: Int
    public var counts: StatusCounts
}

import Foundation
import Logging
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardEtcd
import Synchronization

/// The catalog in etcd, shared by every agent of a cluster: cluster mode's `CatalogStore`.
///
/// Keys, under the prefix (default `/switchboard/`):
/// - `catalog/instances/<service>/<id>`: each instance as JSON. Its modify revision is the instance's modify index,
///   so a commit's precondition is a compare of that revision, and two agents writing one instance never lose an
///   update.
/// - `catalog/services/<service>`: written by every commit that removes an instance of the service. A service's index
///   is the newest modify revision among its instance keys and this key, so it never goes back when an instance
///   goes, also after the last one; registrations and status changes write no service key.
/// - `catalog/log/<time>-<writer>-<sequence>`: one per commit, the commit's changes as events. Watching the log keys
///   therefore yields every commit whole, in revision order, by whichever agent made it; the event log is the same
///   keys read by modify revision. Old entries are pruned by ``maintain()``.
/// - `catalog-meta/pruned-through`: the newest revision pruned from the log (outside the watched range).
///
/// A commit is one etcd transaction, acknowledged once etcd has committed it (by a quorum). Its log key must not
/// exist yet, which makes sending it again harmless: a commit whose answer was lost with a member is sent to the
/// next member, and either happens once or is found already done.
public final class EtcdCatalogStore: CatalogStore {
    public struct Configuration: Sendable {
        /// The prefix of every key (ends with `/`).
        public var prefix: String
        /// Names this agent's commits in the log keys (unique per process).
        public var writerID: String
        /// How many commits the log keeps.
        public var logRetention: Int
        /// How many commits load reads back into the in-memory event ring.
        public var recentCommitsOnLoad: Int
        /// Instances read per call at load.
        public var loadPageSize: Int
        /// How long a commit may take, every member tried, before it fails as unavailable.
        public var commitTimeout: Duration
        /// How often ``maintain()`` checks with etcd that this agent's view is current.
        public var freshnessInterval: Duration

        public init(
            prefix: String = "/switchboard/", writerID: String = UUID().uuidString.lowercased(),
            logRetention: Int = 10_000, recentCommitsOnLoad: Int = 512, loadPageSize: Int = 1000,
            commitTimeout: Duration = .seconds(5), freshnessInterval: Duration = .seconds(1)
        ) {
            self.prefix = prefix.hasSuffix("/") ? prefix : prefix + "/"
            self.writerID = writerID
            self.logRetention = logRetention
            self.recentCommitsOnLoad = recentCommitsOnLoad
            self.loadPageSize = loadPageSize
            self.commitTimeout = commitTimeout
            self.freshnessInterval = freshnessInterval
        }
    }

    /// The most changes one commit may hold: each instance costs a compare and a put or delete, each service that
    /// loses an instance a put, the log entry one more, and etcd takes at most 128 operations per transaction by
    /// default (`--max-txn-ops`).
    public let maximumChangesPerCommit = 60

    public let configuration: Configuration
    let client: EtcdClient
    let keys: EtcdCatalogKeys
    private let sequence = Atomic<UInt64>(0)
    let freshness = Mutex(Freshness())
    /// The last load: the catalog index it answered and the etcd revision it read at. A change sequence asked for
    /// after that index starts after that revision: revisions in between touched no catalog key that still exists
    /// (member keys, pruned log entries), and etcd may have compacted them away already.
    let lastLoad = Mutex<(index: UInt64, revision: Int64)?>(nil)
    /// Bumped by ``maintain()`` to make the follower start a new watch (see its watchdog).
    let watchRestarts = Mutex<UInt64>(0)
    /// This agent's own recent commits by log key, as committed: the follower takes them from here instead of
    /// decoding and encoding again what it just wrote.
    let ownCommits = Mutex<[[UInt8]: [CommittedChange]]>([:])
    let logger: Logger

    public init(client: EtcdClient, configuration: Configuration = Configuration(), logger: Logger? = nil) {
        self.client = client
        self.configuration = configuration
        self.keys = EtcdCatalogKeys(prefix: configuration.prefix)
        self.logger = logger ?? Logger(label: "switchboard.store.etcd")
    }

    // MARK: Load

    public func load() async throws -> StoredCatalog {
        do {
            return try await loadAtLatestRevision()
        } catch let error as EtcdError {
            throw Self.storeError(error)
        }
    }

    private func loadAtLatestRevision() async throws -> StoredCatalog {
        let decoder = SwitchboardJSON.decoder()
        var instances: [Instance] = []
        let started = ContinuousClock.now
        var page = try await client.range(
            EtcdRangeRequest(.prefix(keys.instances), limit: Int64(configuration.loadPageSize)))
        // Every further read is at this revision, so the whole load is one consistent view.
        let revision = page.header.revision
        while true {
            for stored in page.keyValues {
                instances.append(try Self.instance(from: stored, decoder: decoder))
            }
            guard page.more, let last = page.keyValues.last else { break }
            page = try await client.range(
                EtcdRangeRequest(
                    EtcdKeyRange(from: last.key + [0], to: EtcdKeyRange.prefix(keys.instances).end),
                    limit: Int64(configuration.loadPageSize), revision: revision))
        }
        let services = try await client.range(
            EtcdRangeRequest(.prefix(keys.services), revision: revision, keysOnly: true))
        var serviceIndexes: [ServiceName: UInt64] = [:]
        for key in services.keyValues {
            let name = String(key.keyText.dropFirst(keys.services.count))
            guard let service = try? ServiceName(name) else { continue }
            serviceIndexes[service] = UInt64(key.modRevision)
        }
        // A service's key moves only when it loses an instance; its index is also its newest instance's.
        for instance in instances {
            serviceIndexes[instance.service] = max(serviceIndexes[instance.service] ?? 0, instance.modifyIndex)
        }
        // The catalog's index is its newest change, not etcd's revision (other keys move that too).
        let newest = try await client.range(
            EtcdRangeRequest(
                .prefix(keys.catalog), limit: 1, revision: revision, sortOrder: .descending,
                sortTarget: .modification, keysOnly: true))
        let index = newest.keyValues.first?.modRevision ?? 0
        let log = try await client.range(
            EtcdRangeRequest(
                .prefix(keys.log), limit: Int64(configuration.recentCommitsOnLoad), revision: revision,
                sortOrder: .descending, sortTarget: .modification))
        let recent = try log.keyValues.reversed().flatMap { try Self.commit(from: $0, decoder: decoder) }
        freshness.withLock { freshness in
            freshness.delivered(through: revision)
            freshness.probed(latest: revision, at: started)
        }
        lastLoad.withLock { $0 = (UInt64(index), revision) }
        return StoredCatalog(
            instances: instances, index: UInt64(index), recentEvents: recent.map(\.event),
            serviceIndexes: serviceIndexes)
    }

    // MARK: Commit

    public func commit(_ changes: [PlannedChange]) async throws -> [CommittedChange] {
        guard !changes.isEmpty else { return [] }
        let logKey = keys.logEntry(
            writer: configuration.writerID, sequence: sequence.add(1, ordering: .relaxed).newValue)
        let (transaction, encoded) = try transaction(for: changes, logKey: logKey)
        let response: EtcdTransactionResponse
        do {
            response = try await client.transaction(
                transaction, idempotent: true, timeout: configuration.commitTimeout)
        } catch {
            throw Self.storeError(error)
        }
        if response.succeeded {
            let committed = PlannedChange.committing(
                changes, encodedInstances: encoded.map(\.instanceJSON),
                at: repeatElement(UInt64(response.header.revision), count: changes.count))
            ownCommits.withLock { commits in
                // Bounded: an entry the watch never took (it restarted past it) must not stay for ever.
                if commits.count >= 4096 { commits.removeAll(keepingCapacity: true) }
                commits[logKey] = committed
            }
            return committed
        }
        // Refused: either this very commit was already made (an earlier try whose answer was lost), or an instance
        // changed under the plan.
        if case .range(let own)? = response.responses.first, let done = own.keyValues.first {
            return PlannedChange.committing(
                changes, encodedInstances: encoded.map(\.instanceJSON),
                at: repeatElement(UInt64(done.modRevision), count: changes.count))
        }
        var latest = response.header.revision
        if response.responses.count > 1, case .range(let newest) = response.responses[1],
            let key = newest.keyValues.first
        {
            latest = key.modRevision
        }
        throw CatalogStoreError.conflict(at: UInt64(latest))
    }

    /// The transaction that commits `changes` under `logKey`, and the changes as it encoded them.
    private func transaction(
        for changes: [PlannedChange], logKey: [UInt8]
    ) throws -> (EtcdTransaction, [CommittedChange]) {
        var compares: [EtcdCompare] = []
        var compared: Set<InstanceKey> = []
        // The last state each instance reaches in the commit (nil: removed); observations leave it as it is.
        // Each change encoded once, as its event before the store numbers it: the log entry is these events, and
        // an instance's key holds the instance of its last change.
        let encoded = changes.map {
            CommittedChange(
                event: ChangeEvent(
                    index: 0, kind: $0.kind, at: $0.at, instance: $0.instance, observation: $0.observation, by: $0.by))
        }
        var finalState: [InstanceKey: Int?] = [:]
        var order: [InstanceKey] = []
        var services: [ServiceName] = []
        for (position, change) in changes.enumerated() {
            let key = change.key
            if compared.insert(key).inserted {
                compares.append(
                    .modRevision(of: keys.instance(key), equals: Int64(change.expectedModifyIndex ?? 0)))
            }
            guard change.kind != .observed else { continue }
            if finalState[key] == nil { order.append(key) }
            finalState[key] = change.kind == .removed ? .some(nil) : .some(position)
        }
        // Services that lose an instance: its key is gone, so the service's own key carries the revision.
        for key in order where finalState[key] == .some(nil) && !services.contains(key.service) {
            services.append(key.service)
        }
        guard compared.count + services.count + 1 <= 128 else {
            throw CatalogStoreError.unavailable(
                "a commit of \(changes.count) changes is too large for one etcd transaction; at most \(maximumChangesPerCommit)"
            )
        }
        compares.append(.absent(logKey))
        var success: [EtcdOperation] = []
        for key in order {
            switch finalState[key] {
            case .some(.some(let position)):
                success.append(.put(key: keys.instance(key), value: encoded[position].instanceJSON))
            default:
                success.append(.deleteRange(EtcdKeyRange(key: keys.instance(key))))
            }
        }
        for service in services {
            success.append(.put(key: keys.service(service), value: []))
        }
        var log: [UInt8] = [UInt8(ascii: "[")]
        for (position, change) in encoded.enumerated() {
            if position > 0 { log.append(UInt8(ascii: ",")) }
            log += change.eventJSON
        }
        log.append(UInt8(ascii: "]"))
        success.append(.put(key: logKey, value: log))
        let failure: [EtcdOperation] = [
            .range(EtcdRangeRequest(EtcdKeyRange(key: logKey), keysOnly: true)),
            .range(
                EtcdRangeRequest(
                    .prefix(keys.catalog), limit: 1, sortOrder: .descending, sortTarget: .modification, keysOnly: true)),
        ]
        return (EtcdTransaction(compare: compares, success: success, failure: failure), encoded)
    }

    // MARK: Events

    public func events(after index: UInt64, limit: Int) async throws -> EventLogPage {
        let decoder = SwitchboardJSON.decoder()
        let response: EtcdTransactionResponse
        do {
            // Both reads at one revision: the log page and how far the log was pruned.
            response = try await client.transaction(
                EtcdTransaction(success: [
                    .range(
                        EtcdRangeRequest(
                            .prefix(keys.log), limit: Int64(max(1, limit)), sortOrder: .ascending,
                            sortTarget: .modification, minimumModRevision: Int64(clamping: index) + 1)),
                    .range(EtcdRangeRequest(EtcdKeyRange(key: keys.prunedThrough))),
                ]), idempotent: true)
        } catch {
            throw Self.storeError(error)
        }
        guard response.responses.count == 2, case .range(let log) = response.responses[0],
            case .range(let pruned) = response.responses[1]
        else { throw CatalogStoreError.unavailable("etcd answered the event log read with something else") }
        var events: [ChangeEvent] = []
        for entry in log.keyValues {
            guard events.count < limit else { break }
            events += try Self.commit(from: entry, decoder: decoder).map(\.event)
        }
        let prunedThrough = pruned.keyValues.first.flatMap { UInt64(String(decoding: $0.value, as: UTF8.self)) } ?? 0
        return EventLogPage(events: events, complete: index >= prunedThrough)
    }

    // MARK: Decoding

    /// An instance key's value, with its indexes from etcd's revisions.
    static func instance(from stored: EtcdKeyValue, decoder: JSONDecoder) throws -> Instance {
        var instance: Instance
        do {
            instance = try decoder.decode(Instance.self, from: Data(stored.value))
        } catch {
            throw CatalogStoreError.unavailable("the instance at \(stored.keyText) in etcd does not decode: \(error)")
        }
        instance.createIndex = UInt64(stored.createRevision)
        instance.modifyIndex = UInt64(stored.modRevision)
        return instance
    }

    /// A log key's commit, numbered with the revision that wrote it.
    static func commit(from entry: EtcdKeyValue, decoder: JSONDecoder) throws -> [CommittedChange] {
        let events: [ChangeEvent]
        do {
            events = try decoder.decode([ChangeEvent].self, from: Data(entry.value))
        } catch {
            throw CatalogStoreError.unavailable("the log entry \(entry.keyText) in etcd does not decode: \(error)")
        }
        let planned = events.map {
            PlannedChange(
                kind: $0.kind, at: $0.at, instance: $0.instance, observation: $0.observation, expectedModifyIndex: nil,
                by: $0.by)
        }
        return PlannedChange.committing(
            planned, encodedInstances: instanceJSON(inLogEntry: entry.value, count: events.count),
            at: repeatElement(UInt64(entry.modRevision), count: planned.count))
    }

    /// Each event's instance as the writer encoded it into the log entry, so the commit is not encoded again; nil
    /// when the entry is not laid out as expected (then the instances are encoded afresh).
    static func instanceJSON(inLogEntry entry: [UInt8], count: Int) -> [[UInt8]]? {
        guard let elements = JSONFields.elements(ofArray: entry), elements.count == count else { return nil }
        var instances: [[UInt8]] = []
        instances.reserveCapacity(count)
        for element in elements {
            guard let instance = JSONFields.value(of: "instance", inObject: entry, in: element) else { return nil }
            instances.append(Array(entry[instance]))
        }
        return instances
    }

    /// What an etcd failure means to the catalog.
    static func storeError(_ error: any Error) -> any Error {
        switch error {
        case EtcdError.compacted(let revision): CatalogStoreError.compacted(through: UInt64(max(0, revision - 1)))
        case EtcdError.indeterminate(let reason): CatalogStoreError.indeterminate("etcd: \(reason)")
        case EtcdError.refused(let code, let message)
        where code == 8 || message.contains("too large") || message.contains("larger than max"):
            // etcd's "request is too large", or its gateway's gRPC hop refusing the message (resource exhausted).
            CatalogStoreError.tooLarge("etcd: \(message)")
        case let error as EtcdError: CatalogStoreError.unavailable(error.description)
        default: error
        }
    }
}

/// The keys of the catalog under a prefix.
struct EtcdCatalogKeys: Sendable {
    let catalog: [UInt8]
    let instances: [UInt8]
    let services: [UInt8]
    let log: [UInt8]
    let prunedThrough: [UInt8]

    init(prefix: String) {
        catalog = Array((prefix + "catalog/").utf8)
        instances = catalog + Array("instances/".utf8)
        services = catalog + Array("services/".utf8)
        log = catalog + Array("log/".utf8)
        prunedThrough = Array((prefix + "catalog-meta/pruned-through").utf8)
    }

    func instance(_ key: InstanceKey) -> [UInt8] {
        instances + Array("\(key.service.rawValue)/\(key.id.rawValue)".utf8)
    }

    func service(_ service: ServiceName) -> [UInt8] {
        services + Array(service.rawValue.utf8)
    }

    /// A log key that sorts by time (roughly: writers' clocks differ) and is unique to one commit.
    func logEntry(writer: String, sequence: UInt64) -> [UInt8] {
        let milliseconds = UInt64(max(0, Date().timeIntervalSince1970 * 1000))
        return log + Array("\(Self.hex(milliseconds, width: 12))-\(writer)-\(Self.hex(sequence, width: 8))".utf8)
    }

    private static func hex(_ value: UInt64, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}

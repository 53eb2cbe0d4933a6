import SwitchboardCatalog
import SwitchboardCore
import Synchronization

/// An in-memory store numbered the way a shared remote store (etcd) numbers commits: indexes skip, changes of
/// different instances in one commit may share an index, and other writers commit too.
///
/// It meets the whole ``CatalogStore`` contract, so the conformance suite runs against it, and the agent runs on
/// it to prove that nothing above the store assumes consecutive indexes or a single writer. A test plays the
/// other writer with ``commitFromElsewhere(_:)``, and can hold the change sequence back (``holdDeliveries()``) to
/// let a catalog plan against a view the store has moved past.
public final class SkippingIndexStore: CatalogStore {
    private struct Contents {
        var instances: [InstanceKey: Instance] = [:]
        var events: [ChangeEvent] = []
        var index: UInt64 = 0
        var serviceIndexes: [ServiceName: UInt64] = [:]
        var random: FastRandom
        var held = false
        var heldCommits: [[CommittedChange]] = []
        var conflicts = 0
    }

    private let contents: Mutex<Contents>
    private let feed = LocalChangeFeed()

    /// A store whose gaps and shared indexes follow `seed`.
    public init(seed: UInt64 = 42) {
        contents = Mutex(Contents(random: FastRandom(seed: seed)))
    }

    /// How many commits a precondition refused.
    public var conflicts: Int { contents.withLock { $0.conflicts } }

    /// The index of the latest commit.
    public var index: UInt64 { contents.withLock { $0.index } }

    public func load() async throws -> StoredCatalog {
        contents.withLock { contents in
            StoredCatalog(
                instances: Array(contents.instances.values), index: contents.index, recentEvents: contents.events,
                serviceIndexes: contents.serviceIndexes)
        }
    }

    public func commit(_ changes: [PlannedChange]) async throws -> [CommittedChange] {
        try contents.withLock { contents in try Self.commit(changes, in: &contents, feed: feed) }
    }

    /// Commits `changes` as another agent would: they reach the catalog only through its change sequence. With
    /// `sharingOneIndex`, changes of different instances all get the commit's one index (as an etcd transaction's
    /// changes share its revision).
    @discardableResult
    public func commitFromElsewhere(
        _ changes: [PlannedChange], sharingOneIndex: Bool = false
    ) throws
        -> [CommittedChange]
    {
        try contents.withLock { contents in
            try Self.commit(changes, in: &contents, feed: feed, sharingOneIndex: sharingOneIndex)
        }
    }

    /// The instance `key` as the store holds it.
    public func instance(_ key: InstanceKey) -> Instance? {
        contents.withLock { $0.instances[key] }
    }

    /// Stops handing commits to the change sequences (they are kept, in order) until ``releaseDeliveries()``.
    public func holdDeliveries() {
        contents.withLock { $0.held = true }
    }

    /// Hands the held commits on, in order, and every later one as it is made.
    public func releaseDeliveries() {
        contents.withLock { contents in
            contents.held = false
            for commit in contents.heldCommits { feed.publish(commit) }
            contents.heldCommits = []
        }
    }

    private static func commit(
        _ changes: [PlannedChange], in contents: inout Contents, feed: LocalChangeFeed, sharingOneIndex: Bool = false
    ) throws -> [CommittedChange] {
        for change in changes where !change.holds(against: contents.instances[change.key]?.modifyIndex) {
            contents.conflicts += 1
            throw CatalogStoreError.conflict(at: contents.index)
        }
        guard !changes.isEmpty else { return [] }
        // A gap of at least one index before the commit, then a new index per change unless it may share the one
        // before (a different instance, and a coin toss says so).
        var index = contents.index + UInt64.random(in: 2...7, using: &contents.random)
        var indexes: [UInt64] = []
        var keysAtIndex: Set<InstanceKey> = []
        for change in changes {
            if !indexes.isEmpty {
                if keysAtIndex.contains(change.key) || (!sharingOneIndex && Bool.random(using: &contents.random)) {
                    index += UInt64.random(in: 1...3, using: &contents.random)
                    keysAtIndex = []
                }
            }
            keysAtIndex.insert(change.key)
            indexes.append(index)
        }
        contents.index = index
        let committed = PlannedChange.committing(changes, at: indexes)
        for change in committed {
            let event = change.event
            if event.changesCatalog {
                contents.instances[InstanceKey(service: event.service, id: event.id)] =
                    event.kind == .removed ? nil : event.instance
                contents.serviceIndexes[event.service] = event.index
            }
            contents.events.append(event)
        }
        if contents.held {
            contents.heldCommits.append(committed)
        } else {
            feed.publish(committed)
        }
        return committed
    }

    public func changes(after index: UInt64) async throws -> AsyncThrowingStream<[CommittedChange], any Error> {
        contents.withLock { contents in
            let missed = EventLogSlicing.page(of: contents.events, after: index, limit: .max)
            return feed.subscribe(replaying: missed.map { CommittedChange(event: $0) })
        }
    }

    public func events(after index: UInt64, limit: Int) async throws -> EventLogPage {
        contents.withLock { contents in
            EventLogPage(events: EventLogSlicing.page(of: contents.events, after: index, limit: limit), complete: true)
        }
    }
}

import Synchronization

/// Where the catalog keeps what must survive a restart: instance definitions, maintenance flags, the index and the
/// event log.
///
/// The catalog calls a store from one writer at a time, with batches of events in index order. A store must make a
/// batch durable (all of it or none of it) before `commit` returns, because the catalog acknowledges the writes as
/// soon as it does. Health reaches a store only as status changes (events like any other, so the status an instance
/// had survives a restart); probe results and heartbeats that change no status never do.
public protocol CatalogStore: Sendable {
    /// Everything needed to rebuild the catalog at start-up.
    func load() async throws -> StoredCatalog
    /// Durably records `changes` (in index order) and the instance state they leave, atomically.
    func commit(_ changes: [CommittedChange]) async throws
    /// Logged events with an index above `index`, oldest first, at most `limit`.
    func events(after index: UInt64, limit: Int) async throws -> [ChangeEvent]
}

/// What a store hands back at start-up.
public struct StoredCatalog: Sendable {
    public var instances: [Instance]
    /// The index of the latest committed change.
    public var index: UInt64
    /// The latest logged events, oldest first (enough to refill the in-memory ring).
    public var recentEvents: [ChangeEvent]
    /// The index of each service's latest change, also for services whose last instance is gone, so a service's
    /// index never goes back across a restart.
    public var serviceIndexes: [ServiceName: UInt64]

    public init(
        instances: [Instance] = [],
        index: UInt64 = 0,
        recentEvents: [ChangeEvent] = [],
        serviceIndexes: [ServiceName: UInt64] = [:]
    ) {
        self.instances = instances
        self.index = index
        self.recentEvents = recentEvents
        self.serviceIndexes = serviceIndexes
    }
}

/// A store that keeps nothing beyond the process: for `--dev` and for tests.
///
/// It still keeps an event log (bounded) so that `GET /v1/events` behaves as it does with a durable store.
public final class InMemoryCatalogStore: CatalogStore {
    private struct Contents {
        var instances: [InstanceKey: Instance] = [:]
        var events: [ChangeEvent] = []
        var index: UInt64 = 0
        var serviceIndexes: [ServiceName: UInt64] = [:]
    }

    private let contents = Mutex(Contents())
    private let eventRetention: Int

    /// A store that keeps at most `eventRetention` events.
    public init(eventRetention: Int = 10_000) {
        self.eventRetention = eventRetention
    }

    public func load() async throws -> StoredCatalog {
        contents.withLock { contents in
            StoredCatalog(
                instances: Array(contents.instances.values),
                index: contents.index,
                recentEvents: contents.events,
                serviceIndexes: contents.serviceIndexes
            )
        }
    }

    public func commit(_ changes: [CommittedChange]) async throws {
        let events = changes.map(\.event)
        contents.withLock { contents in
            for event in events where event.changesCatalog {
                let key = InstanceKey(service: event.service, id: event.id)
                contents.instances[key] = event.kind == .removed ? nil : event.instance
                contents.index = max(contents.index, event.index)
                contents.serviceIndexes[event.service] = event.index
            }
            contents.index = max(contents.index, events.last?.index ?? 0)
            contents.events.append(contentsOf: events)
            if contents.events.count > eventRetention {
                contents.events.removeFirst(contents.events.count - eventRetention)
            }
        }
    }

    public func events(after index: UInt64, limit: Int) async throws -> [ChangeEvent] {
        contents.withLock { contents in
            Array(contents.events.lazy.filter { $0.index > index }.prefix(limit))
        }
    }
}

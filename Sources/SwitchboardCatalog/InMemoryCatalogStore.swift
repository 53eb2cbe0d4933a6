import SwitchboardCore
import Synchronization

/// A store that keeps nothing beyond the process: for `--dev` and for tests.
///
/// It meets the whole ``CatalogStore`` contract: consecutive indexes, compare-and-set on each change, a bounded
/// event log (so `GET /v1/events` behaves as it does with a durable store) and change sequences that replay from
/// that log.
public final class InMemoryCatalogStore: CatalogStore {
    private struct Contents {
        var instances: [InstanceKey: Instance] = [:]
        var events: [ChangeEvent] = []
        var index: UInt64 = 0
        /// Every event up to this index has been pruned from ``events``.
        var prunedThrough: UInt64 = 0
        var serviceIndexes: [ServiceName: UInt64] = [:]
    }

    private let contents = Mutex(Contents())
    private let feed = LocalChangeFeed()
    private let eventRetention: Int

    /// A store that keeps at most `eventRetention` events.
    public init(eventRetention: Int = 10_000) {
        self.eventRetention = max(1, eventRetention)
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

    public func commit(_ changes: [PlannedChange]) async throws -> [CommittedChange] {
        try contents.withLock { contents in
            for change in changes where !change.holds(against: contents.instances[change.key]?.modifyIndex) {
                throw CatalogStoreError.conflict(at: contents.index)
            }
            let first = contents.index + 1
            contents.index += UInt64(changes.count)
            let committed = PlannedChange.committing(changes, at: first...)
            for change in committed { Self.record(change.event, in: &contents) }
            if contents.events.count > eventRetention {
                let pruned = contents.events.count - eventRetention
                contents.prunedThrough = contents.events[pruned - 1].index
                contents.events.removeFirst(pruned)
            }
            // Published under the lock, so sequences see commits in index order.
            feed.publish(committed)
            return committed
        }
    }

    /// Applies a committed event to the stored instances and logs it.
    private static func record(_ event: ChangeEvent, in contents: inout Contents) {
        if event.changesCatalog {
            contents.instances[InstanceKey(service: event.service, id: event.id)] =
                event.kind == .removed ? nil : event.instance
            contents.serviceIndexes[event.service] = event.index
        }
        contents.events.append(event)
    }

    public func changes(after index: UInt64) async throws -> AsyncThrowingStream<[CommittedChange], any Error> {
        try contents.withLock { contents in
            guard index >= contents.prunedThrough else {
                throw CatalogStoreError.compacted(through: contents.prunedThrough)
            }
            let missed = EventLogSlicing.page(of: contents.events, after: index, limit: .max).map {
                CommittedChange(event: $0)
            }
            return feed.subscribe(replaying: missed)
        }
    }

    public func events(after index: UInt64, limit: Int) async throws -> EventLogPage {
        contents.withLock { contents in
            EventLogPage(
                events: EventLogSlicing.page(of: contents.events, after: index, limit: limit),
                complete: index >= contents.prunedThrough)
        }
    }
}

/// Reading pages out of an event log kept in index order.
package enum EventLogSlicing {
    /// The events of `log` (sorted by index) after `index`: at most `limit`, extended to the end of the last index
    /// taken, so a page never ends between two events that share an index.
    package static func page<Log: RandomAccessCollection<ChangeEvent>>(
        of log: Log, after index: UInt64, limit: Int
    ) -> [ChangeEvent] where Log.Index == Int {
        var start = log.startIndex
        var end = log.endIndex
        // The first event after `index`, by binary search: indexes skip, so no arithmetic finds it.
        while start < end {
            let middle = start + (end - start) / 2
            if log[middle].index <= index { start = middle + 1 } else { end = middle }
        }
        var stop = limit >= log.endIndex - start ? log.endIndex : start + max(0, limit)
        if stop > start {
            let last = log[stop - 1].index
            while stop < log.endIndex, log[stop].index == last { stop += 1 }
        }
        return Array(log[start..<stop])
    }
}

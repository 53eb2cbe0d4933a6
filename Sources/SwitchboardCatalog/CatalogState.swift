import DequeModule
import HashTreeCollections
import SwitchboardCore

import struct Foundation.Date

/// One service's instances, with the aggregates that `GET /v1/services` needs kept up to date as changes arrive.
///
/// The entry outlives its last instance, so the service's index never goes back (a watcher waiting on an emptied
/// service still sees the removal's index).
public struct ServiceEntry: Sendable {
    /// The catalog index of the latest change to this service.
    public internal(set) var index: UInt64 = 0
    /// Counts check outputs replaced in place (which move no index), so a cached answer can tell it is stale.
    public internal(set) var outputRevision: UInt64 = 0
    /// A persistent (structure-sharing) dictionary: a reader's snapshot costs nothing, and the writer's next change
    /// copies only the path it touches instead of the whole service.
    public internal(set) var instances: TreeDictionary<InstanceID, Instance> = [:]
    /// Each instance's JSON, encoded once per change (see ``CommittedChange``).
    public internal(set) var encodedInstances: TreeDictionary<InstanceID, [UInt8]> = [:]
    /// How many instances carry each tag.
    public internal(set) var tagCounts: [String: Int] = [:]
    public internal(set) var counts = StatusCounts()
    /// This service's row of `GET /v1/services` as JSON, re-encoded whenever the service changes.
    public internal(set) var encodedSummary: [UInt8] = []

    /// Re-encodes ``encodedSummary`` for the service `name` (keys sorted, as the generic encoder writes them).
    mutating func refreshSummary(name: ServiceName) {
        var json = JSONText()
        json.append(#"{"counts":{"critical":\#(counts.critical),"maintenance":\#(counts.maintenance),"#)
        json.append(#""passing":\#(counts.passing),"warning":\#(counts.warning)},"index":\#(index),"#)
        json.append(#""name":"\#(name.rawValue)","tags":["#)
        for (position, tag) in tagCounts.keys.sorted().enumerated() {
            if position > 0 { json.append(",") }
            json.appendString(tag)
        }
        json.append("]}")
        encodedSummary = json.bytes
    }
}

/// The catalog as a plain value: services, instances, the change index and the recent-event ring.
///
/// All catalog logic lives here, free of locks, clocks and I/O, so it is tested as a value. Changes happen in two
/// steps: ``plan(_:current:at:)`` decides what a mutation does (or refuses it) without touching the state, then,
/// once a store has committed the planned change and given it its index, ``apply(_:)-(CommittedChange)`` applies
/// it. The state is therefore never ahead of what is durable, and a change committed by another writer of a
/// shared store is applied the same way.
public struct CatalogState: Sendable {
    /// The index of the latest change (0 for an empty, new catalog).
    public private(set) var index: UInt64 = 0
    /// Persistent, like ``ServiceEntry/instances``, so `GET /v1/services` can snapshot it under the lock for free.
    public private(set) var services: TreeDictionary<ServiceName, ServiceEntry> = [:]
    /// Instances per status across the catalog.
    public private(set) var counts = StatusCounts()
    /// The latest changes, oldest first, at most `eventCapacity` of them.
    public private(set) var recentEvents: Deque<ChangeEvent> = []
    /// Every change after this index is in ``recentEvents`` (indexes skip, so the ring's first index alone cannot
    /// tell whether an older change is missing).
    public private(set) var recentEventsHeldSince: UInt64 = 0
    /// How many events the ring keeps.
    public let eventCapacity: Int

    /// An empty catalog.
    public init(eventCapacity: Int = 4096) {
        self.eventCapacity = max(0, eventCapacity)
    }

    /// A catalog rebuilt from what a store holds, with each check in the status it last had.
    ///
    /// Keeping the stored status is what makes a restart quiet: a passing instance stays in the answers while its
    /// TTL check gets one TTL of grace and its active checks run again, instead of every instance turning critical
    /// until it is probed. Status changes reach the state only through ``apply(_:)-(CommittedChange)`` on the catalog's single
    /// writer, so plans made by the writer are never invalidated behind its back.
    public init(restoring stored: StoredCatalog, eventCapacity: Int = 4096) {
        self.init(eventCapacity: eventCapacity)
        for instance in stored.instances {
            insert(instance, encoded: CommittedChange.encode(instance), index: instance.modifyIndex)
        }
        for (service, index) in stored.serviceIndexes {
            services[service, default: ServiceEntry()].index = max(services[service]?.index ?? 0, index)
            self.index = max(self.index, index)
        }
        for name in services.keys {
            services[name]!.refreshSummary(name: name)
        }
        for event in stored.recentEvents.suffix(self.eventCapacity) {
            recentEvents.append(event)
        }
        index = max(index, stored.index, recentEvents.last?.index ?? 0)
        // The stored events are whole indexes (see ``StoredCatalog/recentEvents``): the ring holds every change from
        // its first one on, unless it kept only the newest of them, which may start inside an index.
        let trimmed = stored.recentEvents.count > recentEvents.count
        recentEventsHeldSince = recentEvents.first.map { trimmed ? $0.index : $0.index - 1 } ?? index
    }

    /// The entry of `service`: its instances, index and aggregates.
    public func entry(for service: ServiceName) -> ServiceEntry? {
        services[service]
    }

    /// The instance `key`, if registered.
    public func instance(_ key: InstanceKey) -> Instance? {
        services[key.service]?.instances[key.id]
    }

    /// The number of registered instances.
    public var instanceCount: Int { counts.total }

    /// Decides what `mutation` does to `current` (the instance it names, as it stands).
    ///
    /// Returns `nil` when the mutation changes nothing (an identical re-registration, maintenance already in the
    /// asked state): such writes succeed without bumping the index, so periodic re-registration wakes no watcher.
    /// The planned change carries `current`'s modify index as its precondition, for the store to check.
    public static func plan(
        _ mutation: CatalogMutation, current: Instance?, at: Date
    ) throws(CatalogError) -> PlannedChange? {
        func planned(_ kind: ChangeEvent.Kind, _ instance: Instance, observation: Observation? = nil) -> PlannedChange {
            PlannedChange(
                kind: kind, at: at, instance: instance, observation: observation,
                expectedModifyIndex: current?.modifyIndex)
        }
        switch mutation {
        case .register(let definition, let cas):
            if let cas, cas != (current?.modifyIndex ?? 0) {
                throw CatalogError.conflict(expected: cas, actual: current?.modifyIndex ?? 0)
            }
            guard let current else {
                return planned(.added, Instance(definition: definition, createIndex: 0, modifyIndex: 0))
            }
            if current.definition == definition { return nil }
            return planned(.updated, current.reregistered(as: definition, index: current.modifyIndex))
        case .deregister(let service, let id):
            guard let current else { throw CatalogError.instanceNotFound(service: service, id: id) }
            return planned(.removed, current)
        case .maintenance(let service, let id, let enabled, let reason):
            guard var instance = current else { throw CatalogError.instanceNotFound(service: service, id: id) }
            if enabled {
                if instance.maintenance?.reason == reason { return nil }
                instance.maintenance = Maintenance(reason: reason, since: instance.maintenance?.since ?? at)
            } else {
                if instance.maintenance == nil { return nil }
                instance.maintenance = nil
            }
            return planned(.status, instance)
        case .checkStatus(let update):
            guard var instance = current else {
                throw CatalogError.instanceNotFound(service: update.key.service, id: update.key.id)
            }
            guard let position = instance.checks.firstIndex(where: { $0.id == update.checkID }),
                instance.checks[position].definition == update.definition,
                instance.checks[position].status != update.status
            else { return nil }
            instance.checks[position].record(update.status, output: update.output, at: at)
            return planned(.status, instance)
        case .expire(let service, let id, let checkID, let definition):
            guard let current else { throw CatalogError.instanceNotFound(service: service, id: id) }
            guard
                current.checks.contains(where: {
                    $0.id == checkID && $0.definition == definition && $0.status == .critical
                })
            else { return nil }
            return planned(.removed, current)
        case .observe(let service, let id, let observation):
            guard let current else { throw CatalogError.instanceNotFound(service: service, id: id) }
            return planned(.observed, current, observation: observation)
        }
    }

    /// Puts `updated` (an instance whose checks' output changed, nothing else) in place of `expected`, without a
    /// change event or a new index: output that changes while the status does not (a timestamp in a health page,
    /// say) must not wake every watcher.
    ///
    /// Returns `false`, changing nothing, when the instance changed since `expected` was read; the caller drops the
    /// output, since the change that beat it carries a newer one.
    public mutating func replaceOutput(of expected: Instance, with updated: Instance, encoded: [UInt8]) -> Bool {
        let key = InstanceKey(service: expected.service, id: expected.id)
        guard instance(key) == expected, updated.status == expected.status, updated.modifyIndex == expected.modifyIndex
        else { return false }
        services[key.service]!.instances[key.id] = updated
        services[key.service]!.encodedInstances[key.id] = encoded
        services[key.service]!.outputRevision &+= 1
        return true
    }

    /// Applies a committed event, encoding it first.
    public mutating func apply(_ event: ChangeEvent) {
        apply(CommittedChange(event: event))
    }

    /// Applies a committed change; returns it with ``CommittedChange/previous`` filled in (the instance as it was
    /// just before).
    @discardableResult
    public mutating func apply(_ change: CommittedChange) -> CommittedChange {
        var change = change
        let event = change.event
        change.previous = instance(InstanceKey(service: event.service, id: event.id))
        if event.changesCatalog {
            applyToInstances(change)
        }
        index = max(index, event.index)
        if eventCapacity > 0 {
            if recentEvents.count == eventCapacity, let dropped = recentEvents.popFirst() {
                recentEventsHeldSince = max(recentEventsHeldSince, dropped.index)
            }
            recentEvents.append(event)
        } else {
            recentEventsHeldSince = index
        }
        return change
    }

    /// Brings the state to what a store holds now, after the changes in between were lost to it (a compaction):
    /// returns the differences as changes at the store's index (applied, with ``CommittedChange/previous`` filled
    /// in), for the catalog's observers. The event ring starts again from the store's recent events; the synthetic
    /// changes are not events anyone logged, so they stay out of it.
    public mutating func resynchronize(with stored: StoredCatalog, at now: Date) -> [CommittedChange] {
        let index = max(self.index, stored.index)
        var wanted: [InstanceKey: Instance] = [:]
        for instance in stored.instances {
            wanted[InstanceKey(service: instance.service, id: instance.id)] = instance
        }
        var changes: [CommittedChange] = []
        for (_, entry) in services {
            for (_, current) in entry.instances {
                let key = InstanceKey(service: current.service, id: current.id)
                if wanted[key] == nil {
                    changes.append(
                        CommittedChange(event: ChangeEvent(index: index, kind: .removed, at: now, instance: current)))
                }
            }
        }
        for (key, instance) in wanted.sorted(by: { ($0.key.service, $0.key.id) < ($1.key.service, $1.key.id) }) {
            let current = self.instance(key)
            // The same version (check output replaced in memory only may differ): nothing to tell.
            guard current?.modifyIndex != instance.modifyIndex || current?.createIndex != instance.createIndex
            else { continue }
            let kind: ChangeEvent.Kind =
                current == nil ? .added : current?.definition == instance.definition ? .status : .updated
            changes.append(CommittedChange(event: ChangeEvent(index: index, kind: kind, at: now, instance: instance)))
        }
        var applied: [CommittedChange] = []
        applied.reserveCapacity(changes.count)
        for var change in changes {
            change.previous = instance(InstanceKey(service: change.event.service, id: change.event.id))
            applyToInstances(change)
            applied.append(change)
        }
        for (service, serviceIndex) in stored.serviceIndexes where services[service] != nil {
            guard serviceIndex > services[service]!.index else { continue }
            services[service]!.index = serviceIndex
            services[service]!.refreshSummary(name: service)
        }
        self.index = index
        recentEvents = Deque(stored.recentEvents.suffix(eventCapacity))
        recentEventsHeldSince = index
        if let first = recentEvents.first, stored.recentEvents.count == recentEvents.count {
            recentEventsHeldSince = first.index - 1
        }
        return applied
    }

    /// The instance and service side of ``apply(_:)-(CommittedChange)``.
    private mutating func applyToInstances(_ change: CommittedChange) {
        let event = change.event
        let key = InstanceKey(service: event.service, id: event.id)
        remove(key)
        if event.kind != .removed {
            insert(event.instance, encoded: change.instanceJSON, index: event.index)
        }
        services[event.service, default: ServiceEntry()].index = event.index
        services[event.service]!.refreshSummary(name: event.service)
    }

    /// Events with an index above `since`, at most `limit` (or a few more, to end on a whole index); `nil` when
    /// the ring no longer holds all of them.
    public func recentEvents(after since: UInt64, limit: Int) -> [ChangeEvent]? {
        if since >= index { return [] }
        guard since >= recentEventsHeldSince else { return nil }
        return EventLogSlicing.page(of: recentEvents, after: since, limit: limit)
    }

    private mutating func insert(_ instance: Instance, encoded: [UInt8], index: UInt64) {
        let status = instance.status
        services[instance.service, default: ServiceEntry()].instances[instance.id] = instance
        services[instance.service]!.encodedInstances[instance.id] = encoded
        services[instance.service]!.index = max(services[instance.service]!.index, index)
        services[instance.service]!.counts.add(status)
        for tag in instance.definition.tags {
            services[instance.service]!.tagCounts[tag, default: 0] += 1
        }
        counts.add(status)
        self.index = max(self.index, index)
    }

    private mutating func remove(_ key: InstanceKey) {
        guard let old = services[key.service]?.instances.removeValue(forKey: key.id) else { return }
        services[key.service]!.encodedInstances[key.id] = nil
        let status = old.status
        services[key.service]!.counts.add(status, -1)
        for tag in old.definition.tags {
            let remaining = services[key.service]!.tagCounts[tag, default: 1] - 1
            services[key.service]!.tagCounts[tag] = remaining > 0 ? remaining : nil
        }
        counts.add(status, -1)
    }
}

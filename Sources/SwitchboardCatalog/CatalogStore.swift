import SwitchboardCore

import struct Foundation.Date

/// Where the catalog keeps what must survive a restart (instance definitions, maintenance flags, status changes and
/// the event log), and where it learns of every committed change, its own and other agents'.
///
/// The contract is the one a remote, shared store can meet (etcd, in cluster mode), so that one catalog works the
/// same on every store:
/// - **The store numbers commits.** ``commit(_:)`` assigns each change its index. Indexes never go down: every
///   change of a later commit has a higher index than every change of an earlier one. They need not be
///   consecutive (etcd's revisions skip), and changes committed together may share an index (etcd gives a
///   transaction one revision).
/// - **The store checks compare-and-set.** Each ``PlannedChange`` names the modify index of the instance it was
///   planned against (or that there was none). A commit applies all of its changes or none, and none when one of
///   those preconditions no longer holds: it throws ``CatalogStoreError/conflict(at:)`` with an index its change
///   sequence yields (the conflicting instance's modify index, not a revision of keys the catalog does not
///   follow), and the catalog catches up and plans again. Two writers therefore never lose each other's update.
/// - **The store is the one path of change.** ``changes(after:)`` yields every commit after an index, in index
///   order, the catalog's own included; the catalog applies what it yields and nothing else, so a change written
///   by another agent reaches lookups, watches, DNS and the health checker the same way as a local one.
/// - **Durable before acknowledged.** ``commit(_:)`` returns only once the changes would survive a crash of the
///   process.
///
/// Health reaches a store only as status changes (events like any other, so the status an instance had survives a
/// restart); probe results and heartbeats that change no status never do.
public protocol CatalogStore: Sendable {
    /// Everything needed to rebuild the catalog at start-up, current at ``StoredCatalog/index``.
    func load() async throws -> StoredCatalog

    /// Durably commits `changes` (all or none) if every change's precondition holds, and returns them as committed,
    /// in the same order, with the indexes the store gave them.
    ///
    /// Throws ``CatalogStoreError/conflict(at:)`` when a precondition failed; anything else thrown means the commit
    /// may not have happened (the catalog reports the write as failed).
    func commit(_ changes: [PlannedChange]) async throws -> [CommittedChange]

    /// Every commit with an index above `index`, oldest first, as it happens, for as long as the consumer iterates.
    ///
    /// An element is one or more whole commits (a commit is never split across elements). It throws (or the sequence
    /// does, later) ``CatalogStoreError/compacted(through:)`` when the changes after `index` are no longer held; the
    /// sequence ends only when the consumer stops or the store is closed.
    func changes(after index: UInt64) async throws -> AsyncThrowingStream<[CommittedChange], any Error>

    /// Logged events with an index above `index`, oldest first: at most `limit`, or a few more when the last
    /// index returned is shared by several events (a page never ends inside an index).
    func events(after index: UInt64, limit: Int) async throws -> EventLogPage

    /// The most changes one ``commit(_:)`` takes (a remote store's transactions are bounded); the catalog's batches
    /// stay within it.
    var maximumChangesPerCommit: Int { get }
}

extension CatalogStore {
    /// No bound of the store's own.
    public var maximumChangesPerCommit: Int { .max }
}

/// What a store hands back at start-up.
public struct StoredCatalog: Sendable {
    /// Every registered instance, as last committed.
    public var instances: [Instance]
    /// The index of the latest committed change: the catalog follows ``CatalogStore/changes(after:)`` from here.
    public var index: UInt64
    /// The latest logged events, oldest first (enough to refill the in-memory ring), in whole indexes: never
    /// starting between two events that share an index.
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

/// A page of a store's event log.
public struct EventLogPage: Sendable {
    /// The events, oldest first.
    public var events: [ChangeEvent]
    /// Whether every event after the index asked for, up to the last one here, is in the page: `false` when older
    /// events were pruned from the log, and the caller has missed changes it can only learn by reading the catalog.
    public var complete: Bool

    public init(events: [ChangeEvent], complete: Bool) {
        self.events = events
        self.complete = complete
    }
}

/// A change the catalog decided on, before a store commits it and gives it its index.
///
/// The store turns it into a ``CommittedChange`` with ``committed(at:)`` once it knows the index; until then the
/// instance's `createIndex` and `modifyIndex` mean nothing.
public struct PlannedChange: Sendable, Hashable {
    /// What the change does to the instance.
    public var kind: ChangeEvent.Kind
    /// When the change was planned (the event's time).
    public var at: Date
    /// The instance after the change (for a removal, as it was).
    public var instance: Instance
    /// What was reported, for an `observed` change.
    public var observation: Observation?
    /// The precondition: the modify index the instance had in the store before the commit (as the planner saw it),
    /// or `nil` when there was none. The store commits only while every change's precondition holds against the
    /// store as it is before the commit; changes of one instance planned one after the other in the same commit
    /// carry the same precondition.
    public var expectedModifyIndex: UInt64?
    /// Who asked for the change (the audit trail), when it came through the API.
    public var by: AuditRecord?

    public init(
        kind: ChangeEvent.Kind, at: Date, instance: Instance, observation: Observation? = nil,
        expectedModifyIndex: UInt64?, by: AuditRecord? = nil
    ) {
        self.by = by
        self.kind = kind
        self.at = at
        self.instance = instance
        self.observation = observation
        self.expectedModifyIndex = expectedModifyIndex
    }

    /// The instance this change is about.
    public var key: InstanceKey { InstanceKey(service: instance.service, id: instance.id) }

    /// The change as committed at `index`: the instance's indexes set (its `createIndex` too, for an addition) and
    /// both JSON forms encoded.
    public func committed(at index: UInt64) -> CommittedChange {
        committed(at: index, createIndex: kind == .added ? index : instance.createIndex, encoded: nil)
    }

    private func committed(at index: UInt64, createIndex: UInt64, encoded: [UInt8]?) -> CommittedChange {
        var instance = instance
        instance.createIndex = createIndex
        if kind != .observed { instance.modifyIndex = index }
        let event = ChangeEvent(
            index: index, kind: kind, at: at, instance: instance, observation: observation, by: by)
        guard let encoded else { return CommittedChange(event: event) }
        return CommittedChange.reusing(encoded, for: event)
    }

    private static func event(_ event: ChangeEvent, modifyIndex: UInt64) -> ChangeEvent {
        var instance = event.instance
        instance.modifyIndex = modifyIndex
        return ChangeEvent(
            index: event.index, kind: event.kind, at: event.at, instance: instance, observation: event.observation,
            by: event.by)
    }

    /// One commit's changes as committed at `indexes` (one per change, in order): what a store returns once it has
    /// committed them.
    ///
    /// A change planned against an earlier change of the same commit (a registration then a maintenance flag, say)
    /// keeps the `createIndex` the commit gave the earlier one.
    ///
    /// `encodedInstances`, when given, holds each change's instance as encoded before (in JSON, with any indexes):
    /// its indexes are replaced instead of the instance encoded again.
    public static func committing(
        _ changes: [PlannedChange], encodedInstances: [[UInt8]]? = nil, at indexes: some Sequence<UInt64>
    ) -> [CommittedChange] {
        precondition(encodedInstances.map { $0.count == changes.count } ?? true, "one encoded instance per change")
        var created: [InstanceKey: UInt64] = [:]
        var modified: [InstanceKey: UInt64] = [:]
        var committed: [CommittedChange] = []
        committed.reserveCapacity(changes.count)
        for (position, (change, index)) in zip(changes, indexes).enumerated() {
            let key = change.key
            let createIndex = change.kind == .added ? index : created[key] ?? change.instance.createIndex
            if change.kind == .added { created[key] = index }
            if change.kind == .removed { created[key] = nil }
            var done = change.committed(at: index, createIndex: createIndex, encoded: encodedInstances?[position])
            if change.kind == .observed, let last = modified[key] {
                // An observation leaves the instance as the earlier change of the commit made it.
                done = CommittedChange.reusing(done.instanceJSON, for: Self.event(done.event, modifyIndex: last))
            } else if change.kind != .observed {
                modified[key] = index
            }
            committed.append(done)
        }
        return committed
    }
}

/// Why a store refused a commit or stopped a change sequence.
///
/// A struct wrapping a private code, so new reasons can be added without breaking code that tests for these.
public struct CatalogStoreError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case conflict
        case compacted
        case unavailable
        case indeterminate
        case tooLarge
    }

    private let code: Code
    /// For a conflict, the store's index when it refused; for a compaction, the last index no longer held.
    public let index: UInt64
    /// For an unavailable store, why.
    public let reason: String

    private init(_ code: Code, index: UInt64, reason: String = "") {
        self.code = code
        self.index = index
        self.reason = reason
    }

    /// The store cannot commit now (a remote store without quorum, or out of reach): nothing was committed, or the
    /// commit was not confirmed. The write may be tried again later; reads still answer from the catalog's view.
    public static func unavailable(_ reason: String) -> CatalogStoreError {
        CatalogStoreError(.unavailable, index: 0, reason: reason)
    }

    /// The store could not confirm a commit in time, and the commit may still take effect (a remote store whose
    /// quorum was lost while the commit was in flight).
    public static func indeterminate(_ reason: String) -> CatalogStoreError {
        CatalogStoreError(.indeterminate, index: 0, reason: reason)
    }

    /// Whether the store could not be reached or could not commit (see ``unavailable(_:)``).
    public var isUnavailable: Bool { code == .unavailable }
    /// The commit holds more bytes than the store takes in one transaction: nothing was committed; fewer changes at
    /// a time would be.
    public static func tooLarge(_ reason: String) -> CatalogStoreError {
        CatalogStoreError(.tooLarge, index: 0, reason: reason)
    }

    /// Whether the commit was too large for one transaction (see ``tooLarge(_:)``).
    public var isTooLarge: Bool { code == .tooLarge }

    /// Whether a commit may or may not have happened (see ``indeterminate(_:)``).
    public var isIndeterminate: Bool { code == .indeterminate }

    /// An instance changed since the change was planned against it: nothing was committed. `index` is the modify
    /// index of the change that beat the plan (one the store's change sequence yields): a catalog that has applied
    /// that far can plan again.
    public static func conflict(at index: UInt64) -> CatalogStoreError {
        CatalogStoreError(.conflict, index: index)
    }

    /// The changes up to and including `index` are no longer held: load the catalog again.
    public static func compacted(through index: UInt64) -> CatalogStoreError {
        CatalogStoreError(.compacted, index: index)
    }

    /// Whether a precondition failed (see ``conflict(at:)``).
    public var isConflict: Bool { code == .conflict }
    /// Whether the changes asked for are no longer held (see ``compacted(through:)``).
    public var isCompacted: Bool { code == .compacted }

    public var description: String {
        switch code {
        case .conflict: "an instance changed in the store since the write was planned (store index \(index))"
        case .compacted: "the store no longer holds the changes up to index \(index); load the catalog again"
        case .unavailable: "the store is unavailable: \(reason)"
        case .indeterminate: "the store did not confirm the commit, which may still happen: \(reason)"
        case .tooLarge: "the commit is too large for one transaction of the store: \(reason)"
        }
    }
}

extension PlannedChange {
    /// Checks this change's precondition against `current`, the modify index of its instance in the store (`nil`
    /// when the store holds none).
    public func holds(against current: UInt64?) -> Bool {
        expectedModifyIndex == current
    }
}

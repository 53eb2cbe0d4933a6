import SwitchboardCore
import Synchronization

import struct Foundation.Date

/// Writes: queued, planned in batches, committed by the store, and acknowledged once the store's change sequence
/// has brought them back and they are applied.
extension Catalog {
    /// Registers or updates an instance; with `cas`, only if its modify index still equals `cas` (0: only create).
    /// `by`, here and in the other writes, is who asked (the event records it for the audit trail).
    public func register(
        _ definition: InstanceDefinition, cas: UInt64? = nil, by: AuditRecord? = nil
    ) async throws -> WriteOutcome {
        try await submit(.register(definition, cas: cas), by: by)
    }

    /// Removes an instance; throws ``CatalogError/instanceNotFound(service:id:)`` when it is not registered.
    public func deregister(service: ServiceName, id: InstanceID, by: AuditRecord? = nil) async throws -> WriteOutcome {
        try await submit(.deregister(service: service, id: id), by: by)
    }

    /// Turns maintenance (drain) on or off for an instance.
    public func setMaintenance(
        service: ServiceName, id: InstanceID, enabled: Bool, reason: String = "", by: AuditRecord? = nil
    ) async throws -> WriteOutcome {
        try await submit(.maintenance(service: service, id: id, enabled: enabled, reason: reason), by: by)
    }

    /// Logs what a client saw of an instance as an `observed` event; the instance and its health stay as they are.
    /// Throws ``CatalogError/instanceNotFound(service:id:)`` when the instance is not registered.
    public func recordObservation(
        _ observation: Observation, service: ServiceName, id: InstanceID, by: AuditRecord? = nil
    ) async throws -> WriteOutcome {
        try await submit(.observe(service: service, id: id, observation: observation), by: by)
    }

    /// Records a check's new status (the health checker's verdict after its thresholds) as a change event.
    public func recordCheckStatus(_ update: CheckStatusUpdate) async throws -> WriteOutcome {
        try await submit(.checkStatus(update))
    }

    /// Queues `mutation` and waits until it is committed and applied (or refused). `by` names who asked for it, for
    /// the audit trail: the event records it.
    public func submit(_ mutation: CatalogMutation, by: AuditRecord? = nil) async throws -> WriteOutcome {
        try await withCheckedThrowingContinuation { continuation in
            if !writes.enqueue(PendingWrite(mutation: mutation, by: by, continuation: continuation)) {
                continuation.resume(throwing: CatalogError.unavailable)
            }
        }
    }

    /// The number of writes waiting to be committed (a gauge of write pressure).
    public var queuedWrites: Int { writes.count }

    /// Applies the store's committed changes and commits queued writes, until ``finishWrites()`` is called or the
    /// calling task is cancelled.
    ///
    /// Run it exactly once, for as long as the catalog is in use (the agent runs it as a service). After
    /// ``finishWrites()`` it commits what was already queued, then returns; on cancellation it fails the writes
    /// still queued with ``CatalogError/unavailable``. Either way no caller waits forever. It throws when the store's
    /// change sequence fails: the catalog can no longer tell what the store holds.
    public func run() async throws {
        // Opened before any write: every commit after the loaded index reaches the catalog, its own included.
        let start = index
        applied.advance(to: start)
        let changes: AsyncThrowingStream<[CommittedChange], any Error>
        do {
            changes = try await store.changes(after: start)
        } catch {
            // No change will ever be applied: no write may wait for one.
            writes.close()
            applied.fail(with: error)
            for write in writes.drain() { write.continuation.resume(throwing: CatalogError.unavailable) }
            throw error
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.follow(changes) }
            group.addTask {
                await self.writeQueued()
                throw WritesFinished()
            }
            do {
                try await group.next()
                // The change sequence ended with the store: writes can no longer be acknowledged.
                writes.close()
                try await group.next()
            } catch is WritesFinished {
                group.cancelAll()
            } catch {
                writes.close()
                group.cancelAll()
                applied.fail(with: error)
                throw error
            }
        }
    }

    /// Stops taking writes: later ones fail with ``CatalogError/unavailable``; queued ones are still committed.
    ///
    /// The graceful way to stop ``run()``: call it once the HTTP server no longer takes requests.
    public func finishWrites() {
        writes.close()
    }

    /// The writer's normal end, which stops the rest of ``run()``.
    private struct WritesFinished: Error {}

    /// Applies what the store's change sequence yields; when the store no longer holds the changes the catalog
    /// needs next (a compaction), loads the catalog again and goes on from there.
    private func follow(_ first: AsyncThrowingStream<[CommittedChange], any Error>) async throws {
        var changes = first
        var compactions = 0
        var indexAtLastCompaction = index
        while true {
            do {
                try await apply(changes)
                break
            } catch let error as CatalogStoreError where error.isCompacted && compactions < 8 {
                // Only repeated compactions with no change applied in between (a store compacting faster than a
                // load) end the catalog.
                compactions = index > indexAtLastCompaction ? 1 : compactions + 1
                let stored = try await loadAgain()
                indexAtLastCompaction = max(index, stored.index)
                resynchronize(with: stored)
                do {
                    changes = try await store.changes(after: stored.index)
                } catch let error as CatalogStoreError where error.isCompacted {
                    changes = AsyncThrowingStream { $0.finish(throwing: error) }
                }
            }
        }
        applied.fail(with: CatalogError.unavailable)
    }

    /// Loads the catalog from the store again, waiting out a store that is unavailable for now (the catalog keeps
    /// answering from its view meanwhile); throws only when cancelled or on another error.
    private func loadAgain() async throws -> StoredCatalog {
        var wait = Duration.milliseconds(100)
        while true {
            do {
                return try await store.load()
            } catch let error as CatalogStoreError where error.isUnavailable {
                try await Task.sleep(for: wait)
                wait = min(wait * 2, .seconds(2))
            }
        }
    }

    /// Replaces the state with what the store holds now, telling the observers of every difference as a change at
    /// the store's index, so watch streams, DNS and the health checker end up where a follower that missed nothing
    /// would be.
    private func resynchronize(with stored: StoredCatalog) {
        let now = SwitchboardJSON.millisecondPrecision(Date())
        let (changes, index, observers) = state.withLock { state in
            let changes = state.resynchronize(with: stored, at: now)
            return (changes, state.index, self.observers.withLock { $0 })
        }
        if !changes.isEmpty {
            for observer in observers { observer(changes) }
        }
        applied.advance(to: index)
    }

    /// Applies each commit the store yields, tells the observers, then lets the writes that wait for it go; returns
    /// when the sequence ends.
    private func apply(_ changes: AsyncThrowingStream<[CommittedChange], any Error>) async throws {
        for try await commit in changes {
            let (appliedChanges, index, observers) = state.withLock { state in
                // A commit the catalog holds already (a store may replay one it also published) is skipped whole.
                let fresh = commit.filter { $0.event.index > state.index }
                let appliedChanges = fresh.map { state.apply($0) }
                return (appliedChanges, state.index, self.observers.withLock { $0 })
            }
            if !appliedChanges.isEmpty {
                for observer in observers { observer(appliedChanges) }
            }
            applied.advance(to: index)
        }
    }

    /// Commits queued writes in batches until the queue is closed and drained, or the task is cancelled.
    private func writeQueued() async {
        await withTaskCancellationHandler {
            for await _ in writes.wakeups {
                while await commitNextBatch() {}
            }
            // A write queued just before the queue closed may have lost its wake-up to the finished stream.
            while await commitNextBatch() {}
        } onCancel: {
            writes.close()
        }
        for write in writes.drain() {
            write.continuation.resume(throwing: CatalogError.unavailable)
        }
    }

    /// What planning one batch decided.
    private struct Plan {
        /// The changes to commit, in order.
        var changes: [PlannedChange] = []
        /// Per write of the batch: the position of its change, or its outcome without one.
        var results: [Result<Int?, CatalogError>] = []
        /// Per write: the instance it left unchanged (for a write that changed nothing), and the change of the same
        /// batch that instance came from, if any.
        var unchanged: [(instance: Instance, source: Int?)?] = []
        /// The keys whose instance the batch changes.
        var touched: Set<InstanceKey> = []
    }

    /// Plans `batch` against the current state, in order: a write is planned against the result of the writes
    /// before it in the batch.
    private func plan(_ batch: [PendingWrite]) -> Plan {
        let now = SwitchboardJSON.millisecondPrecision(Date())
        let (index, stored) = state.withLock { state in
            (state.index, batch.map { state.instance($0.mutation.key) })
        }
        var plan = Plan()
        // The instance each key has after the changes planned so far, and the change that made it.
        var planned: [InstanceKey: (instance: Instance?, source: Int)] = [:]
        for (position, write) in batch.enumerated() {
            let key = write.mutation.key
            let before = planned[key].map(\.instance) ?? stored[position]
            do {
                guard var change = try CatalogState.plan(write.mutation, current: before, at: now) else {
                    // Only an existing instance can be left unchanged: planning refuses a missing one.
                    plan.results.append(.success(nil))
                    plan.unchanged.append(before.map { ($0, planned[key]?.source) })
                    continue
                }
                // Provisional indexes, so writes planned against this change see it numbered (a `cas` on it fails
                // as it would once committed); the store gives the real ones.
                let provisional = index + UInt64(plan.changes.count) + 1
                if change.kind == .added { change.instance.createIndex = provisional }
                if change.kind != .observed { change.instance.modifyIndex = provisional }
                // Every change's precondition is the store as it was before the batch.
                change.expectedModifyIndex = stored[position]?.modifyIndex
                change.by = write.by
                planned[key] = (change.kind == .removed ? nil : change.instance, plan.changes.count)
                plan.touched.insert(key)
                plan.results.append(.success(plan.changes.count))
                plan.unchanged.append(nil)
                plan.changes.append(change)
            } catch {
                plan.results.append(.failure(error))
                plan.unchanged.append(nil)
            }
        }
        return plan
    }

    /// Commits one batch; returns `false` when the queue was empty or the writer was cancelled.
    private func commitNextBatch() async -> Bool {
        // A cancelled writer commits nothing more: the store would refuse it anyway, and the callers learn at once.
        guard !Task.isCancelled else { return false }
        var batch = writes.take(upTo: min(configuration.maximumBatch, store.maximumChangesPerCommit))
        guard !batch.isEmpty else { return false }

        var replans = 0
        while true {
            let plan = plan(batch)
            var committed: [CommittedChange] = []
            var failure: CatalogError?
            if !plan.changes.isEmpty {
                do {
                    committed = try await measuredCommit(plan.changes)
                } catch let error as CatalogStoreError where error.isConflict && replans < configuration.maximumReplans
                {
                    // Another writer changed an instance of the batch: catch up with the store (for a while at most:
                    // a plan against a view still behind is refused again, and counted) and plan again.
                    replans += 1
                    do {
                        try await applied.wait(for: error.index, atMost: configuration.catchUpWait)
                        continue
                    } catch {
                        // Cancelled, or the catalog stopped applying changes: the writes cannot be planned again.
                        failure = .unavailable
                    }
                } catch let error as CatalogStoreError where error.isConflict {
                    failure = plan.changes.first.map { CatalogError.contended($0.key) } ?? .unavailable
                } catch let error as CatalogStoreError where error.isTooLarge && batch.count > 1 {
                    // Too many bytes for one commit: the first half now, the rest back at the head of the queue.
                    writes.putBack(Array(batch[(batch.count / 2)...]))
                    batch = Array(batch[..<(batch.count / 2)])
                    continue
                } catch let error as CatalogStoreError where error.isUnavailable {
                    failure = .storeUnavailable(error.reason)
                } catch let error as CatalogStoreError where error.isIndeterminate {
                    failure = .storeIndeterminate(error.reason)
                } catch {
                    failure = error is CancellationError ? .unavailable : .storeFailed(String(describing: error))
                }
                if failure == nil, committed.count != plan.changes.count {
                    // A store that broke its contract: nothing can be said of what it did.
                    failure = .storeFailed(
                        "the store answered \(committed.count) committed changes for \(plan.changes.count)")
                } else if failure == nil {
                    let target = committed.map(\.event.index).max() ?? 0
                    do {
                        // Bounded: a change sequence that silently stopped must not hold writes for ever.
                        try await applied.wait(for: target, atMost: configuration.applyWait)
                        if index < target { failure = .unconfirmed }
                    } catch {
                        // Durable, but this catalog will not apply it: the write may have happened.
                        failure = .unconfirmed
                    }
                }
            }
            acknowledge(batch, plan: plan, committed: committed, failure: failure)
            return true
        }
    }

    /// Commits `changes` to the store, telling the commit observers how long it took and whether it succeeded.
    private func measuredCommit(_ changes: [PlannedChange]) async throws -> [CommittedChange] {
        let observers = commitObservers.withLock { $0 }
        guard !observers.isEmpty else { return try await store.commit(changes) }
        let start = ContinuousClock.now
        var succeeded = false
        defer {
            let measurement = CommitMeasurement(
                duration: ContinuousClock.now - start, changes: changes.count, succeeded: succeeded)
            for observer in observers { observer(measurement) }
        }
        let committed = try await store.commit(changes)
        succeeded = true
        return committed
    }

    /// Resumes every write of the batch: with its committed change, with what it left unchanged, or with why not.
    private func acknowledge(
        _ batch: [PendingWrite], plan: Plan, committed: [CommittedChange], failure: CatalogError?
    ) {
        let index = self.index
        for (position, write) in batch.enumerated() {
            // A failed commit fails every write to a key the batch changed: some were planned against changes that
            // never became durable.
            if let failure, plan.touched.contains(write.mutation.key) {
                write.continuation.resume(throwing: failure)
                continue
            }
            switch plan.results[position] {
            case .failure(let error):
                write.continuation.resume(throwing: error)
            case .success(let change?):
                let change = committed[change]
                write.continuation.resume(
                    returning: WriteOutcome(
                        instance: change.event.instance, event: change.event, index: index,
                        instanceJSON: change.instanceJSON))
            case .success(nil):
                guard let (instance, source) = plan.unchanged[position] else {
                    write.continuation.resume(throwing: CatalogError.storeFailed("a write left no instance"))
                    continue
                }
                // Left as an earlier write of the batch made it: as committed, with the store's indexes.
                let current = source.map { committed[$0].event.instance } ?? instance
                write.continuation.resume(
                    returning: WriteOutcome(instance: current, event: nil, index: index, instanceJSON: nil))
            }
        }
    }
}

/// A write waiting for the writer.
struct PendingWrite {
    var mutation: CatalogMutation
    var by: AuditRecord?
    var continuation: CheckedContinuation<Catalog.WriteOutcome, any Error>
}

/// The writes waiting to be committed, and the signal that wakes the writer.
final class WriteQueue: Sendable {
    private struct Contents {
        var pending: [PendingWrite] = []
        var closed = false
    }

    private let contents = Mutex(Contents())
    let wakeups: AsyncStream<Void>
    private let wakeup: AsyncStream<Void>.Continuation

    init() {
        (wakeups, wakeup) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Queues `write` and wakes the writer; `false` once the queue is closed.
    func enqueue(_ write: PendingWrite) -> Bool {
        let accepted = contents.withLock { contents in
            guard !contents.closed else { return false }
            contents.pending.append(write)
            return true
        }
        if accepted { wakeup.yield() }
        return accepted
    }

    /// Puts `writes` (taken, then not committed) back at the head of the queue, in order.
    func putBack(_ writes: [PendingWrite]) {
        contents.withLock { $0.pending.insert(contentsOf: writes, at: 0) }
        wakeup.yield()
    }

    /// The oldest writes, at most `limit`, taken off the queue.
    func take(upTo limit: Int) -> [PendingWrite] {
        contents.withLock { contents in
            let count = min(contents.pending.count, max(1, limit))
            defer { contents.pending.removeFirst(count) }
            return Array(contents.pending.prefix(count))
        }
    }

    /// Every write still queued, taken off a queue that is closed from now on.
    func drain() -> [PendingWrite] {
        contents.withLock { contents in
            contents.closed = true
            defer { contents.pending = [] }
            return contents.pending
        }
    }

    /// Refuses writes from now on; the writer still commits what is queued, then ends.
    func close() {
        contents.withLock { $0.closed = true }
        wakeup.finish()
    }

    var count: Int { contents.withLock { $0.pending.count } }
}

/// How far the catalog has applied the store's changes, for writes that wait to see their own commit applied.
final class AppliedIndex: Sendable {
    private struct Waiter {
        var index: UInt64
        var continuation: CheckedContinuation<Void, any Error>
    }

    private struct Contents {
        var index: UInt64 = 0
        var waiters: [Int: Waiter] = [:]
        var next = 0
        var failure: (any Error)?
    }

    private let contents = Mutex(Contents())

    /// Waits until changes up to `index` are applied; throws when they never will be (the change sequence ended,
    /// or the waiting task was cancelled).
    func wait(for index: UInt64) async throws {
        let id = contents.withLock { contents in
            defer { contents.next += 1 }
            return contents.next
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                let outcome = contents.withLock { contents -> Result<Bool, any Error> in
                    if contents.index >= index { return .success(true) }
                    if let failure = contents.failure { return .failure(failure) }
                    // Cancelled before the waiter was registered: the cancellation handler found nothing to end.
                    if Task.isCancelled { return .failure(CancellationError()) }
                    contents.waiters[id] = Waiter(index: index, continuation: continuation)
                    return .success(false)
                }
                switch outcome {
                case .success(true): continuation.resume()
                case .success(false): break
                case .failure(let error): continuation.resume(throwing: error)
                }
            }
        } onCancel: {
            contents.withLock { $0.waiters.removeValue(forKey: id) }?.continuation.resume(
                throwing: CancellationError())
        }
    }

    /// Waits as ``wait(for:)`` does, for `limit` at most; returns without an error when the time is up.
    func wait(for index: UInt64, atMost limit: Duration) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.wait(for: index) }
            group.addTask { try await Task.sleep(for: limit) }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// Records that changes up to `index` are applied, and lets the writes waiting for them go.
    func advance(to index: UInt64) {
        let ready = contents.withLock { contents -> [Waiter] in
            contents.index = max(contents.index, index)
            let ready = contents.waiters.filter { $0.value.index <= contents.index }
            for id in ready.keys { contents.waiters[id] = nil }
            return Array(ready.values)
        }
        for waiter in ready { waiter.continuation.resume() }
    }

    /// No further change will be applied: every waiting write fails with `error`, and so do later ones.
    func fail(with error: any Error) {
        let waiting = contents.withLock { contents -> [Waiter] in
            if contents.failure == nil { contents.failure = error }
            defer { contents.waiters = [:] }
            return Array(contents.waiters.values)
        }
        for waiter in waiting { waiter.continuation.resume(throwing: error) }
    }
}

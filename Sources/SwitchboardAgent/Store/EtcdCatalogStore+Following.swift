import Foundation
import Logging
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardEtcd
import Synchronization

/// Following etcd: the change sequence, how current this agent's view is, and the log's pruning.
extension EtcdCatalogStore {
    /// Every commit after `index`, from one etcd watch on the catalog's log keys, resumed on another member (from the
    /// revision after the last one seen) whenever a member goes away.
    ///
    /// While no member can be reached the sequence simply yields nothing: the catalog keeps answering from its view,
    /// and ``viewAge`` says how old that view is. It throws `CatalogStoreError.compacted(through:)` when etcd no
    /// longer holds the revisions it must resume from; the catalog then loads again.
    public func changes(after index: UInt64) async throws -> AsyncThrowingStream<[CommittedChange], any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: [CommittedChange].self)
        var start = Int64(clamping: index) + 1
        if let load = lastLoad.withLock({ $0 }), load.index == index { start = max(start, load.revision + 1) }
        // The follower lives exactly as long as the sequence: ending the iteration cancels it.
        let follower = Task { [start] in await follow(from: start, into: continuation) }
        continuation.onTermination = { _ in follower.cancel() }
        return stream
    }

    private func follow(
        from start: Int64, into continuation: AsyncThrowingStream<[CommittedChange], any Error>.Continuation
    ) async {
        let decoder = SwitchboardJSON.decoder()
        let next = RevisionCursor(start)
        var failures = 0
        while !Task.isCancelled {
            let from = next.value.withLock { $0 }
            let restarts = watchRestarts.withLock { $0 }
            do {
                // Only the log: every commit writes one log entry holding all its changes, so the instance and
                // service keys it also writes (the bulk of its keys) need not be streamed to every agent as well.
                let batches = try await client.watch(.prefix(keys.log), from: from)
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for try await batch in batches {
                            var commits: [CommittedChange] = []
                            var newest = next.value.withLock { $0 } - 1
                            for event in batch.events {
                                newest = max(newest, event.keyValue.modRevision)
                                guard event.kind == .put, event.keyValue.key.starts(with: self.keys.log) else {
                                    continue
                                }
                                commits += try Self.commit(from: event.keyValue, decoder: decoder)
                            }
                            if !commits.isEmpty { continuation.yield(commits) }
                            // A message without events (progress) is not taken as "everything up to its revision
                            // was sent": some etcd 3.4 releases send one ahead of events still pending. The probes in
                            // maintain() say how current the view is instead.
                            next.value.withLock { $0 = max($0, newest + 1) }
                            self.freshness.withLock { $0.delivered(through: newest) }
                        }
                    }
                    group.addTask {
                        // The watchdog: maintain() asks for a new watch when this one stopped delivering.
                        while self.watchRestarts.withLock({ $0 }) == restarts {
                            try await Task.sleep(for: .milliseconds(250))
                        }
                        throw EtcdError.unavailable("the watch stopped delivering changes etcd had committed")
                    }
                    defer { group.cancelAll() }
                    try await group.next()
                }
                failures = 0
            } catch EtcdError.compacted(let oldest) {
                logger.warning(
                    "etcd compacted changes this agent had not seen; loading the catalog again",
                    metadata: ["from_revision": "\(next.value.withLock { $0 })", "oldest_held": "\(oldest)"])
                continuation.finish(throwing: CatalogStoreError.compacted(through: UInt64(max(0, oldest - 1))))
                return
            } catch let error as CatalogStoreError {
                // A log entry that does not decode: applying around it would leave the view wrong for good.
                continuation.finish(throwing: error)
                return
            } catch {
                if Task.isCancelled { break }
                failures += 1
                freshness.withLock { $0.lastFailure = String(describing: error) }
                if failures == 1 || failures % 20 == 0 {
                    logger.warning(
                        "the watch on etcd stopped; resuming on another member",
                        metadata: ["error": "\(error)", "from_revision": "\(next.value.withLock { $0 })"])
                }
                // Quickly at first (another member is likely up), then once per half second.
                try? await Task.sleep(for: .milliseconds(min(500, 25 << min(failures, 5))))
            }
        }
        continuation.finish()
    }

    /// How long ago this agent's view was last known to hold every change etcd had committed; `nil` when it never
    /// was (etcd not reached since start-up).
    public var viewAge: Duration? {
        freshness.withLock { $0.confirmedAt }.map { ContinuousClock.now - $0 }
    }

    /// The last error reaching etcd, while the view is not current.
    public var lastFailure: String? {
        freshness.withLock { $0.lastFailure }
    }

    /// Checks, once per ``Configuration/freshnessInterval``, that this agent's view is current, and prunes the log
    /// now and then; runs until cancelled. The agent runs it beside the catalog.
    public func maintain() async throws {
        var lastPrune = ContinuousClock.now
        while true {
            try await Task.sleep(for: configuration.freshnessInterval)
            let asked = ContinuousClock.now
            do {
                // A linearizable read (it needs a quorum): the newest revision among the catalog's keys.
                let newest = try await client.range(
                    EtcdRangeRequest(
                        .prefix(keys.catalog), limit: 1, sortOrder: .descending, sortTarget: .modification,
                        keysOnly: true),
                    timeout: configuration.freshnessInterval)
                let revision = newest.keyValues.first?.modRevision ?? 0
                let stalled = freshness.withLock { freshness in
                    freshness.probed(latest: revision, at: asked)
                    return freshness.behindSince.map { ContinuousClock.now - $0 > .seconds(5) } ?? false
                }
                if stalled {
                    // etcd has changes this agent's watch has not delivered for seconds: a connection that went
                    // half-open, say. A new watch resumes from the last revision delivered.
                    logger.warning("the watch on etcd is stuck; starting a new one")
                    freshness.withLock { $0.restarted() }
                    watchRestarts.withLock { $0 &+= 1 }
                }
            } catch {
                freshness.withLock { $0.lastFailure = String(describing: error) }
            }
            if ContinuousClock.now - lastPrune > .seconds(30) {
                lastPrune = .now
                do {
                    try await pruneLog()
                } catch {
                    logger.notice("could not prune the catalog log in etcd", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    /// Deletes the oldest log entries beyond ``Configuration/logRetention`` and records how far the log is pruned.
    ///
    /// Exactly the keys read are deleted (a hundred per transaction), and the newest revision among them is recorded
    /// in the same transaction: an entry that lands meanwhile is never deleted unrecorded.
    func pruneLog() async throws {
        let all = EtcdKeyRange.prefix(keys.log)
        let counted = try await client.range(EtcdRangeRequest(all, limit: 1, keysOnly: true))
        var excess = counted.count - Int64(configuration.logRetention)
        var rounds = 0
        while excess > 0, rounds < 20 {
            rounds += 1
            let oldest = try await client.range(
                EtcdRangeRequest(all, limit: min(excess, 100), sortOrder: .ascending, sortTarget: .key, keysOnly: true))
            guard !oldest.keyValues.isEmpty else { return }
            let prunedRevision = oldest.keyValues.map(\.modRevision).max() ?? 0
            let marker = try await client.range(EtcdRangeRequest(EtcdKeyRange(key: keys.prunedThrough)))
            let previous = marker.keyValues.first.flatMap { Int64(String(decoding: $0.value, as: UTF8.self)) } ?? 0
            // Another agent pruning at the same time makes this compare fail: it did the work.
            let done = try await client.transaction(
                EtcdTransaction(
                    compare: [
                        .modRevision(of: keys.prunedThrough, equals: marker.keyValues.first?.modRevision ?? 0)
                    ],
                    success: oldest.keyValues.map { .deleteRange(EtcdKeyRange(key: $0.key)) } + [
                        .put(key: keys.prunedThrough, value: Array(String(max(previous, prunedRevision)).utf8))
                    ]))
            guard done.succeeded else { return }
            excess -= Int64(oldest.keyValues.count)
        }
    }
}

/// What the store knows of how current its view is.
struct Freshness: Sendable {
    /// Every catalog change up to this revision has been handed to the catalog.
    private(set) var deliveredThrough: Int64 = 0
    /// When the view was last known to be current.
    private(set) var confirmedAt: ContinuousClock.Instant?
    /// Probes that found changes not yet delivered: the view is current as of `at` once `revision` is delivered.
    private var pending: [(revision: Int64, at: ContinuousClock.Instant)] = []

    /// Since when a probe has found changes the watch has not delivered (nil: none pending).
    var behindSince: ContinuousClock.Instant? { pending.first?.at }

    /// Forgets the pending probes once a new watch was asked for, so it gets its own time to catch up.
    mutating func restarted() {
        pending.removeAll()
    }
    /// The last error reaching etcd, cleared by the next confirmation.
    var lastFailure: String?

    mutating func delivered(through revision: Int64) {
        deliveredThrough = max(deliveredThrough, revision)
        while let first = pending.first, first.revision <= deliveredThrough {
            confirm(at: first.at)
            pending.removeFirst()
        }
    }

    mutating func probed(latest revision: Int64, at instant: ContinuousClock.Instant) {
        if revision <= deliveredThrough {
            confirm(at: instant)
        } else {
            pending.append((revision, instant))
            if pending.count > 64 { pending.removeFirst() }
        }
    }

    private mutating func confirm(at instant: ContinuousClock.Instant) {
        if confirmedAt.map({ $0 < instant }) ?? true { confirmedAt = instant }
        lastFailure = nil
    }
}

extension Duration {
    /// Whole milliseconds.
    var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}

/// The revision a watch resumes from, shared by the follower's tasks.
final class RevisionCursor: Sendable {
    let value: Mutex<Int64>

    init(_ start: Int64) {
        value = Mutex(start)
    }
}

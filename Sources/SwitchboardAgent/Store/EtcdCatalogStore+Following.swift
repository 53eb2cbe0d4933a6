import Foundation
import Logging
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardEtcd
import Synchronization

/// Following etcd: the change sequence, how current this agent's view is, and the log's pruning.
extension EtcdCatalogStore {
    /// Every commit after `index`, from one etcd watch on the catalog's keys, resumed on another member (from the
    /// revision after the last one seen) whenever a member goes away.
    ///
    /// While no member can be reached the sequence simply yields nothing: the catalog keeps answering from its view,
    /// and ``viewAge`` says how old that view is. It throws `CatalogStoreError.compacted(through:)` when etcd no
    /// longer holds the revisions it must resume from; the catalog then loads again.
    public func changes(after index: UInt64) async throws -> AsyncThrowingStream<[CommittedChange], any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: [CommittedChange].self)
        // The follower lives exactly as long as the sequence: ending the iteration cancels it.
        let follower = Task { await follow(from: Int64(clamping: index) + 1, into: continuation) }
        continuation.onTermination = { _ in follower.cancel() }
        return stream
    }

    private func follow(
        from start: Int64, into continuation: AsyncThrowingStream<[CommittedChange], any Error>.Continuation
    ) async {
        let decoder = SwitchboardJSON.decoder()
        var next = start
        var failures = 0
        while !Task.isCancelled {
            do {
                let batches = try await client.watch(.prefix(keys.catalog), from: next)
                for try await batch in batches {
                    failures = 0
                    var commits: [CommittedChange] = []
                    var newest = next - 1
                    for event in batch.events {
                        newest = max(newest, event.keyValue.modRevision)
                        guard event.kind == .put, event.keyValue.key.starts(with: keys.log) else { continue }
                        commits += try Self.commit(from: event.keyValue, decoder: decoder)
                    }
                    if !commits.isEmpty { continuation.yield(commits) }
                    // A message without events is progress: every change up to its revision has been sent.
                    if batch.events.isEmpty { newest = max(newest, batch.revision) }
                    next = max(next, newest + 1)
                    freshness.withLock { $0.delivered(through: next - 1) }
                }
            } catch EtcdError.compacted(let oldest) {
                logger.warning(
                    "etcd compacted changes this agent had not seen; loading the catalog again",
                    metadata: ["from_revision": "\(next)", "oldest_held": "\(oldest)"])
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
                        metadata: ["error": "\(error)", "from_revision": "\(next)"])
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
                freshness.withLock { $0.probed(latest: revision, at: asked) }
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
    func pruneLog() async throws {
        let all = EtcdKeyRange.prefix(keys.log)
        let counted = try await client.range(EtcdRangeRequest(all, limit: 1, keysOnly: true))
        let excess = counted.count - Int64(configuration.logRetention)
        guard excess > 0 else { return }
        let oldest = try await client.range(
            EtcdRangeRequest(all, limit: excess, sortOrder: .ascending, sortTarget: .key, keysOnly: true))
        guard let last = oldest.keyValues.last else { return }
        let prunedRevision = oldest.keyValues.map(\.modRevision).max() ?? 0
        let marker = try await client.range(EtcdRangeRequest(EtcdKeyRange(key: keys.prunedThrough)))
        let previous = marker.keyValues.first.flatMap { Int64(String(decoding: $0.value, as: UTF8.self)) } ?? 0
        // Another agent pruning at the same time makes this compare fail: it did the work.
        _ = try await client.transaction(
            EtcdTransaction(
                compare: [.modRevision(of: keys.prunedThrough, equals: marker.keyValues.first?.modRevision ?? 0)],
                success: [
                    .deleteRange(EtcdKeyRange(from: keys.log, to: last.key + [0])),
                    .put(key: keys.prunedThrough, value: Array(String(max(previous, prunedRevision)).utf8)),
                ]))
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

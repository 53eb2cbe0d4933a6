import Synchronization

/// The ``CatalogStore/changes(after:)`` sequences of a store that only this process writes (in memory, SQLite):
/// each commit is handed to every open sequence as it is made.
///
/// The store calls ``publish(_:)`` after each commit and ``subscribe(replaying:)`` to open a sequence, both while
/// holding whatever orders its commits (so a commit is either in the replay or published to the new sequence,
/// never neither, never both).
package final class LocalChangeFeed: Sendable {
    private struct Subscribers {
        var continuations: [Int: AsyncThrowingStream<[CommittedChange], any Error>.Continuation] = [:]
        /// Sequences opened and not ended yet: one whose consumer stopped before it was registered is not.
        var open: Set<Int> = []
        var next = 0
        var closed = false
    }

    private let subscribers = Mutex(Subscribers())

    package init() {}

    /// A sequence that yields `replay` first (when not empty), then every commit published from now on.
    package func subscribe(replaying replay: [CommittedChange]) -> AsyncThrowingStream<[CommittedChange], any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: [CommittedChange].self)
        if !replay.isEmpty { continuation.yield(replay) }
        let id = subscribers.withLock { subscribers in
            defer { subscribers.next += 1 }
            subscribers.open.insert(subscribers.next)
            return subscribers.next
        }
        // Set before the sequence is registered: a consumer that stops at any moment takes its registration with it.
        continuation.onTermination = { [weak self] _ in
            self?.subscribers.withLock { subscribers in
                subscribers.open.remove(id)
                subscribers.continuations[id] = nil
            }
        }
        let registered = subscribers.withLock { subscribers in
            guard !subscribers.closed, subscribers.open.contains(id) else { return false }
            subscribers.continuations[id] = continuation
            return true
        }
        if !registered { continuation.finish() }
        return stream
    }

    /// Hands one commit to every open sequence.
    package func publish(_ commit: [CommittedChange]) {
        guard !commit.isEmpty else { return }
        for continuation in subscribers.withLock({ Array($0.continuations.values) }) {
            continuation.yield(commit)
        }
    }

    /// Ends every open sequence, and those opened later (the store is closing).
    package func finish() {
        let continuations = subscribers.withLock { subscribers in
            subscribers.closed = true
            defer { subscribers.continuations = [:] }
            return Array(subscribers.continuations.values)
        }
        for continuation in continuations { continuation.finish() }
    }
}

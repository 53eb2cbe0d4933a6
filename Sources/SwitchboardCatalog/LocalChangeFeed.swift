import Synchronization

/// The ``CatalogStore/changes(after:)`` sequences of a store that only this process writes (in memory, SQLite):
/// each commit is handed to every open sequence as it is made.
///
/// The store calls ``publish(_:)`` after each commit and ``subscribe(replaying:)`` to open a sequence, both while
/// holding whatever orders its commits (so a commit is either in the replay or published to the new sequence,
/// never neither, never both).
public final class LocalChangeFeed: Sendable {
    private struct Subscribers {
        var continuations: [Int: AsyncThrowingStream<[CommittedChange], any Error>.Continuation] = [:]
        var next = 0
        var closed = false
    }

    private let subscribers = Mutex(Subscribers())

    public init() {}

    /// A sequence that yields `replay` first (when not empty), then every commit published from now on.
    public func subscribe(replaying replay: [CommittedChange]) -> AsyncThrowingStream<[CommittedChange], any Error> {
        let (stream, continuation) = AsyncThrowingStream.makeStream(of: [CommittedChange].self)
        if !replay.isEmpty { continuation.yield(replay) }
        let id = subscribers.withLock { subscribers -> Int? in
            guard !subscribers.closed else { return nil }
            defer { subscribers.next += 1 }
            subscribers.continuations[subscribers.next] = continuation
            return subscribers.next
        }
        guard let id else {
            continuation.finish()
            return stream
        }
        continuation.onTermination = { [weak self] _ in
            self?.subscribers.withLock { _ = $0.continuations.removeValue(forKey: id) }
        }
        return stream
    }

    /// Hands one commit to every open sequence.
    public func publish(_ commit: [CommittedChange]) {
        guard !commit.isEmpty else { return }
        for continuation in subscribers.withLock({ Array($0.continuations.values) }) {
            continuation.yield(commit)
        }
    }

    /// Ends every open sequence, and those opened later (the store is closing).
    public func finish() {
        let continuations = subscribers.withLock { subscribers in
            subscribers.closed = true
            defer { subscribers.continuations = [:] }
            return Array(subscribers.continuations.values)
        }
        for continuation in continuations { continuation.finish() }
    }
}

import DequeModule
import HeapModule
import NIOCore
import ServiceLifecycle
import SwitchboardCatalog
import SwitchboardCore
import Synchronization

/// How watches behave: how much change history they share, how often idle streams are kept alive, how long a
/// blocking query may wait.
public struct WatchConfiguration: Sendable {
    /// The most recent changes kept, as ready-to-send stream frames, for every watcher to read at its own pace.
    /// A watcher that falls further behind is resynchronised with a snapshot.
    public var frameCapacity: Int
    /// The most bytes those frames may take; the oldest go first (whichever limit is reached first applies).
    public var frameByteLimit: Int
    /// An idle stream gets a comment line this often, so proxies and load balancers keep it open.
    public var keepAliveInterval: Duration
    /// A blocking query without `wait` waits this long.
    public var defaultWait: Duration
    /// A longer `wait` is cut to this.
    public var maximumWait: Duration

    public init(
        frameCapacity: Int = 4096,
        frameByteLimit: Int = 16 * 1024 * 1024,
        keepAliveInterval: Duration = .seconds(15),
        defaultWait: Duration = .seconds(300),
        maximumWait: Duration = .seconds(600)
    ) {
        self.frameCapacity = frameCapacity
        self.frameByteLimit = frameByteLimit
        self.keepAliveInterval = keepAliveInterval
        self.defaultWait = defaultWait
        self.maximumWait = maximumWait
    }
}

/// Tells held blocking queries and open event streams about catalog changes.
///
/// Every change is encoded once, as a Server-Sent Events frame, into one shared, bounded ring. Watchers do not get
/// copies: each keeps a cursor (the last index it sent) and reads the ring from there at its own pace, so a change
/// costs the same whether ten or ten thousand streams follow it, and a consumer that stops reading holds no memory
/// of its own. A consumer whose cursor falls out of the ring is told to resynchronise (``Batch/behind``) and sends
/// a fresh snapshot instead.
///
/// Waiters are kept per service, so a change to `order` wakes only the watchers of `order` (and of the whole
/// catalog). Deadlines (a blocking query's `wait`, a stream's keep-alive) are served by one timer in ``run()``
/// rather than one per waiter. The hub is a swift-service-lifecycle `Service`; ``close()`` ends every wait.
public final class WatchHub: Service, Sendable {
    /// Why a wait ended.
    public enum Wake: Sendable, Equatable {
        /// Something the waiter follows changed (or may have: check again).
        case changed
        /// The deadline passed.
        case timedOut
        /// The hub is closing (the agent is shutting down) or the waiting task was cancelled.
        case closed
    }

    /// One change as a ready-to-send stream frame, with what a watcher needs to filter it.
    public struct Frame: Sendable {
        /// The catalog index the change produced (its event id: changes committed together may share one).
        public var index: UInt64
        public var kind: ChangeEvent.Kind
        /// The instance after the change (as it was, for a removal): what filters are applied to.
        public var instance: Instance
        /// The instance just before the change (nil for an addition).
        public var previous: Instance?
        /// `id: N` (on the last frame of an index only), `event: kind`, `data: {event JSON}` and the blank line that
        /// ends an SSE event.
        public var bytes: ByteBuffer
        /// Whether ``bytes`` carries the event id: the last of the changes that share an index does.
        public var carriesID: Bool
        /// Whether this stands only for the id of an index (see ``frames(after:service:limit:)``): it is no change.
        public var isIDOnly = false

        /// This frame's id alone, for a consumer that got part of its index and not this change.
        func idOnly() -> Frame {
            var frame = self
            frame.bytes = ByteBuffer(string: "id: \(index)\n\n")
            frame.isIDOnly = true
            return frame
        }

    }

    /// What a watcher finds after its cursor.
    public enum Batch: Sendable {
        /// Frames after the cursor (possibly none of the watcher's service), and the cursor to continue from.
        case frames([Frame], through: UInt64)
        /// Changes after the cursor are no longer held: send a snapshot and continue from its index.
        case behind
    }

    private struct Waiter {
        var continuation: CheckedContinuation<Wake, Never>
        var scope: ServiceName?
    }

    private struct Deadline: Comparable {
        var at: ContinuousClock.Instant
        var waiter: Int
        static func < (lhs: Self, rhs: Self) -> Bool { lhs.at < rhs.at }
    }

    private struct State {
        var frames: Deque<Frame> = []
        var frameBytes = 0
        /// The index of the newest change seen; frames hold every change after ``heldSince``.
        var latest: UInt64
        /// Every change after this index is in `frames`.
        var heldSince: UInt64
        var waiters: [Int: Waiter] = [:]
        var waitersByService: [ServiceName: Set<Int>] = [:]
        var catalogWaiters: Set<Int> = []
        var deadlines = Heap<Deadline>()
        var nextWaiter = 0
        var closed = false
        var resynchronisations = 0

        mutating func remove(_ id: Int) -> Waiter? {
            guard let waiter = waiters.removeValue(forKey: id) else { return nil }
            if let service = waiter.scope {
                waitersByService[service]?.remove(id)
                if waitersByService[service]?.isEmpty == true { waitersByService[service] = nil }
            } else {
                catalogWaiters.remove(id)
            }
            return waiter
        }
    }

    /// The limits it was created with (streams read the keep-alive interval, queries the waits).
    public let configuration: WatchConfiguration
    private let state: Mutex<State>
    /// Cuts the deadline loop's sleep short when a waiter's deadline comes before it.
    private let deadlineAlarm = Alarm()

    /// A hub following `catalog` from now on.
    public init(catalog: Catalog, configuration: WatchConfiguration = WatchConfiguration()) {
        self.configuration = configuration
        self.state = Mutex(State(latest: 0, heldSince: 0))
        let start = catalog.addChangeObserver { [weak self] changes in
            self?.publish(changes)
        }
        // Every change after `start` reaches `publish`, perhaps already: the frames hold every change after it.
        state.withLock { state in
            state.heldSince = max(state.heldSince, start)
            state.latest = max(state.latest, start)
        }
    }

    /// Appends a batch of changes and wakes the watchers of the services it touched.
    ///
    /// Called on the catalog's writer after the batch is applied, so a woken watcher always reads the new state.
    func publish(_ changes: [CommittedChange]) {
        // Changes committed together may share an index: only the last of them carries the event id, so a consumer
        // that resumes from an id never skips part of an index (one cut off inside it gets the whole index again).
        let frames = changes.indices.map { position in
            Self.frame(
                changes[position],
                carryingID: position == changes.count - 1
                    || changes[position + 1].event.index != changes[position].event.index)
        }
        let woken = state.withLock { state -> [CheckedContinuation<Wake, Never>] in
            for frame in frames {
                state.frames.append(frame)
                state.frameBytes += frame.bytes.readableBytes
                state.latest = max(state.latest, frame.index)
            }
            while let oldest = state.frames.first,
                state.frames.count > configuration.frameCapacity || state.frameBytes > configuration.frameByteLimit
            {
                state.frames.removeFirst()
                state.frameBytes -= oldest.bytes.readableBytes
                state.heldSince = oldest.index
            }
            var ids = state.catalogWaiters
            for service in Set(frames.map(\.instance.service)) {
                ids.formUnion(state.waitersByService[service] ?? [])
            }
            return ids.compactMap { state.remove($0)?.continuation }
        }
        for continuation in woken { continuation.resume(returning: .changed) }
    }

    /// The SSE frame of one change; the event JSON is the one the writer encoded (it holds no line breaks), without
    /// its audit record.
    static func frame(_ change: CommittedChange, carryingID: Bool = true) -> Frame {
        var bytes = ByteBuffer()
        bytes.reserveCapacity(change.eventJSON.count + 48)
        if carryingID { bytes.writeString("id: \(change.event.index)\n") }
        bytes.writeString("event: \(change.event.kind.rawValue)\ndata: ")
        if let audit = change.auditRange {
            bytes.writeBytes(change.eventJSON[..<audit.lowerBound])
            bytes.writeBytes(change.eventJSON[audit.upperBound...])
        } else {
            bytes.writeBytes(change.eventJSON)
        }
        bytes.writeString("\n\n")
        return Frame(
            index: change.event.index, kind: change.event.kind, instance: change.event.instance,
            previous: change.previous, bytes: bytes, carriesID: carryingID)
    }

    /// The frames after `cursor` (at most `limit`, of `service` only when given, and never ending inside an index),
    /// or ``Batch/behind``. When `service` leaves out the change that carries an index's id after taking others of
    /// that index, an id-only frame (``Frame/isIDOnly``) stands in for it, so the stream can still send the id.
    public func frames(after cursor: UInt64, service: ServiceName?, limit: Int = 256) -> Batch {
        state.withLock { state in
            guard cursor >= state.heldSince else { return .behind }
            // A cursor from the future (a snapshot read before its change was published) has nothing to read yet.
            guard cursor < state.latest, !state.frames.isEmpty else { return .frames([], through: cursor) }
            // The first frame after the cursor, by binary search: indexes skip, so no arithmetic finds it.
            var low = 0
            var high = state.frames.count
            while low < high {
                let middle = (low + high) / 2
                if state.frames[middle].index <= cursor { low = middle + 1 } else { high = middle }
            }
            var position = low
            var found: [Frame] = []
            var through = cursor
            // The index of a frame taken without its id, until the frame carrying that id comes by.
            var partlyTaken: UInt64?
            while position < state.frames.count {
                let frame = state.frames[position]
                // Frames that share an index go together: the cursor moves by whole indexes.
                if found.count >= limit, frame.index != through { break }
                if service == nil || frame.instance.service == service {
                    found.append(frame)
                    partlyTaken = frame.carriesID ? nil : frame.index
                } else if frame.carriesID, partlyTaken == frame.index {
                    found.append(frame.idOnly())
                    partlyTaken = nil
                }
                through = frame.index
                position += 1
            }
            return .frames(found, through: through)
        }
    }

    /// Every change after this index is held: where a stream whose own changes are all older can skip to.
    public var heldSince: UInt64 { state.withLock { $0.heldSince } }

    /// Whether the ring holds every change after `index` (so a stream can resume from it without a snapshot).
    public func canResume(after index: UInt64) -> Bool {
        state.withLock { index >= $0.heldSince && index <= $0.latest }
    }

    /// Whether a change of `service` (or of any service) arrived after `cursor`.
    private func hasChanges(after cursor: UInt64, service: ServiceName?) -> Bool {
        switch frames(after: cursor, service: service, limit: 1) {
        case .behind: true
        case .frames(let found, _): !found.isEmpty
        }
    }

    /// Waits until a stream following `service` (nil: the whole catalog) from `cursor` has something to send, or
    /// until `deadline`.
    public func waitForFrames(
        after cursor: UInt64, service: ServiceName?, deadline: ContinuousClock.Instant
    ) async -> Wake {
        await wait(service: service, deadline: deadline) { self.hasChanges(after: cursor, service: service) }
    }

    /// Waits until `isChanged` holds after a change to `service` (nil: any service), or until `deadline`.
    ///
    /// `isChanged` is checked once the waiter is registered, so a change that lands in between is never missed;
    /// after ``Wake/changed`` the caller checks again (a wake means "maybe").
    public func wait(
        service: ServiceName?, deadline: ContinuousClock.Instant, isChanged: @Sendable () -> Bool
    ) async -> Wake {
        let id = state.withLock { state in
            defer { state.nextWaiter += 1 }
            return state.nextWaiter
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let registered = state.withLock { state in
                    guard !state.closed else { return false }
                    state.waiters[id] = Waiter(continuation: continuation, scope: service)
                    if let service {
                        state.waitersByService[service, default: []].insert(id)
                    } else {
                        state.catalogWaiters.insert(id)
                    }
                    state.deadlines.insert(Deadline(at: deadline, waiter: id))
                    // Deadlines of waiters woken early stay until due; drop them when they outnumber the live ones.
                    if state.deadlines.count > 2 * state.waiters.count + 1024 {
                        let live = state.waiters
                        state.deadlines = Heap(state.deadlines.unordered.filter { live[$0.waiter] != nil })
                    }
                    return true
                }
                guard registered else { return continuation.resume(returning: .closed) }
                deadlineAlarm.wake(before: deadline)
                if Task.isCancelled {
                    wake(id, .closed)
                } else if isChanged() {
                    wake(id, .changed)
                } else if deadline <= .now {
                    wake(id, .timedOut)
                }
            }
        } onCancel: {
            wake(id, .closed)
        }
    }

    /// Ends waiter `id` with `reason`, if it still waits.
    private func wake(_ id: Int, _ reason: Wake) {
        state.withLock { $0.remove(id) }?.continuation.resume(returning: reason)
    }

    /// Ends every wait, now and later: held queries answer and streams end (the agent is shutting down).
    public func close() {
        let woken = state.withLock { state -> [Waiter] in
            state.closed = true
            defer {
                state.waiters = [:]
                state.waitersByService = [:]
                state.catalogWaiters = []
            }
            return Array(state.waiters.values)
        }
        for waiter in woken { waiter.continuation.resume(returning: .closed) }
    }

    /// Whether ``close()`` was called.
    public var isClosed: Bool { state.withLock { $0.closed } }

    /// Counts a watcher that fell out of the ring and was sent a snapshot instead.
    func countResynchronisation() {
        state.withLock { $0.resynchronisations += 1 }
    }

    /// What `GET /v1/agent` and `/metrics` report about watches.
    public func report() -> WatchReport {
        state.withLock { state in
            WatchReport(
                waiting: state.waiters.count, framesHeld: state.frames.count, frameBytes: state.frameBytes,
                resynchronisations: state.resynchronisations)
        }
    }

    /// Serves deadlines until graceful shutdown, then closes the hub. It sleeps until the next deadline (a new
    /// waiter due sooner wakes it), at most a second.
    public func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let now = ContinuousClock.now
                let (expired, next) = self.state.withLock { state -> ([Int], ContinuousClock.Instant?) in
                    var expired: [Int] = []
                    while let next = state.deadlines.min, next.at <= now {
                        state.deadlines.removeMin()
                        if state.waiters[next.waiter] != nil { expired.append(next.waiter) }
                    }
                    return (expired, state.deadlines.min?.at)
                }
                for id in expired { self.wake(id, .timedOut) }
                await self.deadlineAlarm.sleep(until: min(next ?? .now + .seconds(1), .now + .seconds(1)))
            }
        }
        close()
    }
}

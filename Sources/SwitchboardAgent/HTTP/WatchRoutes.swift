import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Prometheus
import ServiceLifecycle
import SwitchboardCatalog
import SwitchboardCore

/// Blocking queries and Server-Sent Events streams: the two ways a caller learns about changes without polling.
extension AgentHTTPAPI {
    /// A read's `?index=N&wait=D`: hold the answer until the relevant index passes `index`, or `wait` ends.
    struct BlockingQuery {
        var index: UInt64
        var wait: Duration
    }

    static let lastEventIDHeader = HTTPField.Name("Last-Event-ID")!

    /// The request's blocking-query parameters, or `nil` for a plain read (no `index`, or `index=0`).
    func blockingQuery(_ request: Request) throws -> BlockingQuery? {
        let parameters = request.uri.queryParameters
        var wait = watches.configuration.defaultWait
        if let text = parameters["wait"] {
            do {
                wait = try HumanDuration(parsing: String(text), field: "wait").duration
            } catch {
                throw APIError.badParameter(error)
            }
        }
        guard let text = parameters["index"] else { return nil }
        guard let index = UInt64(text) else {
            throw APIError.badParameter(
                ValidationError(field: "index", message: "index must be a catalog index (a whole number, 0 or more)"))
        }
        guard index > 0 else { return nil }
        // Like Consul: a longer wait is cut, not refused; jitter spreads the re-polls of many watchers that timed out
        // together.
        wait = min(wait, watches.configuration.maximumWait)
        let jitterLimit = Int64(wait / .milliseconds(1)) / 16
        let jitter = Duration.milliseconds(Int64.random(in: 0...max(0, jitterLimit)))
        return BlockingQuery(index: index, wait: wait + jitter)
    }

    /// Holds a blocking query until `currentIndex()` is past the query's index, its wait ends, or the agent stops.
    ///
    /// `service` scopes the wake-ups: a change to another service does not even wake the request. An index from the
    /// future (the agent restarted with less history than the caller saw) answers at once.
    /// A query held counts against the agent's held-request limit (429 beyond it).
    func holdUntilChanged(
        _ query: BlockingQuery?, service: ServiceName?, currentIndex: @escaping @Sendable () -> UInt64
    ) async throws {
        guard let query, query.index <= catalog.index, !watches.isClosed else { return }
        let deadline = ContinuousClock.now + query.wait
        let watches = self.watches
        try await limits.holding {
            await withGracefulShutdownHandler {
                while currentIndex() <= query.index {
                    let wake = await watches.wait(service: service, deadline: deadline) { currentIndex() > query.index }
                    if wake != .changed { return }
                }
            } onGracefulShutdown: {
                watches.close()
            }
        }
    }

    @Sendable func watchService(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let service = try serviceName(context)
        return try eventStream(service: service, query: try instanceQuery(request), request: request, context: context)
    }

    /// The whole catalog's stream, of the services the caller's token may read.
    @Sendable func watchCatalog(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try eventStream(service: nil, query: try instanceQuery(request), request: request, context: context)
    }

    /// An SSE stream of `service` (nil: the whole catalog): a snapshot, then one event per change.
    private func eventStream(
        service: ServiceName?, query: InstanceQuery, request: Request, context: AgentRequestContext
    ) throws -> Response {
        var resumeAfter: UInt64?
        if let text = request.headers[Self.lastEventIDHeader] {
            guard let index = UInt64(text.trimmingCharacters(in: .whitespaces)) else {
                throw APIError.badParameter(
                    ValidationError(field: "Last-Event-ID", message: "Last-Event-ID must be an event id (an index)"))
            }
            resumeAfter = index
        }
        let limits = self.limits
        // Refused with a 429 before the stream starts, when it can be told in time (the count taken in the body is
        // the one that holds).
        try limits.refuseIfHoldingMaximum()
        var rights: (@Sendable () -> ACLAuthority?)?
        if context.authority.enforced {
            let acls = self.acls
            let accessor = context.authority.accessorID
            rights = { acls.authority(accessorID: accessor) }
        }
        let stream = EventStream(
            catalog: catalog, watches: watches, metrics: metrics, service: service, query: query,
            resumeAfter: resumeAfter, rights: rights)
        return Response(
            status: .ok,
            headers: [
                .contentType: "text/event-stream", .cacheControl: "no-cache",
                Self.indexHeader: String(catalog.index),
            ],
            body: ResponseBody { writer in
                try limits.beginHolding()
                defer { limits.endHolding() }
                try await stream.run(&writer)
                try await writer.finish(nil)
            }
        )
    }
}

/// One open event stream: sends a snapshot (unless it resumes), then the changes that concern it, at the pace its
/// consumer reads.
///
/// It keeps a cursor into the ``WatchHub``'s shared frames; when the consumer is so slow that the frames it still
/// needs are gone, it sends a fresh snapshot and goes on from there. With filters, it sends a change when the
/// instance matches them before or after it, so the consumer can apply the rule: after an event, the instance is
/// in the view exactly when the event is not `removed` and the instance matches the filters. Each frame carries
/// the instance's previous state, so this holds for a resumed stream too and a stream keeps no per-instance state.
struct EventStream: Sendable {
    let catalog: Catalog
    let watches: WatchHub
    let metrics: AgentMetrics
    let service: ServiceName?
    let query: InstanceQuery
    let resumeAfter: UInt64?
    /// With ACLs on: the caller's rights as they are now (nil once its token is gone). Asked whenever the stream
    /// wakes, so a deleted token or a narrowed policy ends the stream (or, for the whole catalog, filters what is
    /// left) by the next change or keep-alive; the other services never reach the catalog's stream.
    let rights: (@Sendable () -> ACLAuthority?)?

    func run(_ writer: inout any ResponseBodyWriter) async throws {
        metrics.eventStreamsOpen.increment()
        defer { metrics.eventStreamsOpen.decrement() }
        let watches = self.watches
        try await withGracefulShutdownHandler {
            try await stream(&writer)
        } onGracefulShutdown: {
            watches.close()
        }
    }

    private func stream(_ writer: inout any ResponseBodyWriter) async throws {
        var cursor: UInt64
        if let resumeAfter, watches.canResume(after: resumeAfter) {
            cursor = resumeAfter
            try await writer.write(ByteBuffer(string: "retry: 1000\n\n"))
        } else {
            cursor = try await sendSnapshot(&writer, retry: true)
        }
        var lastWrite = ContinuousClock.now
        while !watches.isClosed {
            var authority: ACLAuthority?
            if let rights {
                guard let current = rights(), service.map({ current.canRead($0) }) ?? true else { return }
                authority = current
            }
            let readable: (ServiceName) -> Bool = { authority?.canRead($0) ?? true }
            switch watches.frames(after: cursor, service: service) {
            case .behind:
                // A service stream that fell behind only other services' changes has lost nothing: skip ahead.
                if let service, catalog.serviceIndex(service) <= cursor {
                    cursor = max(cursor, watches.heldSince)
                    continue
                }
                watches.countResynchronisation()
                metrics.watchResynchronisations.increment()
                cursor = try await sendSnapshot(&writer, retry: false)
                lastWrite = .now
            case .frames(let frames, let through):
                let outgoing = Self.outgoing(frames) { readable($0.instance.service) && concerns($0) }
                if !outgoing.isEmpty {
                    try await writer.write(contentsOf: outgoing)
                    lastWrite = .now
                }
                cursor = through
                guard frames.isEmpty else { continue }
                // Keep-alives count from the last write, not the last wake: changes this stream filters out must
                // not starve it of them.
                let deadline = lastWrite + watches.configuration.keepAliveInterval
                switch await watches.waitForFrames(after: cursor, service: service, deadline: deadline) {
                case .changed: continue
                case .timedOut:
                    try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                    lastWrite = .now
                case .closed: return
                }
            }
        }
    }

    /// The bytes to send of `frames`: those `concerns` admits, and where the change that carries an index's id was
    /// left out after others of its index were sent, that id alone, so the consumer's `Last-Event-ID` still moves
    /// past the index it was sent part of.
    static func outgoing(_ frames: [WatchHub.Frame], concerning concerns: (WatchHub.Frame) -> Bool) -> [ByteBuffer] {
        var outgoing: [ByteBuffer] = []
        // The index of a frame sent without its id, until the frame carrying that id comes by.
        var partlySent: UInt64?
        for frame in frames {
            if !frame.isIDOnly, concerns(frame) {
                outgoing.append(frame.bytes)
                partlySent = frame.carriesID ? nil : frame.index
            } else if frame.carriesID, partlySent == frame.index {
                outgoing.append(frame.isIDOnly ? frame.bytes : ByteBuffer(string: "id: \(frame.index)\n\n"))
                partlySent = nil
            }
        }
        return outgoing
    }

    /// Whether the consumer needs `frame`: the instance matches the filters after the change or matched before.
    private func concerns(_ frame: WatchHub.Frame) -> Bool {
        (frame.kind != .removed && query.matches(frame.instance)) || (frame.previous.map(query.matches) ?? false)
    }

    /// Sends the scope's current instances as a `snapshot` event; returns the index it is current at.
    private func sendSnapshot(_ writer: inout any ResponseBodyWriter, retry: Bool) async throws -> UInt64 {
        var index: UInt64
        var body: [UInt8]
        if service == nil, let authority = rights?() {
            // Filtered for the caller: encoded for this stream rather than shared.
            let (current, instances) = catalog.allInstances()
            let visible = instances.filter { authority.canRead($0.service) && query.matches($0) }
            index = current
            body = Array(
                try SwitchboardJSON.encoder().encode(WatchSnapshotEvent(index: index, service: nil, instances: visible))
            )
        } else {
            let snapshot = catalog.watchSnapshot(of: service, matching: query)
            (index, body) = (snapshot.index, snapshot.body)
        }
        var frame = ByteBuffer()
        frame.reserveCapacity(body.count + 64)
        // EventSource clients reconnect after `retry` milliseconds (their default is 3 s).
        if retry { frame.writeString("retry: 1000\n") }
        frame.writeString("id: \(index)\nevent: snapshot\ndata: ")
        frame.writeBytes(body)
        frame.writeString("\n\n")
        try await writer.write(frame)
        return index
    }
}

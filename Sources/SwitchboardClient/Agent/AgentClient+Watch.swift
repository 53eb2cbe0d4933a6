import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardCore

/// One event of an agent's watch stream, decoded, with the event as it was sent.
public struct WatchEvent: Sendable {
    /// What the event says.
    public enum Content: Sendable {
        /// The stream's whole view at its index: sent first, and again after the stream fell behind.
        case snapshot(WatchSnapshotEvent)
        /// One change (an `added`, `updated`, `status`, `removed` or `observed` event).
        case change(ChangeEvent)
        /// An event this client does not know (from a newer agent): ignore it.
        case other
        /// An event of a kind this client knows whose data it cannot read (from a newer agent, say): whether that
        /// matters is the consumer's call (a cache of instances cannot skip a change; a printer shows it raw).
        case unreadable(SwitchboardClientError)
    }

    /// What the event says, decoded.
    public let content: Content
    /// The event as the agent sent it: its id (the catalog index it brings the consumer to), its name and data.
    public let raw: ServerSentEvent

    /// Decodes `raw`; data that is not what its name says is ``Content/unreadable(_:)``, not an error.
    public init(decoding raw: ServerSentEvent) {
        self.raw = raw
        let decoder = SwitchboardJSON.decoder()
        do {
            if raw.event == "snapshot" {
                content = .snapshot(try decoder.decode(WatchSnapshotEvent.self, from: Data(raw.data.utf8)))
            } else if ChangeEvent.Kind(rawValue: raw.event) != nil {
                content = .change(try decoder.decode(ChangeEvent.self, from: Data(raw.data.utf8)))
            } else {
                content = .other
            }
        } catch {
            content = .unreadable(
                SwitchboardClientError(.invalidAnswer, "a \(raw.event) event could not be read: \(error)"))
        }
    }
}

extension AgentClient {
    /// Opens the event stream of `service` (nil: of the whole catalog), with the instances that pass `query`, on
    /// `agent` (by default the one requests go to now); with `lastEventID`, asks that agent to resume after it (it
    /// sends a snapshot instead when it no longer holds what followed).
    ///
    /// Throws ``SwitchboardClientError/Code/refused`` when the agent refuses the stream and
    /// ``SwitchboardClientError/Code/agentUnreachable`` when it cannot be reached. The connection's events then
    /// arrive in order until it ends (the agent stopped) or throws (it dropped).
    public func openWatch(
        _ service: ServiceName?, matching query: InstanceQuery = InstanceQuery(),
        resumingAfter lastEventID: String? = nil, on agent: String? = nil
    ) async throws(SwitchboardClientError) -> WatchConnection {
        // The caller names the agent when it keeps event ids per agent: ids mean something only to their agent.
        let agent = agent ?? connection.currentAgent
        let path = service.map(APIPath.serviceWatch) ?? APIPath.catalogWatch
        var request = connection.request(.GET, APIPath.target(path, APIQuery(query)), to: agent)
        request.headers.add(name: "Accept", value: "text/event-stream")
        if let lastEventID { request.headers.add(name: "Last-Event-ID", value: lastEventID) }
        let response: HTTPClientResponse
        do {
            response = try await connection.streamClient.execute(request, timeout: .hours(24 * 365))
        } catch {
            let failure = TransportFailure(error)
            throw SwitchboardClientError(
                .agentUnreachable, "cannot watch \(path) at \(agent): \(failure)", transport: failure)
        }
        guard response.status == .ok else {
            let body = try? await response.body.collect(upTo: 1024 * 1024)
            let apiError = body.flatMap {
                try? SwitchboardJSON.decoder().decode(APIErrorBody.self, from: Data($0.readableBytesView))
            }
            throw SwitchboardClientError(
                .refused,
                "the agent at \(agent) refused the watch of \(path): "
                    + (apiError?.description ?? "\(response.status.code) \(response.status.reasonPhrase)"),
                status: response.status, apiError: apiError)
        }
        return WatchConnection(agent: agent, body: response.body)
    }

    /// The event stream of `service` (nil: of the whole catalog), followed for as long as the consumer iterates:
    /// when the connection drops, it reconnects after `reconnectDelay` (to the next agent when that one cannot be
    /// reached) and resumes after the last event id it got, so nothing is missed.
    ///
    /// Throws when the first connection fails or an agent refuses the stream; after that, interruptions are told
    /// to `onInterruption` and followed by a reconnection.
    public func watch(
        _ service: ServiceName?, matching query: InstanceQuery = InstanceQuery(),
        reconnectDelay: Duration = .seconds(1),
        onInterruption: @escaping @Sendable (SwitchboardClientError) -> Void = { _ in }
    ) -> AgentWatch {
        AgentWatch(
            client: self, service: service, query: query, reconnectDelay: reconnectDelay,
            onInterruption: onInterruption)
    }
}

/// One open event stream of one agent: its events in order, until the connection ends.
public struct WatchConnection: AsyncSequence, Sendable {
    public typealias Element = WatchEvent

    /// The agent that serves the stream (event ids mean something to it).
    public let agent: String
    let body: HTTPClientResponse.Body

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(chunks: body.makeAsyncIterator())
    }

    /// Reads the connection's bytes and hands over its events one by one.
    public struct AsyncIterator: AsyncIteratorProtocol {
        var chunks: HTTPClientResponse.Body.AsyncIterator
        var parser = ServerSentEventParser()
        var pending: [ServerSentEvent] = []
        var position = 0

        /// The next event; nil when the agent ended the stream; throws when the connection dropped.
        public mutating func next() async throws -> WatchEvent? {
            while true {
                if position < pending.count {
                    defer { position += 1 }
                    return WatchEvent(decoding: pending[position])
                }
                guard let chunk = try await chunks.next() else { return nil }
                pending = parser.feed(chunk.readableBytesView)
                position = 0
            }
        }
    }
}

/// An event stream followed across dropped connections; see ``AgentClient/watch(_:matching:reconnectDelay:onInterruption:)``.
public struct AgentWatch: AsyncSequence, Sendable {
    public typealias Element = WatchEvent

    let client: AgentClient
    let service: ServiceName?
    let query: InstanceQuery
    let reconnectDelay: Duration
    let onInterruption: @Sendable (SwitchboardClientError) -> Void

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(watch: self)
    }

    /// Follows the stream, connecting again (and resuming) when a connection drops.
    public struct AsyncIterator: AsyncIteratorProtocol {
        let watch: AgentWatch
        var connection: WatchConnection.AsyncIterator?
        var agent = ""
        /// The last event id and the agent that sent it: an id means something only to its agent.
        var resume: (agent: String, id: String)?
        var everConnected = false

        /// The next event; nil once the consuming task is cancelled; throws when the first connection fails or an
        /// agent refuses the stream.
        public mutating func next() async throws -> WatchEvent? {
            while !Task.isCancelled {
                if connection == nil {
                    do {
                        // One read of the agent for the resumption, the stream and a failure report alike.
                        let current = watch.client.connection.currentAgent
                        agent = current
                        let opened = try await watch.client.openWatch(
                            watch.service, matching: watch.query,
                            resumingAfter: resume?.agent == current ? resume?.id : nil, on: current)
                        connection = opened.makeAsyncIterator()
                        everConnected = true
                    } catch {
                        guard everConnected, error.code != .refused else { throw error }
                        watch.client.connection.reportUnreachable(agent)
                        watch.onInterruption(error)
                        try? await Task.sleep(for: watch.reconnectDelay)
                        continue
                    }
                }
                do {
                    if let event = try await connection?.next() {
                        if let id = event.raw.id { resume = (agent, id) }
                        return event
                    }
                    // The agent ended the stream (it is stopping): connect again after a pause.
                    connection = nil
                } catch {
                    connection = nil
                    if Task.isCancelled { return nil }
                    watch.client.connection.reportUnreachable(agent)
                    watch.onInterruption(
                        error as? SwitchboardClientError
                            ?? SwitchboardClientError(
                                .agentUnreachable,
                                "the stream from \(agent) was interrupted: \(TransportFailure(error))",
                                transport: TransportFailure(error)))
                }
                try? await Task.sleep(for: watch.reconnectDelay)
            }
            return nil
        }
    }
}

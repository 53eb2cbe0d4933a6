import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardTestSupport
import Synchronization

/// A test's connection to an event stream: reads in the background and hands events over one at a time.
final class EventStreamClient: Sendable {
    private struct Received {
        var status: Int?
        var headers: [String: String] = [:]
        var events: [ServerSentEvent] = []
        var next = 0
        var finished = false
        var failure: String?
    }

    /// Shared with the reading task, which must not keep the client alive.
    private final class Shared: Sendable {
        let state = Mutex(Received())
    }

    private let shared = Shared()
    private let reader: Mutex<Task<Void, Never>?> = Mutex(nil)

    /// Opens `url` (with `Last-Event-ID` when given) and waits for the response head.
    init(_ url: String, lastEventID: String? = nil, headers: [(String, String)] = []) async throws {
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "text/event-stream")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let lastEventID { request.headers.add(name: "Last-Event-ID", value: lastEventID) }
        let shared = self.shared
        let task = Task {
            do {
                let response = try await HTTPClient.shared.execute(request, timeout: .seconds(3600))
                shared.state.withLock { state in
                    state.status = Int(response.status.code)
                    for header in response.headers { state.headers[header.name.lowercased()] = header.value }
                }
                var parser = ServerSentEventParser()
                for try await chunk in response.body {
                    let events = parser.feed(chunk.readableBytesView)
                    shared.state.withLock { $0.events += events }
                }
                shared.state.withLock { $0.finished = true }
            } catch {
                shared.state.withLock { state in
                    state.finished = true
                    state.failure = "\(error)"
                }
            }
        }
        reader.withLock { $0 = task }
        _ = try await waitUntil(timeout: .seconds(10), "the stream's response head") {
            shared.state.withLock { $0.status != nil || $0.finished }
        }
    }

    deinit {
        reader.withLock { $0?.cancel() }
    }

    var status: Int? { shared.state.withLock { $0.status } }

    func header(_ name: String) -> String? { shared.state.withLock { $0.headers[name.lowercased()] } }

    /// Whether the agent ended the stream (or the connection failed).
    var isFinished: Bool { shared.state.withLock { $0.finished } }

    /// The next event, waiting up to `timeout` for it.
    func next(within timeout: Duration = .seconds(5)) async throws -> ServerSentEvent {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (event, finished, failure) = shared.state.withLock { state -> (ServerSentEvent?, Bool, String?) in
                guard state.next < state.events.count else { return (nil, state.finished, state.failure) }
                defer { state.next += 1 }
                return (state.events[state.next], false, nil)
            }
            if let event { return event }
            if finished { throw TestFailure("the stream ended before another event (\(failure ?? "closed"))") }
            guard ContinuousClock.now < deadline else { throw TestFailure("no event within \(timeout)") }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// Expects no event for `duration`.
    func expectSilence(for duration: Duration) async throws {
        try await Task.sleep(for: duration)
        let pending = shared.state.withLock { Array($0.events[$0.next...]) }
        guard pending.isEmpty else { throw TestFailure("unexpected events: \(pending)") }
    }

    /// Closes the connection.
    func close() {
        reader.withLock { $0?.cancel() }
    }
}

extension ServerSentEvent {
    /// The event's data as a JSON object.
    var object: [String: any Sendable] {
        ((try? JSONSerialization.jsonObject(with: Data(data.utf8))) as? [String: any Sendable]) ?? [:]
    }

    var index: UInt64? { id.flatMap(UInt64.init) }
}

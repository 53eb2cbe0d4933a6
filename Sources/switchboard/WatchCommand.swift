import ArgumentParser
import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import ProcessSupport
import SwitchboardCore

struct WatchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Print a service's changes as they happen (the whole catalog's without a service).",
        discussion: """
            Follows the agent's event stream: first the current instances, then one line per change. When the \
            connection drops it reconnects and resumes where it left off. Stop it with Ctrl-C.
            """
    )

    @OptionGroup var options: ClientOptions

    @Argument(help: "The service name; leave out to watch every service.")
    var service: String?

    @OptionGroup var filters: InstanceFilterOptions

    func run() async throws {
        let path = (service.map { "/v1/services/\(AgentAPIClient.escape($0))/watch" } ?? "/v1/watch")
        let printer = WatchPrinter(json: options.json)
        try await options.perform {
            try await options.client.follow(path + "?" + filters.queryString) { event in
                printer.print(event)
            }
        }
    }
}

extension AgentAPIClient {
    /// Follows the event stream at `path`, calling `handle` for each event, until the process is stopped.
    ///
    /// A dropped connection is resumed from the last event id (the agent sends a fresh snapshot when it no longer
    /// holds the changes since). Only a first connection that fails, or a refusal, ends it with a ``Failure``.
    func follow(_ path: String, handle: (ServerSentEvent) -> Void) async throws {
        let client = HTTPClient.shared
        var lastEventID: String?
        var connected = false
        while !Task.isCancelled {
            var request = HTTPClientRequest(url: baseURL + path)
            request.headers.add(name: "Accept", value: "text/event-stream")
            if let lastEventID { request.headers.add(name: "Last-Event-ID", value: lastEventID) }
            do {
                let response = try await client.execute(request, timeout: .hours(24 * 365))
                guard response.status == .ok else {
                    let body = try await response.body.collect(upTo: 1024 * 1024)
                    throw Self.refusal(status: response.status, body: Data(body.readableBytesView))
                }
                connected = true
                var parser = ServerSentEventParser()
                for try await chunk in response.body {
                    for event in parser.feed(chunk.readableBytesView) {
                        if let id = event.id { lastEventID = id }
                        handle(event)
                    }
                }
            } catch let failure as Failure {
                throw failure
            } catch {
                guard connected else {
                    throw Failure(
                        description:
                            "cannot reach the agent at \(baseURL): \(Self.describe(error)); is `switchboard agent` running?"
                    )
                }
                StandardStream.error.write("switchboard: stream interrupted (\(error)); reconnecting\n")
            }
            try await Task.sleep(for: .seconds(1))
        }
    }
}

/// Prints stream events as lines for people, or one JSON object per line with `--json`.
struct WatchPrinter {
    let json: Bool

    func print(_ event: ServerSentEvent) {
        if json {
            emit(#"{"event":"\#(event.event)","id":\#(event.id ?? "null"),"data":\#(event.data)}"#)
            return
        }
        let decoder = SwitchboardJSON.decoder()
        if event.event == "snapshot", let snapshot = try? decoder.decode(Snapshot.self, from: Data(event.data.utf8)) {
            let scope = snapshot.service.map { "\($0)" } ?? "the catalog"
            emit("[\(snapshot.index)] \(scope): \(snapshot.instances.count) instance(s)")
            for instance in snapshot.instances { emit("    " + Self.describe(instance)) }
        } else if let change = try? decoder.decode(ChangeEvent.self, from: Data(event.data.utf8)) {
            var line = "[\(change.index)] \(change.kind.rawValue) " + Self.describe(change.instance)
            if let seen = change.observation {
                line += " (\(seen.kind.rawValue) by \(seen.reporter)"
                line +=
                    (seen.duration.map { " for \($0)" } ?? "") + (seen.reason.isEmpty ? "" : ": \(seen.reason)") + ")"
            }
            emit(line)
        } else {
            emit("[\(event.id ?? "-")] \(event.event): \(event.data)")
        }
    }

    /// Writes a line unbuffered: lines must reach a pipe as they happen, not when a buffer fills. When the reader
    /// is gone (`switchboard watch | head`) there is no one left to tell: the process ends quietly; any other
    /// failure to write (a full disk) ends it with status 1.
    private func emit(_ line: String) {
        guard StandardStream.output.write(line + "\n") else { _exit(errno == EPIPE ? 0 : 1) }
    }

    private static func describe(_ instance: Instance) -> String {
        let raw = instance.definition.address.rawValue
        let address = raw.contains(":") ? "[\(raw)]" : raw
        return "\(instance.service)/\(instance.id) \(address):\(instance.definition.port) \(instance.status.rawValue)"
    }

    private struct Snapshot: Decodable {
        var index: UInt64
        var service: String?
        var instances: [Instance]
    }
}

import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import ProcessSupport
import SwitchboardClient
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
        let printer = WatchPrinter(json: options.json)
        try await options.perform(as: Self.self) { agent in
            let name = try service.map(serviceName)
            let query = try filters.query()
            // A dropped connection is resumed from the last event id (the agent sends a fresh snapshot when it no
            // longer holds the changes since); only a first connection that fails, or a refusal, ends the command.
            let events = agent.watch(name, matching: query) { interruption in
                let reason = interruption.transport?.description ?? interruption.message
                StandardStream.error.write("switchboard: stream interrupted (\(reason)); reconnecting\n")
            }
            for try await event in events { printer.print(event) }
        }
    }
}

/// Prints stream events as lines for people, or one JSON object per line with `--json`.
struct WatchPrinter {
    let json: Bool

    func print(_ event: WatchEvent) {
        let raw = event.raw
        if json {
            emit(#"{"event":"\#(raw.event)","id":\#(raw.id ?? "null"),"data":\#(raw.data)}"#)
            return
        }
        switch event.content {
        case .snapshot(let snapshot):
            let scope = snapshot.service.map { "\($0)" } ?? "the catalog"
            emit("[\(snapshot.index)] \(scope): \(snapshot.instances.count) instance(s)")
            for instance in snapshot.instances { emit("    " + Self.describe(instance)) }
        case .change(let change):
            var line = "[\(change.index)] \(change.kind.rawValue) " + Self.describe(change.instance)
            if let seen = change.observation {
                line += " (\(seen.kind.rawValue) by \(seen.reporter)"
                line +=
                    (seen.duration.map { " for \($0)" } ?? "") + (seen.reason.isEmpty ? "" : ": \(seen.reason)") + ")"
            }
            emit(line)
        case .other, .unreadable:
            emit("[\(raw.id ?? "-")] \(raw.event): \(raw.data)")
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
}

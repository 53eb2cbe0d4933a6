/// One Server-Sent Event as the agent sends it.
public struct ServerSentEvent: Sendable, Equatable {
    /// The `id` field: for the agent's streams, the catalog index the event brings the consumer to.
    public var id: String?
    /// The `event` field (`message` when absent): `snapshot`, `added`, `updated`, `status` or `removed`.
    public var event: String
    /// The `data` lines, joined with line breaks: one JSON object for the agent's streams.
    public var data: String

    public init(id: String?, event: String, data: String) {
        self.id = id
        self.event = event
        self.data = data
    }
}

/// Splits a Server-Sent Events byte stream into events: for the CLI, the tests and the client library, which all
/// follow the agent's streams.
///
/// It follows the format's rules a consumer needs: `\r\n` or `\n` line ends, comment lines (`:`), several `data`
/// lines joined, an `id` that persists until the next one, and an event dispatched only at its blank line.
public struct ServerSentEventParser: Sendable {
    public init() {}

    private var line: [UInt8] = []
    private var id: String?
    private var event = ""
    private var data: [String] = []

    /// Consumes bytes as they arrive; returns the events they complete (a partial event waits for more bytes).
    public mutating func feed(_ bytes: some Sequence<UInt8>) -> [ServerSentEvent] {
        var events: [ServerSentEvent] = []
        for byte in bytes {
            guard byte == 0x0A else {
                line.append(byte)
                continue
            }
            if line.last == 0x0D { line.removeLast() }
            let text = String(decoding: line, as: UTF8.self)
            line.removeAll(keepingCapacity: true)
            if text.isEmpty {
                if !data.isEmpty {
                    events.append(
                        ServerSentEvent(
                            id: id, event: event.isEmpty ? "message" : event, data: data.joined(separator: "\n")))
                }
                event = ""
                data = []
                continue
            }
            if text.hasPrefix(":") { continue }
            let (field, value) = Self.split(text)
            switch field {
            case "id": id = value
            case "event": event = value
            case "data": data.append(value)
            default: break
            }
        }
        return events
    }

    private static func split(_ line: String) -> (String, String) {
        guard let colon = line.firstIndex(of: ":") else { return (line, "") }
        var value = line[line.index(after: colon)...]
        if value.first == " " { value = value.dropFirst() }
        return (String(line[..<colon]), String(value))
    }
}

import Foundation

/// A change with its JSON encodings, made once by the catalog's writer.
///
/// Encoding is the dearest part of serving the catalog, so it is done once per change rather than once per
/// read: the store keeps these bytes, and lookups answer by concatenating the cached instance JSON instead of
/// encoding every instance again.
public struct CommittedChange: Sendable {
    public let event: ChangeEvent
    /// The instance after the change (or as removed), in the API's JSON form.
    public let instanceJSON: [UInt8]
    /// The event in the API's JSON form (what `GET /v1/events` and the event log hold).
    public let eventJSON: [UInt8]
    /// The instance just before the change (nil for an addition, or when not known): lets a filtered watcher tell
    /// whether the instance was in its view without keeping state of its own.
    public let previous: Instance?

    /// Encodes `event` and its instance.
    public init(event: ChangeEvent, previous: Instance? = nil) {
        self.event = event
        self.previous = previous
        self.instanceJSON = Self.encode(event.instance)
        // The keys in the order a sorted-keys encoder writes them, so both forms are byte-identical. Service
        // names and instance ids never need escaping (their validation allows no quote, backslash or control).
        var json = JSONText()
        json.append(#"{"at":"\#(SwitchboardJSON.timestamp(event.at))","id":"\#(event.id.rawValue)","#)
        json.append(#""index":\#(event.index),"instance":"#)
        json.bytes += instanceJSON
        json.append(#","kind":"\#(event.kind.rawValue)","#)
        if let observation = event.observation {
            json.append(#""observation":"#)
            json.bytes += Array((try? SwitchboardJSON.encoder().encode(observation)) ?? Data("{}".utf8))
            json.append(",")
        }
        json.append(#""service":"\#(event.service.rawValue)"}"#)
        self.eventJSON = json.bytes
    }

    /// The API's JSON form of `instance`.
    public static func encode(_ instance: Instance) -> [UInt8] {
        // Encoding our own value types cannot fail: every field is a string, number, array or object.
        Array((try? SwitchboardJSON.encoder().encode(instance)) ?? Data("{}".utf8))
    }
}

/// Builds JSON text by hand where the generic encoder is too slow for a hot path (lookups, the service list).
public struct JSONText: Sendable {
    public var bytes: [UInt8] = []

    public init() {}

    /// Appends raw JSON text.
    public mutating func append(_ text: String) {
        bytes.append(contentsOf: text.utf8)
    }

    /// Appends `text` as a JSON string literal, escaped.
    public mutating func appendString(_ text: String) {
        bytes.append(0x22)
        for byte in text.utf8 {
            switch byte {
            case 0x22: bytes += [0x5C, 0x22]
            case 0x5C: bytes += [0x5C, 0x5C]
            case 0x0A: bytes += [0x5C, 0x6E]
            case 0x0D: bytes += [0x5C, 0x72]
            case 0x09: bytes += [0x5C, 0x74]
            case 0x08: bytes += [0x5C, 0x62]
            case 0x0C: bytes += [0x5C, 0x66]
            case 0..<0x20:
                let hex = Array("0123456789abcdef".utf8)
                bytes += [0x5C, 0x75, 0x30, 0x30, hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: bytes.append(byte)
            }
        }
        bytes.append(0x22)
    }
}

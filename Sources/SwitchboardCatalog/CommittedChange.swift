import Foundation
import SwitchboardCore

/// A committed change with its JSON encodings, made once when the change is committed.
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
    /// Where in ``eventJSON`` the audit record (`"by":{...},`) lies, if the event has one: watch streams leave it
    /// out, since who made a change is for the event log's readers (`events:read`), not every reader of a service.
    public let auditRange: Range<Int>?
    /// The instance just before the change (nil for an addition), filled in by the catalog as it applies the
    /// change: lets a filtered watcher tell whether the instance was in its view without keeping state of its own.
    public internal(set) var previous: Instance?

    /// Encodes `event` and its instance.
    public init(event: ChangeEvent) {
        self.init(event: event, instanceJSON: Self.encode(event.instance))
    }

    /// `event` with its instance already in JSON (as ``encode(_:)`` writes it).
    init(event: ChangeEvent, instanceJSON: [UInt8]) {
        self.event = event
        self.previous = nil
        self.instanceJSON = instanceJSON
        // The keys in the order a sorted-keys encoder writes them, so both forms are byte-identical. Service
        // names and instance ids never need escaping (their validation allows no quote, backslash or control).
        var json = JSONText()
        json.append(#"{"at":"\#(SwitchboardJSON.timestamp(event.at))","#)
        var auditRange: Range<Int>?
        if let by = event.by {
            let start = json.bytes.count
            json.append(#""by":{"#)
            var first = true
            for (key, value) in [("accessorID", by.accessorID), ("address", by.address), ("requestID", by.requestID)] {
                guard let value else { continue }
                if !first { json.append(",") }
                first = false
                json.append(#""\#(key)":"#)
                json.appendString(value)
            }
            json.append("},")
            auditRange = start..<json.bytes.count
        }
        self.auditRange = auditRange
        json.append(#""id":"\#(event.id.rawValue)","#)
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

    /// `event`, whose instance was encoded before with other indexes (as `instanceJSON`): that JSON with the two
    /// numbers replaced, rather than encoded again.
    static func reusing(_ instanceJSON: [UInt8], for event: ChangeEvent) -> CommittedChange {
        guard
            let json = JSONFields.settingNumbers(
                ["createIndex": event.instance.createIndex, "modifyIndex": event.instance.modifyIndex],
                in: instanceJSON)
        else { return CommittedChange(event: event) }
        return CommittedChange(event: event, instanceJSON: json)
    }

    /// The API's JSON form of `instance`.
    public static func encode(_ instance: Instance) -> [UInt8] {
        // Encoding our own value types cannot fail: every field is a string, number, array or object.
        Array((try? SwitchboardJSON.encoder().encode(instance)) ?? Data("{}".utf8))
    }
}

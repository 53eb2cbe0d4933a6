import Foundation

/// The JSON form of etcd's v3 messages, as its gRPC gateway speaks it (etcd 3.4, `/v3/...`).
///
/// What the gateway does that a plain decoder would trip on: keys and values are base64; 64-bit integers come back
/// as JSON strings (lease ids exceed 2^53, so they must never go through a `Double`); fields at their default value
/// are left out (an empty range has no `kvs`, a failed transaction no `succeeded`, a PUT event no `type`); names are
/// the proto's (`mod_revision`).
enum EtcdWire {
    // MARK: Requests

    static func range(_ request: EtcdRangeRequest) -> EtcdWireObject {
        var body = EtcdWireObject()
        body.base64("key", request.range.key)
        if !request.range.end.isEmpty { body.base64("range_end", request.range.end) }
        if request.limit > 0 { body.int64("limit", request.limit) }
        if request.revision > 0 { body.int64("revision", request.revision) }
        if request.sortOrder != .none {
            body.string("sort_order", request.sortOrder.rawValue)
            body.string("sort_target", request.sortTarget.rawValue)
        }
        if request.serializable { body.bool("serializable", true) }
        if request.keysOnly { body.bool("keys_only", true) }
        if request.minimumModRevision > 0 { body.int64("min_mod_revision", request.minimumModRevision) }
        return body
    }

    static func put(key: [UInt8], value: [UInt8], lease: Int64) -> EtcdWireObject {
        var body = EtcdWireObject()
        body.base64("key", key)
        body.base64("value", value)
        if lease != 0 { body.int64("lease", lease) }
        return body
    }

    static func deleteRange(_ range: EtcdKeyRange, previousKeyValues: Bool) -> EtcdWireObject {
        var body = EtcdWireObject()
        body.base64("key", range.key)
        if !range.end.isEmpty { body.base64("range_end", range.end) }
        if previousKeyValues { body.bool("prev_kv", true) }
        return body
    }

    static func transaction(_ transaction: EtcdTransaction) -> EtcdWireObject {
        var body = EtcdWireObject()
        body.array("compare", transaction.compare.map(compare))
        body.array("success", transaction.success.map(operation))
        body.array("failure", transaction.failure.map(operation))
        return body
    }

    private static func compare(_ compare: EtcdCompare) -> EtcdWireObject {
        var body = EtcdWireObject()
        body.base64("key", compare.key)
        body.string("result", compare.result.rawValue)
        switch compare.target {
        case .version(let version):
            body.string("target", "VERSION")
            body.int64("version", version)
        case .createRevision(let revision):
            body.string("target", "CREATE")
            body.int64("create_revision", revision)
        case .modRevision(let revision):
            body.string("target", "MOD")
            body.int64("mod_revision", revision)
        case .value(let value):
            body.string("target", "VALUE")
            body.base64("value", value)
        case .lease(let lease):
            body.string("target", "LEASE")
            body.int64("lease", lease)
        }
        return body
    }

    private static func operation(_ operation: EtcdOperation) -> EtcdWireObject {
        var body = EtcdWireObject()
        switch operation {
        case .range(let request): body.object("request_range", range(request))
        case .put(let key, let value, let lease): body.object("request_put", put(key: key, value: value, lease: lease))
        case .deleteRange(let range, let previous):
            body.object("request_delete_range", deleteRange(range, previousKeyValues: previous))
        }
        return body
    }

    static func watchCreate(
        _ range: EtcdKeyRange, startRevision: Int64, previousKeyValues: Bool, progressNotify: Bool
    ) -> EtcdWireObject {
        var create = EtcdWireObject()
        create.base64("key", range.key)
        if !range.end.isEmpty { create.base64("range_end", range.end) }
        if startRevision > 0 { create.int64("start_revision", startRevision) }
        if previousKeyValues { create.bool("prev_kv", true) }
        if progressNotify { create.bool("progress_notify", true) }
        var body = EtcdWireObject()
        body.object("create_request", create)
        return body
    }

    /// A lease call's body: its id or time to live.
    static func lease(_ name: StaticString, _ value: Int64) -> EtcdWireObject {
        var body = EtcdWireObject()
        body.int64(name, value)
        return body
    }

    // MARK: Answers

    struct Header: Decodable {
        var revision: Int64Text?
        var member_id: Int64Text?
        var raft_term: Int64Text?

        var value: EtcdResponseHeader {
            EtcdResponseHeader(
                revision: revision?.value ?? 0, memberID: UInt64(bitPattern: member_id?.value ?? 0),
                raftTerm: UInt64(bitPattern: raft_term?.value ?? 0))
        }
    }

    struct KeyValue: Decodable {
        var key: Bytes?
        var value: Bytes?
        var create_revision: Int64Text?
        var mod_revision: Int64Text?
        var version: Int64Text?
        var lease: Int64Text?

        var keyValue: EtcdKeyValue {
            EtcdKeyValue(
                key: key?.bytes ?? [], value: value?.bytes ?? [], createRevision: create_revision?.value ?? 0,
                modRevision: mod_revision?.value ?? 0, version: version?.value ?? 0, lease: lease?.value ?? 0)
        }
    }

    struct RangeAnswer: Decodable {
        var header: Header?
        var kvs: [KeyValue]?
        var more: Bool?
        var count: Int64Text?

        var value: EtcdRangeResponse {
            EtcdRangeResponse(
                header: header?.value ?? EtcdResponseHeader(), keyValues: (kvs ?? []).map(\.keyValue),
                more: more ?? false, count: count?.value ?? 0)
        }
    }

    struct DeleteAnswer: Decodable {
        var header: Header?
        var deleted: Int64Text?
        var prev_kvs: [KeyValue]?
    }

    struct PutAnswer: Decodable {
        var header: Header?
    }

    struct OperationAnswer: Decodable {
        var response_range: RangeAnswer?
        var response_put: PutAnswer?
        var response_delete_range: DeleteAnswer?

        var value: EtcdOperationResponse {
            if let range = response_range { return .range(range.value) }
            if let delete = response_delete_range {
                return .deleteRange(
                    deleted: delete.deleted?.value ?? 0, previous: (delete.prev_kvs ?? []).map(\.keyValue))
            }
            return .put
        }
    }

    struct TransactionAnswer: Decodable {
        var header: Header?
        var succeeded: Bool?
        var responses: [OperationAnswer]?

        var value: EtcdTransactionResponse {
            EtcdTransactionResponse(
                header: header?.value ?? EtcdResponseHeader(), succeeded: succeeded ?? false,
                responses: (responses ?? []).map(\.value))
        }
    }

    struct LeaseGrantAnswer: Decodable {
        var ID: Int64Text?
        var TTL: Int64Text?
        var error: String?
    }

    struct LeaseKeepAliveAnswer: Decodable {
        struct Result: Decodable {
            var ID: Int64Text?
            var TTL: Int64Text?
        }
        var result: Result?
    }

    struct WatchAnswer: Decodable {
        struct Event: Decodable {
            var type: String?
            var kv: KeyValue?
            var prev_kv: KeyValue?
        }

        struct Result: Decodable {
            var header: Header?
            var watch_id: Int64Text?
            var created: Bool?
            var canceled: Bool?
            var compact_revision: Int64Text?
            var cancel_reason: String?
            var events: [Event]?
        }

        var result: Result?
        var error: ErrorAnswer?
    }

    /// What the gateway answers instead of a message when the call failed.
    struct ErrorAnswer: Decodable {
        var error: String?
        var message: String?
        var code: Int?
        var grpc_code: Int?
    }

    /// A 64-bit integer the gateway writes as a JSON string (or, leniently, a number).
    struct Int64Text: Decodable {
        var value: Int64

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let text = try? container.decode(String.self), let value = Int64(text) {
                self.value = value
            } else if let text = try? container.decode(String.self), let value = UInt64(text) {
                // Member ids are unsigned and may use the top bit.
                self.value = Int64(bitPattern: value)
            } else {
                self.value = try container.decode(Int64.self)
            }
        }
    }

    /// Bytes the gateway writes as base64.
    struct Bytes: Decodable {
        var bytes: [UInt8]

        init(from decoder: any Decoder) throws {
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let data = Data(base64Encoded: text) else {
                throw DecodingError.dataCorrupted(
                    DecodingError.Context(codingPath: decoder.codingPath, debugDescription: "not base64: \(text)"))
            }
            bytes = Array(data)
        }
    }
}

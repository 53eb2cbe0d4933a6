/// etcd's v3 key-value model, as this client uses it: keys and values are bytes, revisions are etcd's 64-bit
/// counters (never negative in practice, so they are carried as `Int64` as etcd defines them).

/// A key with its value and the revisions etcd keeps for it.
public struct EtcdKeyValue: Sendable, Hashable {
    public var key: [UInt8]
    public var value: [UInt8]
    /// The revision that created the key (since its last deletion).
    public var createRevision: Int64
    /// The revision of the key's latest change.
    public var modRevision: Int64
    /// How many times the key was written since it was created.
    public var version: Int64
    /// The lease the key is attached to (0: none).
    public var lease: Int64

    public init(
        key: [UInt8], value: [UInt8] = [], createRevision: Int64 = 0, modRevision: Int64 = 0, version: Int64 = 0,
        lease: Int64 = 0
    ) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }

    /// The key as text (keys this package writes are UTF-8).
    public var keyText: String { String(decoding: key, as: UTF8.self) }
}

/// What every etcd answer carries: the store's revision when it answered.
public struct EtcdResponseHeader: Sendable, Hashable {
    public var revision: Int64
    public var memberID: UInt64
    public var raftTerm: UInt64

    public init(revision: Int64 = 0, memberID: UInt64 = 0, raftTerm: UInt64 = 0) {
        self.revision = revision
        self.memberID = memberID
        self.raftTerm = raftTerm
    }
}

/// A range of keys: one key, every key with a prefix, or `[key, end)`.
public struct EtcdKeyRange: Sendable, Hashable {
    public var key: [UInt8]
    /// The end of the range, exclusive; empty for the single key `key`.
    public var end: [UInt8]

    /// The single key `key`.
    public init(key: [UInt8]) {
        self.key = key
        self.end = []
    }

    /// The keys in `[key, end)`.
    public init(from key: [UInt8], to end: [UInt8]) {
        self.key = key
        self.end = end
    }

    /// The single key `key`.
    public static func key(_ key: String) -> EtcdKeyRange { EtcdKeyRange(key: Array(key.utf8)) }

    /// Every key that starts with `prefix`.
    public static func prefix(_ prefix: String) -> EtcdKeyRange { self.prefix(Array(prefix.utf8)) }

    /// Every key that starts with `prefix`.
    public static func prefix(_ prefix: [UInt8]) -> EtcdKeyRange {
        EtcdKeyRange(from: prefix, to: prefixEnd(prefix))
    }

    /// The smallest key greater than every key starting with `prefix` (etcd's convention: `[0]` for all keys).
    static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xFF {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]
    }
}

/// A read of a range of keys.
public struct EtcdRangeRequest: Sendable, Hashable {
    public enum SortOrder: String, Sendable { case none = "NONE", ascending = "ASCEND", descending = "DESCEND" }
    public enum SortTarget: String, Sendable {
        case key = "KEY", version = "VERSION", create = "CREATE", modification = "MOD", value = "VALUE"
    }

    public var range: EtcdKeyRange
    /// The most keys to return (0: all).
    public var limit: Int64 = 0
    /// The revision to read at (0: the latest).
    public var revision: Int64 = 0
    public var sortOrder: SortOrder = .none
    public var sortTarget: SortTarget = .key
    /// Answer from the member's local state without going through consensus (may be stale).
    public var serializable = false
    /// Keys and revisions only, no values.
    public var keysOnly = false
    /// Only keys modified at or after this revision (0: no bound).
    public var minimumModRevision: Int64 = 0

    public init(
        _ range: EtcdKeyRange, limit: Int64 = 0, revision: Int64 = 0, sortOrder: SortOrder = .none,
        sortTarget: SortTarget = .key, serializable: Bool = false, keysOnly: Bool = false,
        minimumModRevision: Int64 = 0
    ) {
        self.range = range
        self.limit = limit
        self.revision = revision
        self.sortOrder = sortOrder
        self.sortTarget = sortTarget
        self.serializable = serializable
        self.keysOnly = keysOnly
        self.minimumModRevision = minimumModRevision
    }
}

/// The answer to a range read.
public struct EtcdRangeResponse: Sendable, Hashable {
    public var header: EtcdResponseHeader
    public var keyValues: [EtcdKeyValue]
    /// Whether more keys matched than `limit` let through.
    public var more: Bool
    /// How many keys matched in all.
    public var count: Int64
}

/// A condition of a transaction on one key.
public struct EtcdCompare: Sendable, Hashable {
    public enum Target: Sendable, Hashable {
        case version(Int64)
        case createRevision(Int64)
        case modRevision(Int64)
        case value([UInt8])
        case lease(Int64)
    }

    public enum Result: String, Sendable, Hashable {
        case equal = "EQUAL", greater = "GREATER", less = "LESS", notEqual = "NOT_EQUAL"
    }

    public var key: [UInt8]
    public var result: Result
    public var target: Target

    public init(key: [UInt8], _ result: Result, _ target: Target) {
        self.key = key
        self.result = result
        self.target = target
    }

    /// The key's latest change is at `revision` (0: the key does not exist).
    public static func modRevision(of key: [UInt8], equals revision: Int64) -> EtcdCompare {
        EtcdCompare(key: key, .equal, .modRevision(revision))
    }

    /// The key does not exist.
    public static func absent(_ key: [UInt8]) -> EtcdCompare {
        EtcdCompare(key: key, .equal, .version(0))
    }
}

/// One operation of a transaction.
public enum EtcdOperation: Sendable, Hashable {
    case range(EtcdRangeRequest)
    case put(key: [UInt8], value: [UInt8], lease: Int64 = 0)
    case deleteRange(EtcdKeyRange, previousKeyValues: Bool = false)
}

/// The answer to one operation of a transaction.
public enum EtcdOperationResponse: Sendable, Hashable {
    case range(EtcdRangeResponse)
    case put
    /// How many keys were deleted, and (when asked) what they held.
    case deleteRange(deleted: Int64, previous: [EtcdKeyValue])
}

/// A transaction: `success` runs when every compare holds, `failure` otherwise; all in one revision.
public struct EtcdTransaction: Sendable, Hashable {
    public var compare: [EtcdCompare]
    public var success: [EtcdOperation]
    public var failure: [EtcdOperation]

    public init(compare: [EtcdCompare] = [], success: [EtcdOperation] = [], failure: [EtcdOperation] = []) {
        self.compare = compare
        self.success = success
        self.failure = failure
    }
}

/// The answer to a transaction.
public struct EtcdTransactionResponse: Sendable, Hashable {
    public var header: EtcdResponseHeader
    /// Whether the compares held (and `success` ran).
    public var succeeded: Bool
    /// The answers of the operations that ran, in order.
    public var responses: [EtcdOperationResponse]
}

/// A change seen by a watch.
public struct EtcdEvent: Sendable, Hashable {
    public enum Kind: Sendable, Hashable { case put, delete }
    public var kind: Kind
    /// The key after the change; for a deletion, the key with the deletion's revision as its `modRevision`.
    public var keyValue: EtcdKeyValue
    /// The key before the change, when the watch asked for it.
    public var previous: EtcdKeyValue?
}

/// A granted lease.
public struct EtcdLease: Sendable, Hashable {
    public var id: Int64
    /// The time to live etcd granted, in seconds.
    public var ttl: Int64
}

import DequeModule
import NIOCore
import SwitchboardCore
import Synchronization

/// A route's store of GET responses, shared by every event loop: what an instance answered is answered again,
/// without asking it, until the answer is stale.
///
/// A shared cache in the sense of RFC 9111, in its simple form: only `200` answers with a `Content-Length` no larger
/// than ``maximumEntryBytes`` are kept; `no-store`, `no-cache` and `private` answers are not, nor answers to
/// requests with credentials unless marked `public`; freshness is the answer's `s-maxage` or `max-age` when given,
/// else the route's ``ttl``; a request's `Cache-Control: no-cache` or `no-store` goes to the instance. When the
/// entries together pass ``maximumBytes``, the oldest go first.
///
/// Entries are kept under ``key(host:target:service:parameters:)``: the caller's host and path (as the caller sent
/// it, query included), then the target, so a purge names what callers ask for (``purge(host:path:)``).
final class ResponseCache: Sendable {
    struct Entry: Sendable {
        var serial: UInt64 = 0
        var head: ResponseHead
        var body: ByteBuffer
        var stored: ContinuousClock.Instant
        var expires: ContinuousClock.Instant
        var size: Int { head.fields.byteCount + body.readableBytes }
    }

    private struct Store {
        var entries: [String: Entry] = [:]
        /// Keys in the order stored, with the entry's serial: a key stored again leaves its old place stale.
        var order: Deque<(key: String, serial: UInt64)> = []
        var bytes = 0
        var serial: UInt64 = 0
    }

    let ttl: Duration
    let maximumBytes: Int
    let maximumEntryBytes: Int
    /// Whether callers may send `PURGE` on the route (the route file's `cache.purge`); the admin address's
    /// `DELETE /cache` may always.
    let allowsPurge: Bool
    private let store = Mutex(Store())

    init(ttl: Duration, maximumBytes: Int, maximumEntryBytes: Int, allowsPurge: Bool = false) {
        self.ttl = ttl
        self.maximumBytes = maximumBytes
        self.maximumEntryBytes = min(maximumEntryBytes, maximumBytes)
        self.allowsPurge = allowsPurge
    }

    /// The key of a caller's request: its host, its path (with the query), then the target it went to (each side of
    /// a split keeps its own answers).
    static func key(host: String, target: String, service: ServiceName, parameters: String) -> String {
        "\(host) \(target) \(service)?\(parameters)"
    }

    /// Drops the entries for `path` (every host when `host` is nil, every target); a `path` ending in `*` drops every
    /// path starting with what precedes it, and nil drops everything. Returns how many entries went.
    func purge(host: String? = nil, path: String? = nil) -> Int {
        let prefix = path.map { $0.hasSuffix("*") ? String($0.dropLast()) : $0 }
        let exact = path.map { !$0.hasSuffix("*") } ?? false
        return store.withLock { store in
            var dropped = 0
            for (key, entry) in store.entries {
                let parts = key.split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
                guard parts.count == 3 else { continue }
                if let host, parts[0] != host { continue }
                if let prefix {
                    if exact ? parts[1] != prefix : !parts[1].hasPrefix(prefix) { continue }
                }
                store.entries[key] = nil
                store.bytes -= entry.size
                dropped += 1
            }
            // Their places in the eviction order are trimmed as stale ones are.
            return dropped
        }
    }

    /// Whether `request` may be answered from the cache, and its answer stored.
    static func admits(_ request: RequestHead) -> Bool {
        guard request.method == "GET" else { return false }
        let directives = Set(request.fields.listItems("cache-control").map { $0.lowercased() })
        return !directives.contains("no-cache") && !directives.contains("no-store")
    }

    /// A fresh entry for `key`.
    func lookup(_ key: String, at now: ContinuousClock.Instant = .now) -> Entry? {
        store.withLock { store in
            guard let entry = store.entries[key] else { return nil }
            guard entry.expires > now else {
                store.entries[key] = nil
                store.bytes -= entry.size
                return nil
            }
            return entry
        }
    }

    /// How long `response` may be kept, or nil when it may not be (see the type's rules).
    func freshness(of response: ResponseHead, framing: BodyFraming, requestHasCredentials: Bool) -> Duration? {
        guard response.status == 200, case .length(let length) = framing, length <= maximumEntryBytes else {
            return nil
        }
        if response.fields.contains("vary") || response.fields.contains("set-cookie") { return nil }
        var maxAge: Int?
        var sharedMaxAge: Int?
        var isPublic = false
        for directive in response.fields.listItems("cache-control") {
            let parts = directive.lowercased().split(separator: "=", maxSplits: 1)
            switch parts.first {
            case "no-store", "no-cache", "private": return nil
            case "public": isPublic = true
            case "max-age": maxAge = parts.count == 2 ? Int(parts[1].trimmingCharacters(in: "\"")) : nil
            case "s-maxage": sharedMaxAge = parts.count == 2 ? Int(parts[1].trimmingCharacters(in: "\"")) : nil
            default: break
            }
        }
        if requestHasCredentials && !isPublic && sharedMaxAge == nil { return nil }
        let seconds = sharedMaxAge ?? maxAge
        if let seconds { return seconds > 0 ? .seconds(seconds) : nil }
        return ttl
    }

    func store(_ key: String, head: ResponseHead, body: ByteBuffer, for freshness: Duration) {
        let now = ContinuousClock.now
        guard body.readableBytes <= maximumEntryBytes else { return }
        // The head's bytes are a slice of the buffer the answer was read into: kept, they get a buffer of their own.
        var head = head
        head.fields = head.fields.compacted()
        let entry = Entry(head: head, body: body, stored: now, expires: now + freshness)
        store.withLock { store in
            if let old = store.entries[key] { store.bytes -= old.size }
            store.serial += 1
            var entry = entry
            entry.serial = store.serial
            store.order.append((key, store.serial))
            store.entries[key] = entry
            store.bytes += entry.size
            while store.bytes > maximumBytes, let oldest = store.order.popFirst() {
                guard store.entries[oldest.key]?.serial == oldest.serial else { continue }
                if let evicted = store.entries.removeValue(forKey: oldest.key) { store.bytes -= evicted.size }
            }
            // Places of entries stored again, or expired and dropped on lookup, linger; trim them now and then.
            if store.order.count > 2 * store.entries.count + 64 {
                store.order = Deque(store.order.filter { store.entries[$0.key]?.serial == $0.serial })
            }
        }
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in characters: String) -> Substring {
        var text = self
        while let first = text.first, characters.contains(first) { text = text.dropFirst() }
        while let last = text.last, characters.contains(last) { text = text.dropLast() }
        return text
    }
}

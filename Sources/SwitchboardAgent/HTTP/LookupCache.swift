import NIOCore
import SwitchboardCatalog
import SwitchboardCore
import Synchronization

/// The latest answer of each recent service lookup, kept until the service changes.
///
/// When a change wakes a thousand blocking queries on one service, they all ask for the same answer at once: the
/// first builds it, the others share its buffer (a `ByteBuffer` is copy-on-write, so sharing costs nothing). An
/// entry is valid while the service's index and output revision are the ones it was built at, so an answer is never
/// stale.
final class LookupCache: Sendable {
    private struct Key: Hashable {
        var service: ServiceName
        var query: InstanceQuery
    }

    /// More distinct lookups than this and the cache starts over (it holds the hot ones again within a request each).
    private let capacity: Int
    private let entries = Mutex<[Key: (version: Version, index: UInt64, body: ByteBuffer)]>([:])

    private struct Version: Equatable {
        var index: UInt64
        var outputRevision: UInt64
    }

    init(capacity: Int = 256) {
        self.capacity = capacity
    }

    /// The lookup's JSON answer (with a final newline) and its index, from the cache while `service` is unchanged.
    func lookup(
        _ service: ServiceName, matching query: InstanceQuery, in catalog: Catalog
    ) -> (index: UInt64, body: ByteBuffer) {
        let key = Key(service: service, query: query)
        // Read before building: if the service changes meanwhile, the entry is stale at once, never wrong later.
        let version = catalog.serviceVersion(service)
        let current = Version(index: version.index, outputRevision: version.outputRevision)
        if let cached = entries.withLock({ $0[key] }), cached.version == current, current.index > 0 {
            return (cached.index, cached.body)
        }
        let (index, json) = catalog.instancesJSON(of: service, matching: query)
        var body = ByteBuffer()
        body.reserveCapacity(json.count + 1)
        body.writeBytes(json)
        body.writeString("\n")
        // A service never registered answers with the catalog's index, which is no key for its own changes.
        if current.index > 0 {
            entries.withLock { entries in
                if entries.count >= capacity, entries[key] == nil { entries.removeAll(keepingCapacity: true) }
                entries[key] = (current, index, body)
            }
        }
        return (index, body)
    }
}

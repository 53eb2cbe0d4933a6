import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardEtcd
import Synchronization

/// Who the live agents of a cluster are: each agent keeps a member key in etcd attached to a short lease it renews,
/// and watches the others' keys. An agent that dies stops renewing, etcd drops its key when the lease runs out,
/// and every survivor sees it go.
///
/// The member list decides who runs which health check (see ``owner(of:)``): rendezvous hashing over the members'
/// ids, so when a member leaves only its share of the checks moves, evenly over the survivors.
public final class ClusterMembership: Service, Sendable {
    public struct Configuration: Sendable {
        /// This agent's id: unique in the cluster.
        public var agentID: String
        /// The prefix of the agents' keys (the catalog's).
        public var prefix: String
        /// The lease's time to live, in seconds: how long a dead agent's checks wait before they move.
        public var leaseTTL: Int64

        public init(agentID: String, prefix: String = "/switchboard/", leaseTTL: Int64 = 2) {
            self.agentID = agentID
            self.prefix = prefix.hasSuffix("/") ? prefix : prefix + "/"
            self.leaseTTL = leaseTTL
        }
    }

    private struct State {
        var members: [String: ClusterMember] = [:]
        /// The members' ids, sorted: what ownership is computed over.
        var ids: [String] = []
        /// Whether the member list was read at least once.
        var listed = false
        var address: String?
        /// The lease the member key is on, while held.
        var lease: Int64?
        /// This agent's TTL counts, as last published and as now.
        var publishedCounts: TTLCounts?
        var counts = TTLCounts()
        var observers: [@Sendable () -> Void] = []
    }

    public let configuration: Configuration
    let client: EtcdClient
    private let state = Mutex(State())
    private let addressKnown: AsyncStream<Void>
    private let addressContinuation: AsyncStream<Void>.Continuation
    private let startedAt = Date()
    /// Cuts the renewal loop's sleep short when the TTL counts changed, so they reach the others at once.
    private let publishSoon = Alarm()
    private let logger: Logger
    private let membersPrefix: [UInt8]

    public init(client: EtcdClient, configuration: Configuration, logger: Logger) {
        self.client = client
        self.configuration = configuration
        self.logger = logger
        membersPrefix = Array((configuration.prefix + "members/").utf8)
        (addressKnown, addressContinuation) = AsyncStream.makeStream(
            of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// This agent's id.
    public var agentID: String { configuration.agentID }

    /// The live members, sorted by id.
    public var members: [ClusterMember] {
        state.withLock { state in state.ids.compactMap { state.members[$0] } }
    }

    /// The member that runs the checks of `key`: the one whose id hashes highest with it; nil while no member is
    /// known.
    public func owner(of key: InstanceKey) -> ClusterMember? {
        state.withLock { state in
            Rendezvous.owner(of: key, among: state.ids).flatMap { state.members[$0] }
        }
    }

    /// Whether this agent runs the checks of `key`. Until the member list is first read it runs none (the list
    /// comes within moments of start, and the checks then start with their grace); once read, with no member listed
    /// yet (the first agent, before its key is written) it runs them all, since a check run by nobody would miss a
    /// failure.
    public func isLocal(_ key: InstanceKey) -> Bool {
        state.withLock { state in
            guard state.listed else { return false }
            guard let owner = Rendezvous.owner(of: key, among: state.ids) else { return true }
            return owner == configuration.agentID
        }
    }

    /// Calls `observer` whenever the member list changes (on the task that follows etcd; it must be quick).
    public func onChange(_ observer: @escaping @Sendable () -> Void) {
        state.withLock { $0.observers.append(observer) }
    }

    /// The sum of the other members' TTL counts (as they published them), for self-preservation across the cluster.
    public var peerCounts: TTLCounts {
        state.withLock { state in
            var sum = TTLCounts()
            for (id, member) in state.members where id != configuration.agentID {
                sum.instances += member.ttlInstances ?? 0
                sum.missing += member.ttlMissing ?? 0
            }
            return sum
        }
    }

    /// Records this agent's TTL counts; the member key carries them to the others (written at most once per renewal
    /// interval, and only when they changed: never per heartbeat).
    public func report(_ counts: TTLCounts) {
        let changed = state.withLock { state in
            defer { state.counts = counts }
            return state.counts != counts
        }
        if changed { publishSoon.wake(before: .now) }
    }

    /// Sets the address the member key announces (the HTTP API's, once it listens); the key is written then.
    public func announce(address: String) {
        state.withLock { $0.address = address }
        addressContinuation.yield()
    }

    // MARK: Running

    /// Follows the member list and, once the address is announced, keeps this agent's member key alive; revokes it
    /// on graceful shutdown, so the checks move at once instead of after the lease's time to live.
    public func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { await self.followMembers() }
            group.addTask {
                for await _ in self.addressKnown { break }
                await self.keepMemberKey()
            }
            try await gracefulShutdown()
            group.cancelAll()
        }
        if let lease = state.withLock({ $0.lease }) {
            // Leaving: the survivors take over this agent's checks now rather than after the lease runs out.
            try? await client.revokeLease(lease, timeout: .seconds(1))
            logger.info("left the cluster", metadata: ["agent": "\(configuration.agentID)"])
        }
    }

    private var memberKey: [UInt8] { membersPrefix + Array(configuration.agentID.utf8) }

    /// Grants a lease, writes the member key on it and renews it, again and again while the lease is lost, until
    /// cancelled.
    private func keepMemberKey() async {
        var lease: Int64?
        var failures = 0
        let renewEvery = Duration.milliseconds(max(200, configuration.leaseTTL * 1000 / 4))
        while !Task.isCancelled {
            do {
                if lease == nil {
                    let granted = try await client.grantLease(ttl: configuration.leaseTTL, timeout: renewEvery * 2)
                    try await writeMemberKey(lease: granted.id, timeout: renewEvery * 2)
                    lease = granted.id
                    state.withLock { $0.lease = granted.id }
                    logger.info("joined the cluster", metadata: ["agent": "\(configuration.agentID)"])
                } else if let id = lease, try await client.keepLeaseAlive(id, timeout: renewEvery * 2) == nil {
                    // Expired (this agent was cut off longer than the TTL): its checks have moved; join again.
                    logger.warning("the cluster lease expired; joining again", metadata: ["lease": "\(id)"])
                    lease = nil
                    continue
                } else if let id = lease, state.withLock({ $0.counts != $0.publishedCounts }) {
                    try await writeMemberKey(lease: id, timeout: renewEvery * 2)
                }
                failures = 0
            } catch is CancellationError {
                break
            } catch {
                failures += 1
                if failures == 1 || failures % 20 == 0 {
                    logger.warning("could not renew the cluster membership", metadata: ["error": "\(error)"])
                }
            }
            await publishSoon.sleep(until: .now + renewEvery)
            // At most ten writes a second however fast the counts change.
            do { try await Task.sleep(for: .milliseconds(100)) } catch { break }
        }
    }

    /// Writes this agent's member key on `lease`, with its address and its TTL counts now.
    private func writeMemberKey(lease: Int64, timeout: Duration) async throws {
        let (address, counts) = state.withLock { ($0.address ?? "", $0.counts) }
        let member = ClusterMember(
            id: configuration.agentID, address: address, startedAt: startedAt, version: SwitchboardVersion.current,
            ttlInstances: counts.instances, ttlMissing: counts.missing)
        let value = Array(try SwitchboardJSON.encoder().encode(member))
        _ = try await client.put(memberKey, value, lease: lease, timeout: timeout)
        state.withLock { $0.publishedCounts = counts }
    }

    /// Reads the member list, then follows its changes through a watch; starts over when the watch breaks.
    private func followMembers() async {
        let decoder = SwitchboardJSON.decoder()
        var failures = 0
        while !Task.isCancelled {
            do {
                let listed = try await client.range(EtcdRangeRequest(.prefix(membersPrefix)))
                var members: [String: ClusterMember] = [:]
                for entry in listed.keyValues {
                    if let member = try? decoder.decode(ClusterMember.self, from: Data(entry.value)) {
                        members[member.id] = member
                    }
                }
                replace(members)
                let changes = try await client.watch(
                    .prefix(membersPrefix), from: listed.header.revision + 1)
                failures = 0
                for try await batch in changes {
                    var updated = state.withLock { $0.members }
                    for event in batch.events {
                        let id = String(event.keyValue.keyText.dropFirst(membersPrefix.count))
                        if event.kind == .delete {
                            updated[id] = nil
                        } else if let member = try? decoder.decode(ClusterMember.self, from: Data(event.keyValue.value))
                        {
                            updated[id] = member
                        }
                    }
                    replace(updated)
                }
            } catch {
                if Task.isCancelled { break }
                failures += 1
                if failures == 1 || failures % 20 == 0 {
                    logger.warning("lost the watch on the cluster's members", metadata: ["error": "\(error)"])
                }
                try? await Task.sleep(for: .milliseconds(min(500, 25 << min(failures, 5))))
            }
        }
    }

    /// Puts `members` in place and tells the observers when the set changed.
    private func replace(_ members: [String: ClusterMember]) {
        let observers = state.withLock { state -> [@Sendable () -> Void] in
            let ids = members.keys.sorted()
            // Only a change of who is a member moves checks; new counts or addresses are read where they are used.
            let changed = ids != state.ids || !state.listed
            state.listed = true
            state.members = members
            state.ids = ids
            return changed ? state.observers : []
        }
        if !observers.isEmpty {
            logger.info("cluster members changed", metadata: ["members": "\(members.keys.sorted())"])
        }
        for observer in observers { observer() }
    }
}

/// TTL instances and how many of them missed their heartbeat lately: one agent's, or a sum over agents.
public struct TTLCounts: Sendable, Hashable {
    public var instances = 0
    public var missing = 0

    public init(instances: Int = 0, missing: Int = 0) {
        self.instances = instances
        self.missing = missing
    }
}

/// Rendezvous (highest random weight) hashing: each key goes to the member whose id hashes highest together with
/// it. Stable across processes (a fixed hash, not Swift's seeded one), so every agent computes the same owner.
enum Rendezvous {
    static func owner(of key: InstanceKey, among ids: [String]) -> String? {
        var best: (id: String, weight: UInt64)?
        let keyHash = hash(Array(key.service.rawValue.utf8) + [0] + Array(key.id.rawValue.utf8), seed: 0)
        for id in ids {
            let weight = mix(keyHash ^ hash(Array(id.utf8), seed: 0x9E37_79B9_7F4A_7C15))
            if best.map({ weight > $0.weight || (weight == $0.weight && id < $0.id) }) ?? true {
                best = (id, weight)
            }
        }
        return best?.id
    }

    /// FNV-1a, 64 bits.
    static func hash(_ bytes: [UInt8], seed: UInt64) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325 ^ seed
        for byte in bytes {
            hash ^= UInt64(byte)
            hash &*= 0x0000_0100_0000_01B3
        }
        return hash
    }

    /// SplitMix64's finalizer: spreads the combined hash over all 64 bits.
    static func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

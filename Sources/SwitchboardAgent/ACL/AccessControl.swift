import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCore
import Synchronization

/// Whether and how the agent checks ACL tokens.
public struct ACLConfiguration: Sendable, Hashable {
    /// What a caller may do where no policy of its token says anything.
    public enum DefaultPolicy: String, Sendable, Hashable, CaseIterable {
        /// Everything not denied by a policy: tokens still identify callers and `deny` rules still hold.
        case allow
        /// Nothing that a policy does not grant: anonymous callers get only the anonymous token's policies.
        case deny
    }

    /// nil: ACLs off (the default, as Consul's): tokens are neither needed nor checked.
    public var defaultPolicy: DefaultPolicy?
    /// The token whose rights DNS answers with; nil: the anonymous token's.
    public var dnsToken: String?
    /// Cluster mode: how often an agent re-reads the ACLs from etcd, so a token deleted through another agent stops
    /// working here within this interval.
    public var refreshInterval: Duration

    public init(defaultPolicy: DefaultPolicy? = nil, dnsToken: String? = nil, refreshInterval: Duration = .seconds(2)) {
        self.defaultPolicy = defaultPolicy
        self.dnsToken = dnsToken
        self.refreshInterval = refreshInterval
    }

    public var enabled: Bool { defaultPolicy != nil }
}

/// The agent's ACLs: tokens and policies held in memory (read on every request), written through to an
/// ``ACLStore`` before a change is acknowledged.
///
/// A request's token is looked up by the hash of its secret; the secret itself is never kept, logged or stored.
public final class AccessControl: Sendable {
    public let configuration: ACLConfiguration
    let store: any ACLStore
    private let logger: Logger
    /// Whether the store is shared with other agents (etcd): then unknown tokens trigger a re-read, and the ACLs are
    /// re-read periodically.
    private let shared: Bool
    private let state = Mutex(Snapshot())
    private let lastRefresh = Mutex<ContinuousClock.Instant?>(nil)
    /// ACL writes one at a time, so the checks against the cache (policy exists, policy unused) see every earlier
    /// write of this agent.
    private let writeLock = AsyncLock()
    /// The DNS token's hash, worked out once: DNS asks for its rights on every query.
    private let dnsTokenHash: String?

    struct Snapshot {
        var acls = StoredACLs()
        var byHash: [String: StoredACLToken] = [:]
        var byAccessor: [String: StoredACLToken] = [:]
        var policies: [String: ACLPolicy] = [ACLPolicy.globalManagementName: .globalManagement]

        init(_ acls: StoredACLs = StoredACLs()) {
            self.acls = acls
            for token in acls.tokens {
                // The anonymous token has no secret (an empty hash): nothing presented can resolve to it.
                if !token.secretHash.isEmpty { byHash[token.secretHash] = token }
                byAccessor[token.token.accessorID] = token
            }
            for policy in acls.policies { policies[policy.name] = policy }
        }

        var anonymous: StoredACLToken? { acls.tokens.first { $0.token.accessorID == ACLToken.anonymousAccessorID } }
    }

    public init(configuration: ACLConfiguration, store: any ACLStore, shared: Bool = false, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.shared = shared
        self.logger = logger
        dnsTokenHash = configuration.dnsToken.map(StoredACLToken.hash)
    }

    /// ACLs off, on an empty in-memory store.
    public static func disabled() -> AccessControl {
        AccessControl(configuration: ACLConfiguration(), store: InMemoryACLStore(), logger: Logger(label: "acl"))
    }

    /// Reads the ACLs from the store (at start-up, and to catch up with other agents).
    public func load() async throws {
        lastRefresh.withLock { $0 = .now }
        let acls = try await store.loadACLs()
        state.withLock { snapshot in
            // A read that started before a write this agent made (or a newer read) finished must not undo it.
            if acls.revision == 0 || acls.revision >= snapshot.acls.revision { snapshot = Snapshot(acls) }
        }
    }

    // MARK: Checking requests

    /// The rights of a caller presenting `secret` (nil: none). Throws 401 for a token the agent does not know; in
    /// cluster mode it first re-reads the ACLs, at most every quarter second, in case another agent just made it.
    public func authority(presenting secret: String?) async throws(ACLError) -> ACLAuthority {
        do {
            return try resolve(secret)
        } catch .unknownToken where shared {
            // Read the ACLs again unless that happened since this request arrived; at most every 100 ms, so a
            // flood of wrong tokens cannot turn into a flood of reads of etcd.
            let arrived = ContinuousClock.now
            while true {
                let last = lastRefresh.withLock { $0 }
                if let last, last >= arrived { break }
                let since = last.map { ContinuousClock.now - $0 } ?? .seconds(1)
                if since >= .milliseconds(100) {
                    try? await load()
                    break
                }
                guard (try? await Task.sleep(for: .milliseconds(100) - since)) != nil else { break }
            }
            return try resolve(secret)
        }
    }

    /// The rights of the token with `accessorID` as they are now (`anonymous`: a caller without a token); nil once
    /// the token is gone. What an open stream asks as it goes on.
    public func authority(accessorID: String?) -> ACLAuthority? {
        guard let defaultPolicy = configuration.defaultPolicy else { return .unrestricted }
        let fallback: ACLAccess = defaultPolicy == .allow ? .write : .deny
        return state.withLock { snapshot in
            let token =
                accessorID == ACLToken.anonymousAccessorID || accessorID == nil
                ? snapshot.anonymous?.token
                    ?? ACLToken(
                        accessorID: ACLToken.anonymousAccessorID, description: "", policies: [], createdAt: Date())
                : snapshot.byAccessor[accessorID ?? ""]?.token
            guard let token else { return nil }
            return ACLAuthority(
                accessorID: token.accessorID, policies: token.policies.compactMap { snapshot.policies[$0] },
                fallback: fallback, enforced: true)
        }
    }

    /// The rights DNS answers with: the DNS token's, else the anonymous token's.
    public func dnsAuthority() -> ACLAuthority {
        (try? resolve(hash: dnsTokenHash)) ?? (try? resolve(hash: nil)) ?? .unrestricted
    }

    private func resolve(_ secret: String?) throws(ACLError) -> ACLAuthority {
        try resolve(hash: secret.flatMap { $0.isEmpty ? nil : StoredACLToken.hash($0) })
    }

    /// The rights of the token whose secret hashes to `hash` (nil: no token).
    private func resolve(hash: String?) throws(ACLError) -> ACLAuthority {
        guard let defaultPolicy = configuration.defaultPolicy else { return .unrestricted }
        let fallback: ACLAccess = defaultPolicy == .allow ? .write : .deny
        return try state.withLock { snapshot throws(ACLError) in
            guard let hash else {
                let policies = snapshot.anonymous?.token.policies.compactMap { snapshot.policies[$0] } ?? []
                return ACLAuthority(
                    accessorID: ACLToken.anonymousAccessorID, policies: policies, fallback: fallback, enforced: true)
            }
            guard let token = snapshot.byHash[hash] else { throw .unknownToken }
            return ACLAuthority(
                accessorID: token.token.accessorID, policies: token.token.policies.compactMap { snapshot.policies[$0] },
                fallback: fallback, enforced: true)
        }
    }

    // MARK: Managing tokens and policies

    /// Every token, without secrets (the anonymous one included once it has policies).
    public func tokens() -> [ACLToken] {
        state.withLock { $0.acls.tokens.map(\.token).sorted { $0.createdAt < $1.createdAt } }
    }

    /// One token, without its secret.
    public func token(accessorID: String) throws(ACLError) -> ACLToken {
        if accessorID == ACLToken.anonymousAccessorID {
            return state.withLock { $0.anonymous?.token } ?? Self.anonymousToken(policies: [])
        }
        guard let token = state.withLock({ $0.acls.tokens.first { $0.token.accessorID == accessorID } }) else {
            throw .notFound("token", accessorID)
        }
        return token.token
    }

    /// Every policy, the built-in `global-management` first.
    public func policies() -> [ACLPolicy] {
        [.globalManagement] + state.withLock { $0.acls.policies.sorted { $0.name < $1.name } }
    }

    public func policy(named name: String) throws(ACLError) -> ACLPolicy {
        guard let policy = state.withLock({ $0.policies[name] }) else { throw .notFound("policy", name) }
        return policy
    }

    /// Creates the first management token, once; returns it with its secret (the only time it is shown).
    public func bootstrap(by: AuditRecord) async throws -> ACLToken {
        guard configuration.enabled else { throw ACLError.disabled }
        let secret = Self.newSecret()
        let token = ACLToken(
            accessorID: UUID().uuidString.lowercased(), description: "Bootstrap token (global management)",
            policies: [ACLPolicy.globalManagementName], createdAt: SwitchboardJSON.millisecondPrecision(Date()))
        try await write(
            .bootstrap(StoredACLToken(token: token, secretHash: StoredACLToken.hash(secret))), action: .bootstrapped,
            target: token.accessorID, by: by)
        var shown = token
        shown.secretID = secret
        return shown
    }

    /// A new token holding `request`'s policies; returned with its secret (the only time it is shown).
    public func createToken(_ request: ACLTokenRequest, by: AuditRecord) async throws -> ACLToken {
        try request.validate()
        let secret = Self.newSecret()
        let token = ACLToken(
            accessorID: UUID().uuidString.lowercased(), description: request.description, policies: request.policies,
            createdAt: SwitchboardJSON.millisecondPrecision(Date()))
        try await writeLock.withLock {
            try checkPolicies(request.policies)
            try await write(
                .saveToken(StoredACLToken(token: token, secretHash: StoredACLToken.hash(secret)), replacing: false),
                action: .tokenCreated, target: token.accessorID, by: by, locked: true)
        }
        var shown = token
        shown.secretID = secret
        return shown
    }

    /// Changes a token's description and policies (its secret stays); `anonymous` sets what callers without a
    /// token may do.
    public func updateToken(accessorID: String, _ request: ACLTokenRequest, by: AuditRecord) async throws -> ACLToken {
        try request.validate()
        return try await writeLock.withLock {
            try checkPolicies(request.policies)
            let stored: StoredACLToken
            let replacing: Bool?
            if accessorID == ACLToken.anonymousAccessorID {
                var token = state.withLock { $0.anonymous?.token } ?? Self.anonymousToken(policies: [])
                token.policies = request.policies
                token.description = request.description.isEmpty ? token.description : request.description
                // No secret hashes to this: the anonymous token is never presented.
                stored = StoredACLToken(token: token, secretHash: "")
                replacing = nil
            } else {
                var token = try self.token(accessorID: accessorID)
                token.policies = request.policies
                token.description = request.description
                let hash = state.withLock { $0.acls.tokens.first { $0.token.accessorID == accessorID }?.secretHash }
                stored = StoredACLToken(token: token, secretHash: hash ?? "")
                replacing = true
            }
            try await write(
                .saveToken(stored, replacing: replacing), action: .tokenUpdated, target: accessorID, by: by,
                locked: true)
            return stored.token
        }
    }

    public func deleteToken(accessorID: String, by: AuditRecord) async throws {
        guard accessorID != ACLToken.anonymousAccessorID else { throw ACLError.reserved("the anonymous token") }
        try await write(.deleteToken(accessorID: accessorID), action: .tokenDeleted, target: accessorID, by: by)
    }

    /// Creates (`replacing: false`) or replaces a policy.
    public func savePolicy(_ policy: ACLPolicy, replacing: Bool, by: AuditRecord) async throws {
        try policy.validate()
        guard policy.name != ACLPolicy.globalManagementName else {
            throw ACLError.reserved("policy \(ACLPolicy.globalManagementName)")
        }
        try await write(
            .savePolicy(policy, replacing: replacing), action: replacing ? .policyUpdated : .policyCreated,
            target: policy.name, by: by)
    }

    /// Deletes a policy no token holds.
    public func deletePolicy(named name: String, by: AuditRecord) async throws {
        guard name != ACLPolicy.globalManagementName else {
            throw ACLError.reserved("policy \(ACLPolicy.globalManagementName)")
        }
        try await writeLock.withLock {
            let holders = state.withLock { $0.acls.tokens.filter { $0.token.policies.contains(name) } }
            guard holders.isEmpty else { throw ACLError.policyInUse(name, tokens: holders.map(\.token.accessorID)) }
            try await write(.deletePolicy(name: name), action: .policyDeleted, target: name, by: by, locked: true)
        }
    }

    /// The logged ACL changes after `sequence`.
    public func changes(after sequence: UInt64, limit: Int) async throws -> [ACLChangeEvent] {
        try await store.aclChanges(after: sequence, limit: limit)
    }

    private func checkPolicies(_ names: [String]) throws(ACLError) {
        let known = state.withLock { $0.policies }
        for (position, name) in names.enumerated() where known[name] == nil {
            throw .unknownPolicy(name, field: "policies[\(position)]")
        }
    }

    /// Writes through the store (which checks the precondition and logs the change), then into the cache.
    private func write(
        _ change: ACLWrite, action: ACLChangeEvent.Action, target: String, by: AuditRecord, locked: Bool = false
    ) async throws {
        guard configuration.enabled else { throw ACLError.disabled }
        let entry = ACLChangeEvent(
            sequence: 0, at: SwitchboardJSON.millisecondPrecision(Date()), action: action, target: target, by: by)
        let shared = self.shared
        let perform = {
            let logged = try await self.store.apply(change, logging: entry)
            let applied = self.state.withLock { snapshot -> Bool in
                var acls = snapshot.acls
                guard (try? acls.apply(change)) != nil else { return false }
                // etcd numbers the entry with the revision of the write: later reads must be at least as new.
                if shared { acls.revision = max(acls.revision, logged.sequence) }
                snapshot = Snapshot(acls)
                return true
            }
            // The store took it but the view here disagreed: read the store again rather than guess.
            if !applied { try? await self.load() }
        }
        do {
            if locked { try await perform() } else { try await writeLock.withLock { try await perform() } }
        } catch {
            // Another agent may have made the difference, or etcd may have taken the write after all: catch up, so
            // the next answer is current.
            if shared { try? await load() }
            throw error
        }
        logger.info(
            "ACLs changed",
            metadata: [
                "action": "\(action.rawValue)", "target": "\(target)", "by": "\(by.accessorID ?? "anonymous")",
                "address": "\(by.address ?? "")", "request-id": "\(by.requestID ?? "")",
            ])
    }

    private static func anonymousToken(policies: [String]) -> ACLToken {
        ACLToken(
            accessorID: ACLToken.anonymousAccessorID, description: "Callers without a token", policies: policies,
            createdAt: Date(timeIntervalSince1970: 0))
    }

    /// 128 random bits as a UUID, the form Consul's secrets take.
    private static func newSecret() -> String {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: 16)
        for position in bytes.indices { bytes[position] = UInt8.random(in: 0...255, using: &generator) }
        bytes[6] = (bytes[6] & 0x0F) | 0x40
        bytes[8] = (bytes[8] & 0x3F) | 0x80
        let uuid = UUID(
            uuid: (
                bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8], bytes[9],
                bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]
            ))
        return uuid.uuidString.lowercased()
    }
}

/// Cluster mode: re-reads the ACLs from etcd every ``ACLConfiguration/refreshInterval``, so changes made through
/// other agents (a deleted token above all) take effect here too.
struct ACLRefresher: Service {
    let acls: AccessControl
    let logger: Logger

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await Task.sleep(for: acls.configuration.refreshInterval)
                } catch {
                    return
                }
                do {
                    try await acls.load()
                } catch {
                    logger.debug("ACLs not re-read", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}

/// A lock for async code: one holder at a time, the others wait in order.
final class AsyncLock: Sendable {
    private let state = Mutex((held: false, waiters: [CheckedContinuation<Void, Never>]()))

    func withLock<T: Sendable>(_ body: () async throws -> T) async rethrows -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let acquired = state.withLock { state in
                if !state.held {
                    state.held = true
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if acquired { continuation.resume() }
        }
    }

    private func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.held = false
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}

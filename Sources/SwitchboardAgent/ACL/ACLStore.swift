import Crypto
import Foundation
import SwitchboardCore
import Synchronization

/// Where the agent keeps its ACL tokens and policies, durably, beside the catalog: SQLite for a single agent, etcd
/// in cluster mode (so every agent honours a token made on any of them), memory for `--dev`.
///
/// A token is kept as its SHA-256 hash, never its secret. Each write is one transaction with its entry in the ACL
/// audit log, and checks its own precondition (a bootstrap only once, a create only of a new name, an update or a
/// delete only of an existing one), so two agents cannot both bootstrap.
public protocol ACLStore: Sendable {
    /// Every token and policy, and whether the ACLs were bootstrapped.
    func loadACLs() async throws -> StoredACLs

    /// Applies `write` with its audit `entry` (numbered by the store), or throws ``ACLError`` when its precondition
    /// does not hold. Returns the entry as logged.
    func apply(_ write: ACLWrite, logging entry: ACLChangeEvent) async throws -> ACLChangeEvent

    /// The logged ACL changes after `sequence`, oldest first, at most `limit`.
    func aclChanges(after sequence: UInt64, limit: Int) async throws -> [ACLChangeEvent]
}

/// A token as stored: what the API shows, and the hash of its secret.
public struct StoredACLToken: Codable, Sendable, Hashable {
    /// Without its secret.
    public var token: ACLToken
    /// SHA-256 of the secret, in lowercase hex.
    public var secretHash: String

    public init(token: ACLToken, secretHash: String) {
        var token = token
        token.secretID = nil
        self.token = token
        self.secretHash = secretHash
    }

    /// SHA-256 of `secret` in lowercase hex: what a presented token is looked up by.
    public static func hash(_ secret: String) -> String {
        SHA256.hash(data: Data(secret.utf8)).map { byte in
            let digits = Array("0123456789abcdef".utf8)
            return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]], as: UTF8.self)
        }.joined()
    }
}

/// What ``ACLStore/loadACLs()`` returns.
public struct StoredACLs: Sendable, Hashable {
    public var tokens: [StoredACLToken]
    public var policies: [ACLPolicy]
    public var bootstrapped: Bool
    /// A shared store's revision the ACLs were read at (etcd's), so an older read never replaces a newer view; 0 for
    /// a store of the agent's own.
    public var revision: UInt64

    public init(
        tokens: [StoredACLToken] = [], policies: [ACLPolicy] = [], bootstrapped: Bool = false, revision: UInt64 = 0
    ) {
        self.tokens = tokens
        self.policies = policies
        self.bootstrapped = bootstrapped
        self.revision = revision
    }
}

/// One change to the ACLs, with the precondition the store checks.
public enum ACLWrite: Sendable, Hashable {
    /// The first management token: only while the ACLs were never bootstrapped.
    case bootstrap(StoredACLToken)
    /// A token saved: a new one (`replacing: false`, refused if the accessor exists) or an update (refused if it
    /// does not). The anonymous token is saved with `replacing: nil`: either.
    case saveToken(StoredACLToken, replacing: Bool?)
    case deleteToken(accessorID: String)
    case savePolicy(ACLPolicy, replacing: Bool)
    case deletePolicy(name: String)
}

/// The ACLs in memory only (`--dev`, tests): gone with the process.
public final class InMemoryACLStore: ACLStore {
    private let state = Mutex((acls: StoredACLs(), log: [ACLChangeEvent]()))

    public init() {}

    public func loadACLs() async throws -> StoredACLs { state.withLock { $0.acls } }

    public func apply(_ write: ACLWrite, logging entry: ACLChangeEvent) async throws -> ACLChangeEvent {
        try state.withLock { state throws(ACLError) in
            var acls = state.acls
            try acls.apply(write)
            var entry = entry
            entry.sequence = UInt64(state.log.count + 1)
            state.acls = acls
            state.log.append(entry)
            return entry
        }
    }

    public func aclChanges(after sequence: UInt64, limit: Int) async throws -> [ACLChangeEvent] {
        state.withLock { Array($0.log.filter { $0.sequence > sequence }.prefix(limit)) }
    }
}

extension StoredACLs {
    /// Applies `write` after checking its precondition: the one definition of what each write may do, for the
    /// stores that hold the ACLs as a whole and for the agent's cache.
    mutating func apply(_ write: ACLWrite) throws(ACLError) {
        switch write {
        case .bootstrap(let token):
            guard !bootstrapped else { throw .alreadyBootstrapped }
            bootstrapped = true
            tokens.append(token)
        case .saveToken(let token, let replacing):
            let position = tokens.firstIndex { $0.token.accessorID == token.token.accessorID }
            if replacing == true, position == nil { throw .notFound("token", token.token.accessorID) }
            if replacing == false, position != nil { throw .exists("token", token.token.accessorID) }
            if let position { tokens[position] = token } else { tokens.append(token) }
        case .deleteToken(let accessorID):
            guard let position = tokens.firstIndex(where: { $0.token.accessorID == accessorID }) else {
                throw .notFound("token", accessorID)
            }
            tokens.remove(at: position)
        case .savePolicy(let policy, let replacing):
            let position = policies.firstIndex { $0.name == policy.name }
            if replacing, position == nil { throw .notFound("policy", policy.name) }
            if !replacing, position != nil { throw .exists("policy", policy.name) }
            if let position { policies[position] = policy } else { policies.append(policy) }
        case .deletePolicy(let name):
            guard let position = policies.firstIndex(where: { $0.name == name }) else {
                throw .notFound("policy", name)
            }
            policies.remove(at: position)
        }
    }
}

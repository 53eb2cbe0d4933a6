import Foundation
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardEtcd

/// Cluster mode keeps the ACLs in etcd, under the catalog's prefix, so a token made through any agent works on
/// every agent:
/// - `acl/tokens/<accessor>`: a token, its secret only as a hash;
/// - `acl/policies/<name>`: a policy;
/// - `acl/bootstrapped`: present once the first management token exists;
/// - `acl/log/<time>-<random>`: the ACL audit log; an entry's sequence is the revision that wrote it.
///
/// Each write is one transaction whose compares are its precondition (the bootstrap key absent, a new token's key
/// absent, an updated one's present), so two agents bootstrapping at once cannot both succeed.
extension EtcdCatalogStore: ACLStore {
    private var aclPrefix: String { configuration.prefix + "acl/" }

    /// The tokens, the policies and the bootstrap mark, read at one revision (not the audit log, which only grows).
    public func loadACLs() async throws -> StoredACLs {
        do {
            let bootstrap = try await client.range(EtcdRangeRequest(.key(aclPrefix + "bootstrapped")))
            let revision = bootstrap.header.revision
            let tokens = try await client.range(EtcdRangeRequest(.prefix(aclPrefix + "tokens/"), revision: revision))
            let policies = try await client.range(
                EtcdRangeRequest(.prefix(aclPrefix + "policies/"), revision: revision))
            let decoder = SwitchboardJSON.decoder()
            return StoredACLs(
                tokens: try tokens.keyValues.map { try decoder.decode(StoredACLToken.self, from: Data($0.value)) },
                policies: try policies.keyValues.map { try decoder.decode(ACLPolicy.self, from: Data($0.value)) },
                bootstrapped: !bootstrap.keyValues.isEmpty, revision: UInt64(max(0, revision)))
        } catch let error as EtcdError {
            throw Self.storeError(error)
        }
    }

    public func apply(_ write: ACLWrite, logging entry: ACLChangeEvent) async throws -> ACLChangeEvent {
        let encoder = SwitchboardJSON.encoder()
        func key(_ suffix: String) -> [UInt8] { Array((aclPrefix + suffix).utf8) }
        var compares: [EtcdCompare] = []
        var operations: [EtcdOperation] = []
        let refusal: ACLError
        switch write {
        case .bootstrap(let token):
            let tokenKey = key("tokens/\(token.token.accessorID)")
            compares = [EtcdCompare(key: key("bootstrapped"), .equal, .version(0))]
            operations = [
                .put(key: key("bootstrapped"), value: Array("1".utf8)),
                .put(key: tokenKey, value: Array(try encoder.encode(token))),
            ]
            refusal = .alreadyBootstrapped
        case .saveToken(let token, let replacing):
            let tokenKey = key("tokens/\(token.token.accessorID)")
            if let replacing {
                compares = [EtcdCompare(key: tokenKey, replacing ? .greater : .equal, .version(0))]
            }
            operations = [.put(key: tokenKey, value: Array(try encoder.encode(token)))]
            refusal =
                replacing == true
                ? .notFound("token", token.token.accessorID) : .exists("token", token.token.accessorID)
        case .deleteToken(let accessorID):
            let tokenKey = key("tokens/\(accessorID)")
            compares = [EtcdCompare(key: tokenKey, .greater, .version(0))]
            operations = [.deleteRange(EtcdKeyRange(key: tokenKey))]
            refusal = .notFound("token", accessorID)
        case .savePolicy(let policy, let replacing):
            let policyKey = key("policies/\(policy.name)")
            compares = [EtcdCompare(key: policyKey, replacing ? .greater : .equal, .version(0))]
            operations = [.put(key: policyKey, value: Array(try encoder.encode(policy)))]
            refusal = replacing ? .notFound("policy", policy.name) : .exists("policy", policy.name)
        case .deletePolicy(let name):
            let policyKey = key("policies/\(name)")
            compares = [EtcdCompare(key: policyKey, .greater, .version(0))]
            operations = [.deleteRange(EtcdKeyRange(key: policyKey))]
            refusal = .notFound("policy", name)
        }
        let millis = UInt64(max(0, entry.at.timeIntervalSince1970 * 1000))
        let logKey = key(
            "log/" + String(repeating: "0", count: max(0, 15 - String(millis).count)) + "\(millis)-"
                + UUID().uuidString.lowercased())
        operations.append(.put(key: logKey, value: Array(try encoder.encode(entry))))
        let answer: EtcdTransactionResponse
        do {
            answer = try await client.transaction(EtcdTransaction(compare: compares, success: operations))
        } catch {
            throw Self.storeError(error)
        }
        guard answer.succeeded else { throw refusal }
        var logged = entry
        logged.sequence = UInt64(answer.header.revision)
        return logged
    }

    public func aclChanges(after sequence: UInt64, limit: Int) async throws -> [ACLChangeEvent] {
        var request = EtcdRangeRequest(.prefix(aclPrefix + "log/"), limit: Int64(max(1, limit)))
        request.minimumModRevision = Int64(clamping: sequence + 1)
        request.sortOrder = .ascending
        request.sortTarget = .modification
        do {
            let answer = try await client.range(request)
            let decoder = SwitchboardJSON.decoder()
            return try answer.keyValues.map { entry in
                var event = try decoder.decode(ACLChangeEvent.self, from: Data(entry.value))
                event.sequence = UInt64(entry.modRevision)
                return event
            }
        } catch let error as EtcdError {
            throw Self.storeError(error)
        }
    }
}

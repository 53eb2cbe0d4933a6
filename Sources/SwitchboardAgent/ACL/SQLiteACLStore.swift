import Foundation
import GRDB
import SwitchboardCore

/// A single agent's ACLs live in its SQLite database, beside the catalog: each write is one transaction with its
/// audit log entry, committed (and fsynced, by default) before it is acknowledged.
extension SQLiteCatalogStore: ACLStore {
    public func loadACLs() async throws -> StoredACLs {
        try await database.read { db in try Self.readACLs(db) }
    }

    public func apply(_ write: ACLWrite, logging entry: ACLChangeEvent) async throws -> ACLChangeEvent {
        try await database.write { db in
            var acls = try Self.readACLs(db)
            try acls.apply(write)
            let encoder = SwitchboardJSON.encoder()
            switch write {
            case .bootstrap(let token):
                try db.execute(sql: "UPDATE catalog_meta SET value = 1 WHERE key = 'acl_bootstrapped'")
                try db.execute(
                    sql: "INSERT INTO acl_tokens (accessor, record) VALUES (?, ?)",
                    arguments: [token.token.accessorID, try encoder.encode(token)])
            case .saveToken(let token, _):
                try db.execute(
                    sql: "INSERT OR REPLACE INTO acl_tokens (accessor, record) VALUES (?, ?)",
                    arguments: [token.token.accessorID, try encoder.encode(token)])
            case .deleteToken(let accessorID):
                try db.execute(sql: "DELETE FROM acl_tokens WHERE accessor = ?", arguments: [accessorID])
            case .savePolicy(let policy, _):
                try db.execute(
                    sql: "INSERT OR REPLACE INTO acl_policies (name, record) VALUES (?, ?)",
                    arguments: [policy.name, try encoder.encode(policy)])
            case .deletePolicy(let name):
                try db.execute(sql: "DELETE FROM acl_policies WHERE name = ?", arguments: [name])
            }
            var logged = entry
            logged.sequence = UInt64(try Int64.fetchOne(db, sql: "SELECT COALESCE(MAX(seq), 0) + 1 FROM acl_log") ?? 1)
            try db.execute(
                sql: "INSERT INTO acl_log (seq, record) VALUES (?, ?)",
                arguments: [Int64(logged.sequence), try encoder.encode(logged)])
            return logged
        }
    }

    public func aclChanges(after sequence: UInt64, limit: Int) async throws -> [ACLChangeEvent] {
        let records = try await database.read { db in
            try Data.fetchAll(
                db, sql: "SELECT record FROM acl_log WHERE seq > ? ORDER BY seq LIMIT ?",
                arguments: [Int64(clamping: sequence), limit])
        }
        let decoder = SwitchboardJSON.decoder()
        return try records.map { try decoder.decode(ACLChangeEvent.self, from: $0) }
    }

    private static func readACLs(_ db: Database) throws -> StoredACLs {
        let decoder = SwitchboardJSON.decoder()
        let tokens = try Data.fetchAll(db, sql: "SELECT record FROM acl_tokens ORDER BY accessor").map {
            try decoder.decode(StoredACLToken.self, from: $0)
        }
        let policies = try Data.fetchAll(db, sql: "SELECT record FROM acl_policies ORDER BY name").map {
            try decoder.decode(ACLPolicy.self, from: $0)
        }
        let bootstrapped =
            try Int64.fetchOne(db, sql: "SELECT value FROM catalog_meta WHERE key = 'acl_bootstrapped'") ?? 0
        return StoredACLs(tokens: tokens, policies: policies, bootstrapped: bootstrapped != 0)
    }
}

import Foundation
import GRDB
import SwitchboardCatalog
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The default durable store: one SQLite database (through GRDB, in WAL mode) in the agent's data directory.
///
/// Each ``commit(_:)`` is one transaction: it checks every change's precondition against the instance rows, gives
/// the changes consecutive indexes, and writes the events, the instance rows they leave and the new index. It
/// returns only once SQLite has committed, so an acknowledged write survives a `kill -9` of the agent. With
/// ``Configuration/Synchronous/full`` (the default) it also survives a power loss, at the price of an fsync per
/// batch; group commit in the `Catalog` shares that fsync among all writes that arrive meanwhile. Committed changes
/// are handed to the catalog's change sequence from SQLite's writer, in commit order.
///
/// The data directory is locked (`flock`) while the store is open, so two agents cannot share one by mistake.
public final class SQLiteCatalogStore: CatalogStore {
    /// Tunables with production defaults.
    public struct Configuration: Sendable {
        /// How hard SQLite works to keep a commit through a crash.
        public enum Synchronous: String, Sendable {
            /// Survives a crash or `kill -9` of the process (WAL is written before commit returns); a power loss can
            /// lose the latest commits.
            case normal = "NORMAL"
            /// Also survives a power loss: fsync at every commit.
            case full = "FULL"
        }

        public var synchronous: Synchronous
        /// How many events the log keeps before pruning the oldest.
        public var eventRetention: Int
        /// How many of the latest events ``load()`` returns to refill the in-memory ring.
        public var recentEventsOnLoad: Int

        public init(synchronous: Synchronous = .full, eventRetention: Int = 100_000, recentEventsOnLoad: Int = 4096) {
            self.synchronous = synchronous
            self.eventRetention = eventRetention
            self.recentEventsOnLoad = recentEventsOnLoad
        }
    }

    /// The database file's name inside the data directory.
    public static let databaseFileName = "catalog.sqlite"

    /// Also holds the ACLs (`SQLiteACLStore.swift`).
    let database: DatabasePool
    private let configuration: Configuration
    /// The data directory's lock, held until ``close()``.
    private let lockDescriptor: Mutex<Int32?>
    private let feed = LocalChangeFeed()

    /// Opens (creating if needed) the store in `directory`.
    public init(directory: String, configuration: Configuration = Configuration()) throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let descriptor = try Self.lockDirectory(directory)
        lockDescriptor = Mutex(descriptor)
        var options = GRDB.Configuration()
        let synchronous = configuration.synchronous.rawValue
        options.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = \(synchronous)")
        }
        do {
            database = try DatabasePool(path: "\(directory)/\(Self.databaseFileName)", configuration: options)
            try Self.migrator.migrate(database)
        } catch {
            closeDescriptor(descriptor)
            throw error
        }
        self.configuration = configuration
    }

    deinit {
        close()
    }

    /// Ends the change sequences, closes the database and lets another agent open the directory. Later calls to the
    /// store fail; closing again does nothing.
    public func close() {
        let descriptor = lockDescriptor.withLock { descriptor -> Int32? in
            defer { descriptor = nil }
            return descriptor
        }
        guard let descriptor else { return }
        feed.finish()
        try? database.close()
        closeDescriptor(descriptor)
    }

    private static func lockDirectory(_ directory: String) throws -> Int32 {
        let path = "\(directory)/LOCK"
        let descriptor = open(path, O_CREAT | O_RDWR, 0o644)
        guard descriptor >= 0 else {
            throw StoreError("cannot open \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            closeDescriptor(descriptor)
            throw StoreError(
                "data directory \(directory) is in use by another switchboard agent; stop it or pick another --data-dir"
            )
        }
        return descriptor
    }

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE instances (
                        service TEXT NOT NULL,
                        id TEXT NOT NULL,
                        record BLOB NOT NULL,
                        PRIMARY KEY (service, id)
                    ) WITHOUT ROWID;
                    CREATE TABLE events (idx INTEGER PRIMARY KEY, record BLOB NOT NULL);
                    CREATE TABLE catalog_meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
                    INSERT INTO catalog_meta (key, value) VALUES ('index', 0);
                    """
            )
        }
        migrator.registerMigration("v2: service indexes") { db in
            // The index of each service's latest change, kept even when its last instance is gone.
            try db.execute(
                sql: """
                    CREATE TABLE services (name TEXT PRIMARY KEY NOT NULL, idx INTEGER NOT NULL) WITHOUT ROWID;
                    INSERT INTO services (name, idx)
                        SELECT name, MAX(idx) FROM (
                            SELECT service AS name, json_extract(record, '$.modifyIndex') AS idx FROM instances
                            UNION ALL
                            SELECT json_extract(record, '$.service'), idx FROM events
                        ) GROUP BY name;
                    """
            )
        }
        migrator.registerMigration("v3: modify indexes and the pruned log") { db in
            // Preconditions compare an instance's modify index without decoding its record; the log remembers how
            // far it was pruned, because indexes alone cannot tell a gap from a pruned event.
            try db.execute(
                sql: """
                    ALTER TABLE instances ADD COLUMN modify_index INTEGER NOT NULL DEFAULT 0;
                    UPDATE instances SET modify_index = json_extract(record, '$.modifyIndex');
                    INSERT INTO catalog_meta (key, value) VALUES ('pruned_through',
                        CASE WHEN (SELECT COUNT(*) FROM events) = 0
                            THEN (SELECT value FROM catalog_meta WHERE key = 'index')
                            ELSE (SELECT MIN(idx) FROM events) - 1 END);
                    """
            )
        }
        migrator.registerMigration("v4: ACLs") { db in
            // Tokens by accessor (the secret only as its hash, inside the record), policies by name, and the ACL
            // audit log with its own sequence.
            try db.execute(
                sql: """
                    CREATE TABLE acl_tokens (accessor TEXT PRIMARY KEY NOT NULL, record BLOB NOT NULL) WITHOUT ROWID;
                    CREATE TABLE acl_policies (name TEXT PRIMARY KEY NOT NULL, record BLOB NOT NULL) WITHOUT ROWID;
                    CREATE TABLE acl_log (seq INTEGER PRIMARY KEY, record BLOB NOT NULL);
                    INSERT INTO catalog_meta (key, value) VALUES ('acl_bootstrapped', 0);
                    """
            )
        }
        return migrator
    }

    public func load() async throws -> StoredCatalog {
        let limit = configuration.recentEventsOnLoad
        let (instanceRecords, index, eventRecords, serviceRows) = try await database.read { db in
            let instances = try Data.fetchAll(db, sql: "SELECT record FROM instances")
            let index = try Int64.fetchOne(db, sql: "SELECT value FROM catalog_meta WHERE key = 'index'") ?? 0
            let events = try Data.fetchAll(
                db,
                sql: "SELECT record FROM (SELECT idx, record FROM events ORDER BY idx DESC LIMIT ?) ORDER BY idx",
                arguments: [limit]
            )
            let services = try Row.fetchAll(db, sql: "SELECT name, idx FROM services").map {
                (name: $0["name"] as String, index: $0["idx"] as Int64)
            }
            return (instances, index, events, services)
        }
        let decoder = SwitchboardJSON.decoder()
        var serviceIndexes: [ServiceName: UInt64] = [:]
        for row in serviceRows {
            serviceIndexes[try ServiceName(row.name)] = UInt64(row.index)
        }
        return StoredCatalog(
            instances: try instanceRecords.map { try decoder.decode(Instance.self, from: $0) },
            index: UInt64(index),
            recentEvents: try eventRecords.map { try decoder.decode(ChangeEvent.self, from: $0) },
            serviceIndexes: serviceIndexes
        )
    }

    public func commit(_ changes: [PlannedChange]) async throws -> [CommittedChange] {
        guard !changes.isEmpty else { return [] }
        let retention = Int64(configuration.eventRetention)
        let feed = self.feed
        return try await database.write { db in
            // Statements compiled once per connection and reused: a batch runs them once or twice per change.
            let index =
                try Int64.fetchOne(
                    try db.cachedStatement(sql: "SELECT value FROM catalog_meta WHERE key = 'index'")) ?? 0
            // Every precondition against the rows as they are before the commit.
            let modifyIndex = try db.cachedStatement(
                sql: "SELECT modify_index FROM instances WHERE service = ? AND id = ?")
            for change in changes {
                let current = try Int64.fetchOne(
                    modifyIndex, arguments: [change.key.service.rawValue, change.key.id.rawValue])
                guard change.holds(against: current.map { UInt64($0) }) else {
                    throw CatalogStoreError.conflict(at: UInt64(index))
                }
            }
            let committed = PlannedChange.committing(changes, at: UInt64(index + 1)...)
            let deleteInstance = try db.cachedStatement(sql: "DELETE FROM instances WHERE service = ? AND id = ?")
            let storeInstance = try db.cachedStatement(
                sql: "INSERT OR REPLACE INTO instances (service, id, record, modify_index) VALUES (?, ?, ?, ?)")
            let logEvent = try db.cachedStatement(sql: "INSERT INTO events (idx, record) VALUES (?, ?)")
            let indexService = try db.cachedStatement(sql: "INSERT OR REPLACE INTO services (name, idx) VALUES (?, ?)")
            for change in committed {
                let event = change.event
                if !event.changesCatalog {
                    // An observation leaves the instance and the service's index as they are: only the log holds it.
                } else if event.kind == .removed {
                    try deleteInstance.execute(arguments: [event.service.rawValue, event.id.rawValue])
                } else {
                    try storeInstance.execute(arguments: [
                        event.service.rawValue, event.id.rawValue, Data(change.instanceJSON), Int64(event.index),
                    ])
                }
                try logEvent.execute(arguments: [Int64(event.index), Data(change.eventJSON)])
                if event.changesCatalog {
                    try indexService.execute(arguments: [event.service.rawValue, Int64(event.index)])
                }
            }
            let last = index + Int64(committed.count)
            try db.execute(sql: "UPDATE catalog_meta SET value = ? WHERE key = 'index'", arguments: [last])
            let pruneThrough = last - retention
            if pruneThrough > 0 {
                try db.execute(sql: "DELETE FROM events WHERE idx <= ?", arguments: [pruneThrough])
                try db.execute(
                    sql: "UPDATE catalog_meta SET value = MAX(value, ?) WHERE key = 'pruned_through'",
                    arguments: [pruneThrough])
            }
            // Handed on from SQLite's writer once the transaction is committed: in commit order, never before.
            db.afterNextTransaction(onCommit: { _ in feed.publish(committed) })
            return committed
        }
    }

    public func changes(after index: UInt64) async throws -> AsyncThrowingStream<[CommittedChange], any Error> {
        let feed = self.feed
        // On SQLite's writer, between commits, replay and subscription together: a commit's publication also runs
        // on the writer, after its transaction, so every commit is either read here or published to the new
        // sequence, never neither.
        let subscribed: Result<AsyncThrowingStream<[CommittedChange], any Error>, CatalogStoreError> =
            try await database.writeWithoutTransaction { db in
                let prunedThrough = UInt64(try Self.meta("pruned_through", in: db))
                guard index >= prunedThrough else { return .failure(.compacted(through: prunedThrough)) }
                let records = try Data.fetchAll(
                    db, sql: "SELECT record FROM events WHERE idx > ? ORDER BY idx",
                    arguments: [Int64(clamping: index)])
                let decoder = SwitchboardJSON.decoder()
                let replay = try records.map { CommittedChange(event: try decoder.decode(ChangeEvent.self, from: $0)) }
                return .success(feed.subscribe(replaying: replay))
            }
        return try subscribed.get()
    }

    public func events(after index: UInt64, limit: Int) async throws -> EventLogPage {
        let (records, prunedThrough) = try await database.read { db in
            let records = try Data.fetchAll(
                db,
                sql: "SELECT record FROM events WHERE idx > ? ORDER BY idx LIMIT ?",
                arguments: [Int64(clamping: index), limit]
            )
            return (records, UInt64(try Self.meta("pruned_through", in: db)))
        }
        let decoder = SwitchboardJSON.decoder()
        return EventLogPage(
            events: try records.map { try decoder.decode(ChangeEvent.self, from: $0) }, complete: index >= prunedThrough
        )
    }

    /// A value of the `catalog_meta` table.
    private static func meta(_ key: String, in db: Database) throws -> Int64 {
        try Int64.fetchOne(db, sql: "SELECT value FROM catalog_meta WHERE key = ?", arguments: [key]) ?? 0
    }
}

/// A store that could not be opened or used, with the reason in words.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    public let description: String

    init(_ description: String) {
        self.description = description
    }
}

/// Closes a file descriptor (a free function: inside the store, `close` names the store's own method).
private func closeDescriptor(_ descriptor: Int32) {
    _ = close(descriptor)
}

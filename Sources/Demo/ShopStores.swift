import Foundation
import GRDB

/// What a payment attempt came to.
struct Charge: Codable, Sendable, Equatable {
    var chargeId: String
    var orderId: String
    var amountCents: Int
    /// `charged` or `declined`.
    var status: String
    var instance: String
}

/// An order and where its saga stands.
struct Order: Codable, Sendable, Equatable {
    var orderId: String
    var cartId: String
    var amountCents: Int
    /// `pending`, then `confirmed` or `cancelled`.
    var status: String
    var reason: String?
}

/// A store the instances of one service share (and no other service reads): a SQLite file in WAL mode, so two
/// processes can write it, with a busy timeout for their turns.
func openSharedDatabase(at path: String, migrate: (inout DatabaseMigrator) -> Void) throws -> DatabasePool {
    var options = Configuration()
    options.busyMode = .timeout(10)
    let database = try DatabasePool(path: path, configuration: options)
    var migrator = DatabaseMigrator()
    migrate(&migrator)
    try migrator.migrate(database)
    return database
}

/// The payment service's ledger. A charge is keyed by its idempotency key: the same key charged twice (a retry,
/// perhaps on the other instance) gets the first answer back, never a second charge.
final class PaymentLedger: Sendable {
    private let database: DatabasePool

    init(path: String) throws {
        database = try openSharedDatabase(at: path) { migrator in
            migrator.registerMigration("charges") { db in
                try db.execute(
                    sql: """
                        CREATE TABLE IF NOT EXISTS charges (
                            idempotencyKey TEXT PRIMARY KEY, chargeId TEXT NOT NULL, orderId TEXT NOT NULL,
                            amountCents INTEGER NOT NULL, status TEXT NOT NULL, instance TEXT NOT NULL)
                        """)
            }
        }
    }

    /// The charge for `key`: the one recorded, or a new one decided by `decide` and recorded.
    func charge(
        key: String, orderId: String, amountCents: Int, instance: String, decide: @escaping @Sendable (Int) -> Bool
    ) async throws -> Charge {
        try await database.write { db in
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM charges WHERE idempotencyKey = ?", arguments: [key]) {
                return Self.charge(row)
            }
            let charge = Charge(
                chargeId: "ch-\(UUID().uuidString.prefix(12).lowercased())", orderId: orderId, amountCents: amountCents,
                status: decide(amountCents) ? "charged" : "declined", instance: instance)
            try db.execute(
                sql: "INSERT INTO charges VALUES (?, ?, ?, ?, ?, ?)",
                arguments: [key, charge.chargeId, orderId, amountCents, charge.status, instance])
            return charge
        }
    }

    func counts() async throws -> (charged: Int, declined: Int) {
        try await database.read { db in
            let charged = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM charges WHERE status = 'charged'") ?? 0
            let declined = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM charges WHERE status = 'declined'") ?? 0
            return (charged, declined)
        }
    }

    private static func charge(_ row: Row) -> Charge {
        Charge(
            chargeId: row["chargeId"], orderId: row["orderId"], amountCents: row["amountCents"], status: row["status"],
            instance: row["instance"])
    }
}

/// The order service's orders, keyed by the cart's idempotency key: a checkout retried finds its order.
final class OrderBook: Sendable {
    private let database: DatabasePool

    init(path: String) throws {
        database = try openSharedDatabase(at: path) { migrator in
            migrator.registerMigration("orders") { db in
                try db.execute(
                    sql: """
                        CREATE TABLE IF NOT EXISTS orders (
                            idempotencyKey TEXT PRIMARY KEY, orderId TEXT NOT NULL, cartId TEXT NOT NULL,
                            amountCents INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT)
                        """)
            }
        }
    }

    /// The order for `key`, created pending if there is none.
    func pendingOrder(key: String, cartId: String, amountCents: Int) async throws -> Order {
        try await database.write { db in
            if let row = try Row.fetchOne(db, sql: "SELECT * FROM orders WHERE idempotencyKey = ?", arguments: [key]) {
                return Self.order(row)
            }
            let order = Order(
                orderId: "ord-\(UUID().uuidString.prefix(12).lowercased())", cartId: cartId, amountCents: amountCents,
                status: "pending")
            try db.execute(
                sql: "INSERT INTO orders VALUES (?, ?, ?, ?, ?, NULL)",
                arguments: [key, order.orderId, cartId, amountCents, order.status])
            return order
        }
    }

    /// Moves a pending order to `status`; an order already confirmed or cancelled keeps its end.
    func settle(_ orderId: String, status: String, reason: String?) async throws -> Order {
        try await database.write { db in
            try db.execute(
                sql: "UPDATE orders SET status = ?, reason = ? WHERE orderId = ? AND status = 'pending'",
                arguments: [status, reason, orderId])
            guard let row = try Row.fetchOne(db, sql: "SELECT * FROM orders WHERE orderId = ?", arguments: [orderId])
            else { throw DemoError("order \(orderId) vanished") }
            return Self.order(row)
        }
    }

    private static func order(_ row: Row) -> Order {
        Order(
            orderId: row["orderId"], cartId: row["cartId"], amountCents: row["amountCents"], status: row["status"],
            reason: row["reason"])
    }
}

/// A demo failure with a message for the person watching.
public struct DemoError: Error, CustomStringConvertible {
    /// What went wrong, and where to look (the logs directory, say).
    public var description: String
    /// A failure saying `description`.
    public init(_ description: String) { self.description = description }
}

/// The saga's books, checked against each other once the shoppers stop: every confirmed order charged once, every
/// charge belonging to a confirmed order, no cart charged twice, no order left pending.
public struct ShopAudit: Codable, Sendable {
    /// Carts with more than one successful charge (a checkout that charged twice).
    public var doubleCharges: Int
    /// Charges whose order is not confirmed (the shopper paid for nothing).
    public var chargedButNotConfirmed: Int
    /// Confirmed orders without a charge.
    public var confirmedButNotCharged: Int
    /// Orders whose saga never ended.
    public var pendingOrders: Int

    /// Reads both stores (the order and payment services' SQLite files).
    public static func read(orders: String, payments: String) throws -> ShopAudit {
        let queue = try DatabaseQueue(path: orders)
        return try queue.inDatabase { db in
            try db.execute(sql: "ATTACH DATABASE ? AS ledger", arguments: [payments])
            let double =
                try Int.fetchOne(
                    db,
                    sql: """
                        SELECT COUNT(*) FROM (SELECT o.cartId FROM orders o JOIN ledger.charges c ON c.orderId = o.orderId
                        WHERE c.status = 'charged' GROUP BY o.cartId HAVING COUNT(*) > 1)
                        """) ?? 0
            let chargedNotConfirmed =
                try Int.fetchOne(
                    db,
                    sql: """
                        SELECT COUNT(*) FROM ledger.charges c LEFT JOIN orders o ON o.orderId = c.orderId
                        WHERE c.status = 'charged' AND (o.status IS NULL OR o.status != 'confirmed')
                        """) ?? 0
            let confirmedNotCharged =
                try Int.fetchOne(
                    db,
                    sql: """
                        SELECT COUNT(*) FROM orders o WHERE o.status = 'confirmed' AND NOT EXISTS
                        (SELECT 1 FROM ledger.charges c WHERE c.orderId = o.orderId AND c.status = 'charged')
                        """) ?? 0
            let pending = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM orders WHERE status = 'pending'") ?? 0
            return ShopAudit(
                doubleCharges: double, chargedButNotConfirmed: chargedNotConfirmed,
                confirmedButNotCharged: confirmedNotCharged, pendingOrders: pending)
        }
    }
}

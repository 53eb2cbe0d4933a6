import SwitchboardCore

/// Why the catalog refused or could not carry out a change.
///
/// A struct wrapping a private code (the swift-service-lifecycle pattern), so new reasons can be added without
/// breaking code that switches on the public static values.
public struct CatalogError: Error, Hashable, Sendable, CustomStringConvertible {
    private enum Code: Hashable, Sendable {
        case instanceNotFound
        case conflict
        case invalid
        case unavailable
        case storeFailed
    }

    private let code: Code
    /// A sentence a user can act on.
    public let message: String
    /// The request field at fault, when there is one.
    public let field: String?

    private init(_ code: Code, _ message: String, field: String? = nil) {
        self.code = code
        self.message = message
        self.field = field
    }

    /// No instance `id` of `service` is registered.
    public static func instanceNotFound(service: ServiceName, id: InstanceID) -> CatalogError {
        CatalogError(.instanceNotFound, "instance '\(id)' of service '\(service)' is not registered")
    }

    /// A compare-and-set write found a different modify index than the caller expected.
    public static func conflict(expected: UInt64, actual: UInt64) -> CatalogError {
        CatalogError(
            .conflict,
            "the instance's modifyIndex is \(actual), not \(expected) as the cas parameter expected; read it again",
            field: "cas"
        )
    }

    /// Another writer of a shared store kept changing the instance while the write was planned again and again.
    public static func contended(_ key: InstanceKey) -> CatalogError {
        CatalogError(
            .conflict,
            "instance '\(key.id)' of service '\(key.service)' kept changing elsewhere while this write was planned; retry it"
        )
    }

    /// The change itself is invalid.
    public static func invalid(_ error: ValidationError) -> CatalogError {
        CatalogError(.invalid, error.message, field: error.field)
    }

    /// The store committed the change, but this catalog will not apply it (its store's change sequence ended): it
    /// may well have happened.
    public static let unconfirmed = CatalogError(
        .unavailable,
        "the change was committed to the store, but this agent could not confirm it (it is stopping, or its view "
            + "stopped following the store); read it back")

    /// The catalog is shutting down and takes no more writes.
    public static let unavailable = CatalogError(.unavailable, "the agent is shutting down; retry on another agent")

    /// The store cannot take writes now (cluster mode: etcd has lost its quorum or cannot be reached); nothing was
    /// written. Reads still answer from the agent's last view.
    public static func storeUnavailable(_ reason: String) -> CatalogError {
        CatalogError(
            .unavailable,
            "the catalog's store cannot take writes now, so nothing was written (\(reason)); lookups still answer "
                + "from this agent's last view; retry the write later")
    }

    /// The store did not confirm the change in time and may still commit it (cluster mode: etcd lost its quorum with
    /// the write in flight, and commits it if the quorum returns).
    public static func storeIndeterminate(_ reason: String) -> CatalogError {
        CatalogError(
            .unavailable,
            "the catalog's store did not confirm the write in time (\(reason)); it may still take effect when the "
                + "store recovers: read the instance back before retrying")
    }

    /// The durable store could not commit the change; nothing was applied.
    public static func storeFailed(_ reason: String) -> CatalogError {
        CatalogError(.storeFailed, "the change could not be stored, nothing was applied: \(reason)")
    }

    /// Whether the instance named is not registered.
    public var isInstanceNotFound: Bool { code == .instanceNotFound }
    /// Whether a compare-and-set found another modify index, or another writer kept changing the instance.
    public var isConflict: Bool { code == .conflict }
    /// Whether the change itself broke a rule.
    public var isInvalid: Bool { code == .invalid }
    /// Whether the catalog takes no writes now (shutting down), or could not confirm one.
    public var isUnavailable: Bool { code == .unavailable }
    /// Whether the store failed to commit (nothing was applied).
    public var isStoreFailure: Bool { code == .storeFailed }

    public var description: String { message }
}

extension CatalogError: APIReportableError {
    /// The status the API answers with: 404, 409, 422, 503 or 500.
    package var apiStatus: Int {
        switch code {
        case .instanceNotFound: 404
        case .conflict: 409
        case .invalid: 422
        case .unavailable: 503
        case .storeFailed: 500
        }
    }

    package var apiErrorBody: APIErrorBody {
        switch code {
        case .instanceNotFound: APIErrorBody(error: .notFound, message: message)
        case .conflict: APIErrorBody(error: .conflict, message: message, field: field)
        case .invalid: APIErrorBody(error: .invalidArgument, message: message, field: field)
        case .unavailable: APIErrorBody(error: .unavailable, message: message)
        case .storeFailed: APIErrorBody(error: .internal, message: message)
        }
    }
}

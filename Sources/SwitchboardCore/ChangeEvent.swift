import struct Foundation.Date

/// One change to the catalog, numbered by the catalog index it produced.
///
/// Events are the catalog's single source of change: the store persists them, the in-memory state applies them,
/// watchers receive them, and `GET /v1/events` lists them. Each carries the instance as it is after the change
/// (or as it was, for a removal), so a consumer never has to read the catalog again to follow along.
public struct ChangeEvent: Hashable, Sendable, Codable {
    /// What happened to the instance.
    public enum Kind: String, Codable, Sendable, Hashable {
        /// A new instance was registered.
        case added
        /// A registered instance's definition changed.
        case updated
        /// The instance's status changed (health, or maintenance on/off).
        case status
        /// The instance was deregistered.
        case removed
        /// A client reported what it saw of the instance (see ``Observation``); the instance is unchanged.
        case observed
    }

    /// The catalog index this change produced.
    public var index: UInt64
    public var kind: Kind
    public var at: Date
    public var service: ServiceName
    public var id: InstanceID
    /// After the change; for `removed`, the instance as it was; for `observed`, as it is.
    public var instance: Instance
    /// What was reported, for an `observed` event.
    public var observation: Observation?
    /// Who made the change through the API (the audit trail); nil for the agent's own changes (health checks,
    /// expiry).
    public var by: AuditRecord?

    public init(
        index: UInt64, kind: Kind, at: Date, instance: Instance, observation: Observation? = nil,
        by: AuditRecord? = nil
    ) {
        self.index = index
        self.kind = kind
        self.at = at
        self.service = instance.service
        self.id = instance.id
        self.instance = instance
        self.observation = observation
        self.by = by
    }

    /// Whether the event changed the catalog's contents (every kind but `observed`). An observation takes an index
    /// in the event log, so the catalog-wide index moves, but it leaves every instance and every service's index as
    /// they were: blocking queries on a service stay asleep and cached lookups stay valid.
    public var changesCatalog: Bool { kind != .observed }
}

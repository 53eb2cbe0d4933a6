import SwitchboardCore

/// A change a client asks of the catalog.
public enum CatalogMutation: Sendable, Hashable {
    /// Register or update an instance. With `cas`, only if the instance's modify index equals it (0: only create).
    case register(InstanceDefinition, cas: UInt64?)
    /// Remove an instance.
    case deregister(service: ServiceName, id: InstanceID)
    /// Drain an instance (or bring it back): out of every lookup, still registered.
    case maintenance(service: ServiceName, id: InstanceID, enabled: Bool, reason: String)
    /// Record a check's new status, decided by the health checker after its thresholds.
    case checkStatus(CheckStatusUpdate)
    /// Remove an instance whose check `checkID` (as `definition` defines it) has been critical longer than its
    /// `deregisterAfterCritical`, unless it recovered or was re-registered with another check meanwhile.
    case expire(service: ServiceName, id: InstanceID, checkID: String, definition: CheckDefinition)
    /// Log what a client saw of an instance (an `observed` event); the instance is left as it is.
    case observe(service: ServiceName, id: InstanceID, observation: Observation)

    /// The instance this mutation is about.
    public var key: InstanceKey {
        switch self {
        case .register(let definition, _): InstanceKey(service: definition.service, id: definition.id)
        case .deregister(let service, let id): InstanceKey(service: service, id: id)
        case .maintenance(let service, let id, _, _): InstanceKey(service: service, id: id)
        case .checkStatus(let update): update.key
        case .expire(let service, let id, _, _): InstanceKey(service: service, id: id)
        case .observe(let service, let id, _): InstanceKey(service: service, id: id)
        }
    }
}

/// Service plus instance id: what identifies an instance in the whole catalog.
public struct InstanceKey: Hashable, Sendable {
    public var service: ServiceName
    public var id: InstanceID

    public init(service: ServiceName, id: InstanceID) {
        self.service = service
        self.id = id
    }
}

extension Instance {
    /// Service plus id: the instance's key in the catalog.
    public var key: InstanceKey { InstanceKey(service: service, id: id) }
}

extension ChangeEvent {
    /// The key of the instance the change is about.
    public var instanceKey: InstanceKey { InstanceKey(service: service, id: id) }
}

/// A check's new status, as the health checker reports it to the catalog.
///
/// It names the check by id and by the definition that produced the result, so that a result computed for a check
/// that was re-registered with another definition meanwhile changes nothing.
public struct CheckStatusUpdate: Sendable, Hashable {
    public var key: InstanceKey
    public var checkID: String
    public var definition: CheckDefinition
    public var status: HealthStatus
    /// What the probe or heartbeat said (capped to `CheckState.outputLimit`).
    public var output: String

    public init(key: InstanceKey, checkID: String, definition: CheckDefinition, status: HealthStatus, output: String) {
        self.key = key
        self.checkID = checkID
        self.definition = definition
        self.status = status
        self.output = CheckState.capped(output)
    }
}

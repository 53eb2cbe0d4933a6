/// The answer of `GET /v1/services/{service}`, and the data of a service stream's `snapshot` event.
public struct ServiceLookup: Sendable, Codable, Hashable {
    public var service: ServiceName
    /// The index of the service's latest change (what a blocking query on it waits past).
    public var index: UInt64
    public var instances: [Instance]

    public init(service: ServiceName, index: UInt64, instances: [Instance]) {
        self.service = service
        self.index = index
        self.instances = instances
    }
}

/// One row of `GET /v1/services`.
public struct ServiceSummary: Sendable, Codable, Hashable {
    public var name: ServiceName
    public var index: UInt64
    public var tags: [String]
    public var counts: StatusCounts

    public init(name: ServiceName, index: UInt64, tags: [String], counts: StatusCounts) {
        self.name = name
        self.index = index
        self.tags = tags
        self.counts = counts
    }
}

/// The answer of `GET /v1/services`.
public struct ServiceList: Sendable, Codable, Hashable {
    public var index: UInt64
    public var services: [ServiceSummary]

    public init(index: UInt64, services: [ServiceSummary]) {
        self.index = index
        self.services = services
    }
}

/// The answer of `GET /v1/events`: a page of the change log.
public struct EventPage: Sendable, Codable, Hashable {
    /// The catalog's index now.
    public var index: UInt64
    public var events: [ChangeEvent]
    /// `true` when events after the requested index are gone from every log: re-read the catalog instead.
    public var truncated: Bool
    /// With ACLs on, and for a token that may read the ACLs: the ACL changes after `?aclSince=` (the audit trail of
    /// tokens and policies, numbered by their own sequence).
    public var acl: [ACLChangeEvent]?

    public init(index: UInt64, events: [ChangeEvent], truncated: Bool, acl: [ACLChangeEvent]? = nil) {
        self.index = index
        self.events = events
        self.truncated = truncated
        self.acl = acl
    }
}

/// The data of a watch stream's `snapshot` event: every instance in the stream's view, current at `index`.
///
/// A service's stream names its service (the same shape as ``ServiceLookup``); the whole catalog's stream does not.
public struct WatchSnapshotEvent: Sendable, Codable, Hashable {
    /// The catalog index the snapshot is current at (also the event's id).
    public var index: UInt64
    /// The service of a service's stream; `nil` for the whole catalog's.
    public var service: ServiceName?
    public var instances: [Instance]

    public init(index: UInt64, service: ServiceName?, instances: [Instance]) {
        self.index = index
        self.service = service
        self.instances = instances
    }
}

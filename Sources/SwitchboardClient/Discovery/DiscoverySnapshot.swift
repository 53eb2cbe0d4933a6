import SwitchboardCore

/// What a client knows about one service at a moment: its instances and how fresh that knowledge is.
///
/// When every agent is unreachable the client keeps answering with the last instances it knew (an empty list
/// because the registry is down would turn a registry outage into an outage of every caller); ``isLive`` and
/// ``staleness(at:)`` say how far to trust them.
public struct DiscoverySnapshot: Sendable {
    /// The service.
    public let service: ServiceName
    /// The instances passing the client's query (healthy ones, by default), sorted by id.
    public let instances: InstanceSet
    /// The catalog index the snapshot is current at.
    public let index: UInt64
    /// Whether the client is following the service's changes right now (its watch stream is open).
    public let isLive: Bool
    /// When the agent last confirmed this list (while live: when the stream last delivered).
    public let confirmedAt: ContinuousClock.Instant

    /// How old the list may be: zero while live, else the time since the agent last confirmed it.
    public func staleness(at now: ContinuousClock.Instant = .now) -> Duration {
        isLive ? .zero : max(.zero, now - confirmedAt)
    }

    func with(isLive: Bool, confirmedAt: ContinuousClock.Instant? = nil) -> DiscoverySnapshot {
        DiscoverySnapshot(
            service: service, instances: instances, index: index, isLive: isLive,
            confirmedAt: confirmedAt ?? self.confirmedAt)
    }
}

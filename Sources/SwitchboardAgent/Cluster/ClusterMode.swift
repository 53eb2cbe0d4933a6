import SwitchboardCore
import SwitchboardEtcd

/// What an agent in cluster mode has beyond a single agent: the shared store and the membership.
public struct ClusterMode: Sendable {
    /// The catalog in etcd (and how current this agent's view of it is).
    public let store: EtcdCatalogStore
    /// The live agents, and who runs which check.
    public let membership: ClusterMembership

    public init(store: EtcdCatalogStore, membership: ClusterMembership) {
        self.store = store
        self.membership = membership
    }

    /// `GET /v1/agent`'s cluster section.
    func report() -> ClusterReport {
        ClusterReport(
            store: "etcd", endpoints: store.client.configuration.endpoints, prefix: store.configuration.prefix,
            viewAgeMilliseconds: store.viewAge.map(\.milliseconds), lastError: store.lastFailure,
            agentID: membership.agentID, members: membership.members)
    }
}

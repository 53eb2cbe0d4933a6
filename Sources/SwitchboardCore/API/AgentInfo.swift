import struct Foundation.Date

/// The answer of `GET /v1/agent`: what an agent is, how much it holds and how its health checking and watches fare.
public struct AgentInfo: Codable, Sendable, Hashable {
    public var version: String
    public var startedAt: Date
    public var uptimeSeconds: Double
    public var index: UInt64
    public var services: Int
    public var instances: Int
    public var counts: StatusCounts
    /// Where the catalog is kept: `sqlite:<path>` or `memory`.
    public var store: String
    /// Checks watched, probe lateness and self-preservation.
    public var health: HealthReport
    /// Held queries, open streams and the changes held for them.
    public var watches: WatchReport
    /// Cluster mode only (`--store etcd`): the shared store and how current this agent's view of it is.
    public var cluster: ClusterReport?

    public init(
        version: String, startedAt: Date, uptimeSeconds: Double, index: UInt64, services: Int, instances: Int,
        counts: StatusCounts, store: String, health: HealthReport, watches: WatchReport, cluster: ClusterReport? = nil
    ) {
        self.version = version
        self.startedAt = startedAt
        self.uptimeSeconds = uptimeSeconds
        self.index = index
        self.services = services
        self.instances = instances
        self.counts = counts
        self.store = store
        self.health = health
        self.watches = watches
        self.cluster = cluster
    }
}

/// Cluster mode as `GET /v1/agent` reports it.
///
/// Writes are linearizable through etcd; reads answer from this agent's view, which follows etcd's changes. The
/// view's age says how stale a read may be: how long ago the agent last confirmed, with a read that needs etcd's
/// quorum, that it held every change etcd had committed.
public struct ClusterReport: Sendable, Codable, Hashable {
    /// The shared store: `etcd`.
    public var store: String
    /// The etcd members' client URLs the agent was given.
    public var endpoints: [String]
    /// The prefix of the agents' keys.
    public var prefix: String
    /// Milliseconds since the view was last confirmed current; absent when it never was.
    public var viewAgeMilliseconds: Int64?
    /// The last error reaching etcd, while the view is not confirmed.
    public var lastError: String?
    /// This agent's id among the members.
    public var agentID: String
    /// The live agents (those whose lease etcd holds), this one included once its lease is placed, sorted by id.
    public var members: [ClusterMember]

    public init(
        store: String, endpoints: [String], prefix: String, viewAgeMilliseconds: Int64?, lastError: String?,
        agentID: String, members: [ClusterMember]
    ) {
        self.store = store
        self.endpoints = endpoints
        self.prefix = prefix
        self.viewAgeMilliseconds = viewAgeMilliseconds
        self.lastError = lastError
        self.agentID = agentID
        self.members = members
    }
}

/// A live agent of a cluster, as its member key in etcd describes it.
public struct ClusterMember: Sendable, Codable, Hashable {
    /// The agent's id (`--agent-id`, or generated at start).
    public var id: String
    /// Where its HTTP API listens (`host:port`): where other agents send it the heartbeats of the checks it runs.
    public var address: String
    public var startedAt: Date
    public var version: String
    /// The TTL instances whose checks the agent runs, and how many of them missed their heartbeat lately: what
    /// self-preservation judges across the whole cluster. Absent until the agent has published them.
    public var ttlInstances: Int?
    public var ttlMissing: Int?

    public init(
        id: String, address: String, startedAt: Date, version: String, ttlInstances: Int? = nil,
        ttlMissing: Int? = nil
    ) {
        self.id = id
        self.address = address
        self.startedAt = startedAt
        self.version = version
        self.ttlInstances = ttlInstances
        self.ttlMissing = ttlMissing
    }
}

/// Health checking as `GET /v1/agent` reports it.
public struct HealthReport: Sendable, Codable, Hashable {
    /// The checks the agent watches, by kind.
    public struct CheckCounts: Sendable, Codable, Hashable {
        public var ttl: Int
        public var http: Int
        public var tcp: Int

        public init(ttl: Int, http: Int, tcp: Int) {
            self.ttl = ttl
            self.http = http
            self.tcp = tcp
        }
    }

    /// Where self-preservation stands (see the agent's `--self-preservation-share`).
    public struct SelfPreservation: Sendable, Codable, Hashable {
        public var enabled: Bool
        /// Whether TTL expiry is paused now.
        public var active: Bool
        public var since: Date?
        /// The share of TTL instances that must miss at once to engage it.
        public var share: Double
        /// TTL instances overdue or missed within the window.
        public var missing: Int
        /// TTL instances watched.
        public var instances: Int

        public init(enabled: Bool, active: Bool, since: Date?, share: Double, missing: Int, instances: Int) {
            self.enabled = enabled
            self.active = active
            self.since = since
            self.share = share
            self.missing = missing
            self.instances = instances
        }
    }

    public var checks: CheckCounts
    public var probesInFlight: Int
    /// Probes skipped because the previous one of the same check was still running.
    public var skippedProbes: Int
    /// How late probes started against their schedule, over the latest probes.
    public var probeLateness: LatenessSummary
    public var selfPreservation: SelfPreservation
    /// Heartbeats received since the agent started (TTL checks, Consul's check updates, Eureka's renewals): two
    /// readings a known time apart give the rate.
    public var heartbeats: Int

    public init(
        checks: CheckCounts, probesInFlight: Int, skippedProbes: Int, probeLateness: LatenessSummary,
        selfPreservation: SelfPreservation, heartbeats: Int = 0
    ) {
        self.heartbeats = heartbeats
        self.checks = checks
        self.probesInFlight = probesInFlight
        self.skippedProbes = skippedProbes
        self.probeLateness = probeLateness
        self.selfPreservation = selfPreservation
    }
}

/// Percentiles of probe lateness, in milliseconds.
public struct LatenessSummary: Sendable, Codable, Hashable {
    public var samples: Int
    public var p50Ms: Double
    public var p99Ms: Double
    public var maxMs: Double

    public init(samples: Int, p50Ms: Double, p99Ms: Double, maxMs: Double) {
        self.samples = samples
        self.p50Ms = p50Ms
        self.p99Ms = p99Ms
        self.maxMs = maxMs
    }
}

/// Watches as `GET /v1/agent` reports them.
public struct WatchReport: Sendable, Codable, Hashable {
    /// Blocking queries and streams waiting for a change now.
    public var waiting: Int
    /// Changes held for streams to catch up on.
    public var framesHeld: Int
    /// The bytes those changes take, at most the agent's frame byte limit.
    public var frameBytes: Int
    /// Streams that fell behind the held changes and were sent a snapshot instead.
    public var resynchronisations: Int

    public init(waiting: Int, framesHeld: Int, frameBytes: Int, resynchronisations: Int) {
        self.waiting = waiting
        self.framesHeld = framesHeld
        self.frameBytes = frameBytes
        self.resynchronisations = resynchronisations
    }
}

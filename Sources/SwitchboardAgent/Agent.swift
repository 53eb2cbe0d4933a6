import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import ServiceLifecycle
import SwitchboardCatalog
import SwitchboardClient
import SwitchboardCore
import SwitchboardDNS
import SwitchboardEtcd
import SwitchboardTLS

/// How an agent runs: where it listens, where it keeps data, and how much it remembers.
public struct AgentConfiguration: Sendable {
    /// Where the catalog is kept.
    public enum Storage: Sendable, Equatable {
        /// SQLite in this directory (the default: `./.switchboard`).
        case sqlite(directory: String)
        /// Nothing survives the process (`--dev`, tests).
        case memory
        /// Cluster mode: a catalog shared by every agent on the same etcd cluster and prefix.
        case etcd(EtcdStorage)
    }

    /// Where cluster mode keeps the catalog.
    public struct EtcdStorage: Sendable, Equatable {
        /// The etcd members' client URLs (`http://127.0.0.1:2379`).
        public var endpoints: [String]
        /// The prefix of every key the agents write (default `/switchboard/`): several catalogs can share one etcd.
        public var prefix: String
        /// How long the agent waits at start for etcd to answer before it gives up.
        public var startupTimeout: Duration
        /// This agent's id among the members (unique in the cluster).
        public var agentID: String
        /// How long a dead agent's member key outlives it, in seconds: when its checks move to the survivors.
        public var leaseTTL: Int64
        /// The `host:port` other agents reach this one's HTTP API at (they relay heartbeats there); nil: the
        /// address the API is bound to, which must then not be a wildcard.
        public var advertiseAddress: String?

        public init(
            endpoints: [String], prefix: String = "/switchboard/", startupTimeout: Duration = .seconds(60),
            agentID: String = EtcdStorage.generatedAgentID(), leaseTTL: Int64 = 2, advertiseAddress: String? = nil
        ) {
            self.advertiseAddress = advertiseAddress
            self.endpoints = endpoints
            self.prefix = prefix
            self.startupTimeout = startupTimeout
            self.agentID = agentID
            self.leaseTTL = leaseTTL
        }

        /// `agent-` and eight random hex digits.
        public static func generatedAgentID() -> String {
            "agent-" + String(UInt32.random(in: .min ... .max), radix: 16)
        }
    }

    public var httpHost: String
    /// 0 picks a free port; the bound one is passed to `onServerRunning`.
    public var httpPort: Int
    public var storage: Storage
    public var sqlite: SQLiteCatalogStore.Configuration
    public var catalog: Catalog.Configuration
    public var health: HealthConfiguration
    public var watch: WatchConfiguration
    /// The DNS interface; nil turns it off.
    public var dns: DNSConfiguration?
    /// A listener of its own for Consul's API (its clients look at 127.0.0.1:8500 unless told otherwise); nil:
    /// Consul's API is served on the HTTP address only. It serves the same routes as the HTTP address.
    public var consulListener: ListenAddress?
    /// TLS on the HTTP API and the Consul listener; nil: plain HTTP.
    public var tls: TLSSettings?
    /// Cluster mode with TLS: how this agent reaches the others' APIs (heartbeat relays), over `https://`: the CA
    /// that signs their certificates and the certificate it presents (its own, for agents that require one).
    public var clusterTLS: AgentTLSConfiguration?
    /// ACL tokens and policies: off unless a default policy is set.
    public var acl: ACLConfiguration
    /// The per-caller write rate and the ceiling on held blocking queries and streams.
    public var limits: RequestLimitsConfiguration
    /// Clients' observations of one instance are logged at most once per this interval (429 with `Retry-After`
    /// in between), so a crowd reporting one failure cannot push real changes out of the event ring.
    public var observationInterval: Duration

    public init(
        httpHost: String = "127.0.0.1",
        httpPort: Int = 7500,
        storage: Storage = .sqlite(directory: ".switchboard"),
        sqlite: SQLiteCatalogStore.Configuration = .init(),
        catalog: Catalog.Configuration = .init(),
        health: HealthConfiguration = .init(),
        watch: WatchConfiguration = .init(),
        dns: DNSConfiguration? = DNSConfiguration(),
        observationInterval: Duration = .seconds(1),
        consulListener: ListenAddress? = nil,
        tls: TLSSettings? = nil,
        acl: ACLConfiguration = ACLConfiguration(),
        limits: RequestLimitsConfiguration = RequestLimitsConfiguration()
    ) {
        self.acl = acl
        self.limits = limits
        self.consulListener = consulListener
        self.tls = tls
        self.httpHost = httpHost
        self.httpPort = httpPort
        self.storage = storage
        self.sqlite = sqlite
        self.catalog = catalog
        self.health = health
        self.watch = watch
        self.dns = dns
        self.observationInterval = observationInterval
    }
}

/// A host and port to listen on; port 0 picks a free one.
public struct ListenAddress: Sendable, Hashable {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

/// The registry server: opens the store, loads the catalog and serves the HTTP API until shut down.
///
/// An `Agent` is a swift-service-lifecycle `Service`: run it in a `ServiceGroup` and it stops gracefully on the
/// group's shutdown (the HTTP server stops taking requests first, then the catalog writer commits what is queued).
///
/// ```swift
/// let agent = Agent(configuration: AgentConfiguration(), logger: logger)
/// let group = ServiceGroup(services: [agent], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
/// try await group.run()
/// ```
public struct Agent: Service {
    public let configuration: AgentConfiguration
    let logger: Logger
    let onServerRunning: @Sendable (SocketAddress?) async -> Void

    /// Creates an agent; `onServerRunning` is told the bound address once the HTTP server listens.
    public init(
        configuration: AgentConfiguration,
        logger: Logger,
        onServerRunning: @escaping @Sendable (SocketAddress?) async -> Void = { _ in }
    ) {
        self.configuration = configuration
        self.logger = logger
        self.onServerRunning = onServerRunning
    }

    public func run() async throws {
        let (store, description) = try openStore()
        let etcd = store as? EtcdCatalogStore
        // The etcd client is shut down however the agent ends.
        do {
            try await serve(store, description: description, etcd: etcd)
        } catch {
            try? await etcd?.client.shutdown()
            throw error
        }
        try? await etcd?.client.shutdown()
    }

    /// Loads the catalog from `store` and serves it until the agent stops.
    private func serve(_ store: any CatalogStore, description: String, etcd: EtcdCatalogStore?) async throws {
        var cluster: ClusterMode?
        if let etcd, case .etcd(let settings) = configuration.storage {
            cluster = ClusterMode(
                store: etcd,
                membership: ClusterMembership(
                    client: etcd.client,
                    configuration: .init(
                        agentID: settings.agentID, prefix: settings.prefix, leaseTTL: settings.leaseTTL),
                    logger: logger))
        }
        let catalog = try await load(from: store)
        logger.info(
            "catalog loaded",
            metadata: [
                "store": "\(description)", "index": "\(catalog.index)", "instances": "\(catalog.summary().instances)",
            ]
        )
        let tls = try configuration.tls.map(ReloadingTLSContext.init(settings:))
        let acls = AccessControl(
            configuration: configuration.acl, store: store as? any ACLStore ?? InMemoryACLStore(),
            shared: etcd != nil, logger: logger)
        if configuration.acl.enabled {
            try await acls.load()
            if let dnsToken = configuration.acl.dnsToken, (try? await acls.authority(presenting: dnsToken)) == nil {
                logger.warning("the --acl-dns-token is not a token this agent knows: DNS answers as anonymous callers")
            }
            logger.info(
                "ACLs on",
                metadata: [
                    "default-policy": "\(configuration.acl.defaultPolicy?.rawValue ?? "")",
                    "tokens": "\(acls.tokens().count)",
                ])
        }
        let application = Self.makeApplication(
            catalog: catalog,
            storeDescription: description,
            configuration: configuration,
            logger: logger,
            cluster: cluster,
            tls: tls,
            acls: acls,
            onServerRunning: onServerRunning
        )
        try await application.run()
        // The data directory is free for the next agent as soon as this one has stopped.
        (store as? SQLiteCatalogStore)?.close()
        logger.info("agent stopped", metadata: ["index": "\(catalog.index)"])
    }

    /// Loads the catalog; a remote store gets until its start-up timeout to answer (etcd may be starting with the
    /// agent).
    private func load(from store: any CatalogStore) async throws -> Catalog {
        guard case .etcd(let etcd) = configuration.storage else {
            return try await Catalog.load(from: store, configuration: configuration.catalog)
        }
        let deadline = ContinuousClock.now + etcd.startupTimeout
        var attempt = 0
        while true {
            do {
                return try await Catalog.load(from: store, configuration: configuration.catalog)
            } catch let error as CatalogStoreError where error.isUnavailable && ContinuousClock.now < deadline {
                attempt += 1
                if attempt == 1 || attempt % 10 == 0 {
                    logger.warning(
                        "waiting for etcd to load the catalog", metadata: ["error": "\(error.reason)"])
                }
                try await Task.sleep(for: .milliseconds(500))
            }
        }
    }

    private func openStore() throws -> (any CatalogStore, String) {
        switch configuration.storage {
        case .etcd(let etcd):
            let client = EtcdClient(configuration: .init(endpoints: etcd.endpoints), logger: logger)
            let store = EtcdCatalogStore(
                client: client, configuration: .init(prefix: etcd.prefix), logger: logger)
            return (store, "etcd:\(etcd.endpoints.joined(separator: ","))\(store.configuration.prefix)")
        case .memory:
            return (InMemoryCatalogStore(), "memory")
        case .sqlite(let directory):
            let store = try SQLiteCatalogStore(directory: directory, configuration: configuration.sqlite)
            let path = URL(fileURLWithPath: directory).standardizedFileURL.path
            return (store, "sqlite:\(path)/\(SQLiteCatalogStore.databaseFileName)")
        }
    }

    /// The HTTP application over `catalog`, with the catalog writer and the health checker as its services.
    ///
    /// Exposed so tests can serve a catalog they built (for example on an in-memory store) exactly as the agent does.
    public static func makeApplication(
        catalog: Catalog,
        storeDescription: String,
        configuration: AgentConfiguration,
        logger: Logger,
        cluster: ClusterMode? = nil,
        tls: ReloadingTLSContext? = nil,
        acls: AccessControl = .disabled(),
        onServerRunning: @escaping @Sendable (SocketAddress?) async -> Void = { _ in },
        onDNSListening: @escaping @Sendable (Int) async -> Void = { _ in }
    ) -> some ApplicationProtocol {
        let metrics = AgentMetrics()
        let storeKind = String(storeDescription.prefix { $0 != ":" })
        metrics.observeCommits(of: catalog, store: storeKind)
        if let tracer = AgentTracing.tracer {
            AgentTracing.observeCommits(of: catalog, store: storeKind, tracer: tracer)
        }
        let limits = RequestLimits(configuration: configuration.limits, metrics: metrics)
        let connections = ConnectionLimiter(
            maximum: configuration.limits.maximumConnections, metrics: metrics, logger: logger)
        let server = HTTPServerBuilder.http1(tls: tls, limiter: connections)
        let health = HealthChecker(
            catalog: catalog, configuration: configuration.health, metrics: metrics, logger: logger,
            membership: cluster?.membership, relayTLS: configuration.clusterTLS)
        let watches = WatchHub(catalog: catalog, configuration: configuration.watch)
        let api = AgentHTTPAPI(
            catalog: catalog, health: health, watches: watches, metrics: metrics, storeDescription: storeDescription,
            cluster: cluster, observationInterval: configuration.observationInterval,
            localAddress: ["0.0.0.0", "::", "[::]", "localhost"].contains(configuration.httpHost)
                ? "127.0.0.1" : configuration.httpHost,
            acls: acls, limits: limits, connections: connections)
        let storeServices: [any Service] = cluster.map { [StoreMaintenance(store: $0.store)] } ?? []
        var services: [any Service] = storeServices + [CatalogService(catalog: catalog), health, watches]
        if cluster != nil, acls.configuration.enabled { services.append(ACLRefresher(acls: acls, logger: logger)) }
        // DNS asks on every query: with ACLs off, the answer is always yes.
        var dnsVisible: @Sendable (ServiceName) -> Bool = { _ in true }
        if acls.configuration.enabled { dnsVisible = { acls.dnsAuthority().canRead($0) } }
        if let dns = configuration.dns {
            services.append(
                DNSServer(
                    responder: DNSResponder(
                        catalog: catalog, configuration: dns,
                        nodes: {
                            api.consulNodes().compactMap { node in
                                (try? HostAddress(node.address)).map { DNSNode(name: node.name, address: $0) }
                            }
                        },
                        visible: dnsVisible),
                    statistics: metrics.dnsQueries,
                    logger: logger,
                    onListening: onDNSListening))
        }
        if let consul = configuration.consulListener {
            services.append(
                Application(
                    router: api.makeRouter(),
                    server: server,
                    configuration: ApplicationConfiguration(
                        address: .hostname(consul.host, port: consul.port),
                        serverName: "switchboard/\(SwitchboardVersion.current)"),
                    onServerRunning: { channel in
                        let address = channel.localAddress.map(hostAndPort) ?? "unknown"
                        logger.info("Consul API listening", metadata: ["address": "\(address)"])
                    },
                    logger: logger))
        }
        if let tls { services.append(TLSReloader(tls: tls, logger: logger)) }
        // Last, so it is the first to stop: the member key goes at once and the checks move to the others.
        if let membership = cluster?.membership { services.append(membership) }
        return Application(
            router: api.makeRouter(),
            server: server,
            configuration: ApplicationConfiguration(
                address: .hostname(configuration.httpHost, port: configuration.httpPort),
                serverName: "switchboard/\(SwitchboardVersion.current)"
            ),
            // Shut down in reverse: the server stops taking requests (held queries and streams end as it starts to: they
            // watch for graceful shutdown themselves), then DNS stops, watches close, health checking stops, and the
            // writer commits what is queued.
            services: services,
            onServerRunning: { channel in
                health.heartbeatsOpen()
                let address = channel.localAddress.map(hostAndPort) ?? "unknown"
                if case .etcd(let etcd) = configuration.storage {
                    cluster?.membership.announce(address: etcd.advertiseAddress ?? address)
                }
                logger.info("agent listening", metadata: ["address": "\(address)"])
                await onServerRunning(channel.localAddress)
            },
            logger: logger
        )
    }
}

/// `127.0.0.1:7500` or `[::1]:7500`, as users write addresses.
func hostAndPort(_ address: SocketAddress) -> String {
    let host = address.ipAddress ?? "?"
    let port = address.port.map(String.init) ?? "?"
    return address.protocol == .inet6 ? "[\(host)]:\(port)" : "\(host):\(port)"
}

/// Runs the catalog (its writer, and the application of what the store commits) for as long as the application
/// runs; stops it on graceful shutdown.
struct CatalogService: Service {
    let catalog: Catalog

    func run() async throws {
        // Graceful shutdown stops new writes and lets the writer commit what is queued; only a hard cancellation
        // fails queued writes.
        try await withGracefulShutdownHandler {
            try await catalog.run()
        } onGracefulShutdown: {
            catalog.finishWrites()
        }
    }
}

/// Runs a remote store's upkeep (cluster mode: checking that the view is current, pruning the log) beside the
/// catalog, until the agent stops.
struct StoreMaintenance: Service {
    let store: EtcdCatalogStore

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            do {
                try await store.maintain()
            } catch is CancellationError {}
        }
    }
}

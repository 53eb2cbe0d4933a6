import ArgumentParser
import Foundation
import Logging
import ProcessSupport
import ServiceLifecycle
import SwitchboardAgent
import SwitchboardClient
import SwitchboardCore
import SwitchboardDNS
import SwitchboardTLS
import UnixSignals

/// The agent's settings: flag, variable, configuration-file key, default and help, each written once. The defaults
/// are the library's own (`AgentConfiguration()` and its parts), so the command and the library cannot disagree.
enum AgentSettings {
    private static let defaults = AgentConfiguration()
    private static let dnsDefaults = DNSConfiguration()

    static let httpAddress = Setting(
        "http-addr", default: "\(defaults.httpHost):\(defaults.httpPort)", valueName: "host:port",
        "Address of the HTTP API; port 0 picks a free one.")
    static let dataDirectory = Setting(
        "data-dir", default: defaultDataDirectory, valueName: "directory", "Directory of the durable catalog.")
    static let store = Setting(
        "store", default: "sqlite", valueName: "sqlite|etcd",
        "Where the catalog is kept: sqlite (in --data-dir) or etcd (cluster mode: every agent on the same etcd and prefix shares one catalog)."
    )
    static let etcdEndpoints = Setting(
        "etcd-endpoints", default: "http://127.0.0.1:2379", valueName: "URL[,URL...]",
        "The etcd members' client URLs, for --store etcd.")
    static let etcdPrefix = Setting(
        "etcd-prefix", default: "/switchboard/", valueName: "prefix",
        "The prefix of every etcd key the agents write, for --store etcd; agents on one prefix share a catalog.")
    static let agentID = Setting(
        "agent-id", valueName: "id",
        "This agent's id among the cluster's members, for --store etcd (letters, digits, '.', '_', '-'); none: agent- and 8 random hex digits."
    )
    static let advertiseAddress = Setting(
        "advertise-addr", valueName: "host:port",
        "Where other agents reach this one's HTTP API, for --store etcd (they relay heartbeats there); none: the --http-addr, which must then not be 0.0.0.0 or [::]."
    )
    static let dev = Setting(
        "dev", default: "false", "Development mode: keep the catalog in memory only; nothing survives a restart.")
    static let sqliteSync = Setting(
        "sqlite-sync", default: defaults.sqlite.synchronous.rawValue.lowercased(), valueName: "full|normal",
        "full: a write survives a power loss (fsync per commit); normal: it survives a crash of the agent.")
    static let selfPreservationShare = Setting(
        "self-preservation-share", default: "\(defaults.health.selfPreservation.share)", valueName: "share",
        "Pause TTL expiry when more than this share (0 to 1) of TTL instances miss their heartbeat within 10 s; 0 turns self-preservation off."
    )
    static let selfPreservationMinimumInstances = Setting(
        "self-preservation-min-instances", default: "\(defaults.health.selfPreservation.minimumInstances)",
        valueName: "count", "Self-preservation needs at least this many TTL instances to engage.")
    static let maximumQueryTime = Setting(
        "max-query-time", default: "\(HumanDuration(defaults.watch.maximumWait))", valueName: "duration",
        "The longest a blocking query is held; a longer wait is cut to it.")
    static let defaultQueryTime = Setting(
        "default-query-time", default: "\(HumanDuration(defaults.watch.defaultWait))", valueName: "duration",
        "How long a blocking query without wait is held (at most the maximum).")
    static let dnsAddress = Setting(
        "dns-addr", default: "\(dnsDefaults.host):\(dnsDefaults.port)", valueName: "host:port",
        "Address DNS answers on (UDP and TCP); port 0 picks a free one.")
    static let dnsDomain = Setting(
        "dns-domain", default: "\(dnsDefaults.domain)", valueName: "domain", "The zone DNS answers for.")
    static let dnsTTL = Setting(
        "dns-ttl", default: "\(dnsDefaults.ttl)s", valueName: "duration",
        "TTL of DNS answers, such as 0s or 5s; 0 keeps resolvers from caching a dead instance.")
    static let dnsAnswerLimit = Setting(
        "dns-answer-limit", default: "\(dnsDefaults.answerLimit ?? 0)", valueName: "count",
        "The most address or SRV records in one DNS answer, picked at random each time; 0: as many as fit.")
    static let dnsDisable = Setting("dns-disable", default: "false", "Do not serve DNS.")
    static let tls = ServerTLSSettings(environmentPrefix: "SWITCHBOARD_", server: "the HTTP API")
    static let consulAddress = Setting(
        "consul-addr", valueName: "host:port",
        "Also serve the HTTP API (with Consul's API) on this address, such as 127.0.0.1:8500 where Consul's clients look by default; none: only on --http-addr."
    )
    static let aclDefaultPolicy = Setting(
        "acl-default-policy", valueName: "deny|allow",
        "Turn ACL tokens on: deny refuses what no token's policy grants (anonymous callers get the anonymous token's policies); allow permits what no policy denies. None: ACLs off."
    )
    static let aclDNSToken = Setting(
        "acl-dns-token", valueName: "secret", secret: true,
        "With ACLs on, DNS answers only for the services this token may read; none: the anonymous token's rights.")
    static let writeRateLimit = Setting(
        "write-rate-limit", default: "\(Int(defaults.limits.writesPerSecond))", valueName: "per-second",
        "Writes per second each caller (token, or IP address without one) may make, heartbeats aside; beyond, 429 with Retry-After. 0: no limit."
    )
    static let writeBurst = Setting(
        "write-burst", default: "\(defaults.limits.writeBurst)", valueName: "count",
        "How many writes a caller may make at once after being idle.")
    static let maximumHeldRequests = Setting(
        "max-held-requests", default: "\(defaults.limits.maximumHeldRequests)", valueName: "count",
        "The most blocking queries and watch streams held at once; beyond, 429 with Retry-After.")

    static let maximumConnections = Setting(
        "max-connections", default: "\(defaults.limits.maximumConnections)", valueName: "count",
        "The most connections open at once (HTTP API and Consul listener together); beyond, new ones are closed as they arrive."
    )

    static let clusterCAFile = Setting(
        "ca-file", valueName: "file",
        "Cluster mode with TLS: the PEM CA that signs the other agents' certificates (heartbeats are relayed to them over https, presenting this agent's --tls-cert); none: the system's CAs."
    )

    static let all: [Setting] = [
        httpAddress, store, etcdEndpoints, etcdPrefix, agentID, advertiseAddress, dataDirectory, dev, sqliteSync,
        selfPreservationShare,
        selfPreservationMinimumInstances,
        maximumQueryTime, defaultQueryTime, dnsAddress, dnsDomain, dnsTTL, dnsAnswerLimit, dnsDisable, consulAddress,
        tls.certificate, tls.key, tls.clientCA, aclDefaultPolicy, aclDNSToken, writeRateLimit, writeBurst,
        maximumHeldRequests, maximumConnections, clusterCAFile, TracingSettings.otlpEndpoint, CommonSettings.logLevel,
        CommonSettings.logFormat, Setting.configFile,
    ]

    private static var defaultDataDirectory: String {
        if case .sqlite(let directory) = defaults.storage { return directory }
        return ".switchboard"
    }

    /// The agent's configuration from `settings`; every bad value is refused naming its flag and the rule.
    static func configuration(from settings: SettingsReader) throws -> AgentConfiguration {
        let address = try settings.required(httpAddress, rule: "host:port with a port of 0..65535", HostAndPort.init)
        let synchronous = try settings.required(sqliteSync, rule: "full or normal") {
            SQLiteCatalogStore.Configuration.Synchronous(rawValue: $0.uppercased())
        }
        let share = try settings.required(selfPreservationShare, rule: "a number from 0 to 1") { text in
            Double(text).flatMap { (0...1).contains($0) ? $0 : nil }
        }
        let minimum = try settings.required(selfPreservationMinimumInstances, rule: "a whole number of at least 1") {
            Int($0).flatMap { $0 >= 1 ? $0 : nil }
        }
        let positiveDuration = "a duration such as 30s or 10m"
        let maximumWait = try settings.required(maximumQueryTime, rule: positiveDuration, Self.positiveDuration)
        let defaultWait = try settings.required(defaultQueryTime, rule: positiveDuration, Self.positiveDuration)
        let consul = try settings.value(consulAddress, rule: "host:port with a port of 0..65535", HostAndPort.init)
        let policy = try settings.value(aclDefaultPolicy, rule: "deny or allow") {
            ACLConfiguration.DefaultPolicy(rawValue: $0.lowercased())
        }
        let rate = try settings.required(writeRateLimit, rule: "a number of 0 or more") { text in
            Double(text).flatMap { $0 >= 0 && $0.isFinite ? $0 : nil }
        }
        let burst = try settings.required(writeBurst, rule: "a whole number of at least 1") {
            Int($0).flatMap { $0 >= 1 ? $0 : nil }
        }
        let held = try settings.required(maximumHeldRequests, rule: "a whole number of at least 1") {
            Int($0).flatMap { $0 >= 1 ? $0 : nil }
        }
        let connections = try settings.required(maximumConnections, rule: "a whole number of at least 1") {
            Int($0).flatMap { $0 >= 1 ? $0 : nil }
        }
        var configuration = AgentConfiguration(
            httpHost: address.host,
            httpPort: address.port,
            storage: try storage(from: settings, listening: address),
            sqlite: SQLiteCatalogStore.Configuration(synchronous: synchronous),
            health: HealthConfiguration(
                selfPreservation: .init(enabled: share > 0, share: share, minimumInstances: minimum)),
            watch: WatchConfiguration(defaultWait: min(defaultWait, maximumWait), maximumWait: maximumWait),
            dns: try dns(from: settings),
            consulListener: consul.map { ListenAddress(host: $0.host, port: $0.port) },
            tls: try tls.settings(from: settings),
            acl: ACLConfiguration(defaultPolicy: policy, dnsToken: settings.text(aclDNSToken)),
            limits: RequestLimitsConfiguration(
                writesPerSecond: rate, writeBurst: burst, maximumHeldRequests: held, maximumConnections: connections)
        )
        if let tls = configuration.tls, case .etcd = configuration.storage {
            do {
                configuration.clusterTLS = try AgentTLSConfiguration(
                    caFile: settings.text(clusterCAFile), clientCertificateFile: tls.certificateFile,
                    clientKeyFile: tls.keyFile)
            } catch {
                throw ValidationError("\(error)")
            }
        }
        return configuration
    }

    private static func storage(
        from settings: SettingsReader, listening listen: HostAndPort
    ) throws -> AgentConfiguration.Storage {
        let kind = try settings.required(store, rule: "sqlite or etcd") { ["sqlite", "etcd"].contains($0) ? $0 : nil }
        if try settings.isOn(dev) {
            guard kind == "sqlite" else {
                throw ValidationError("\(dev.flag) keeps the catalog in memory; it cannot go with \(store.flag) etcd")
            }
            return .memory
        }
        guard kind == "etcd" else { return .sqlite(directory: settings.text(dataDirectory) ?? defaultDataDirectory) }
        let endpoints = try settings.required(
            etcdEndpoints, rule: "comma-separated http:// URLs with a host and port, such as http://127.0.0.1:2379"
        ) { text -> [String]? in
            let urls = settings.list(etcdEndpoints)
            guard !urls.isEmpty,
                urls.allSatisfy({ url in
                    guard let parsed = URLComponents(string: url) else { return false }
                    return parsed.scheme == "http" && parsed.host?.isEmpty == false && parsed.port != nil
                        && (parsed.path.isEmpty || parsed.path == "/") && parsed.query == nil
                })
            else { return nil }
            return urls
        }
        let prefix = try settings.required(
            etcdPrefix, rule: "a key prefix that starts with '/', such as /switchboard/"
        ) { text in
            text.hasPrefix("/") && !text.contains(where: { $0.isWhitespace }) ? text : nil
        }
        let id = try settings.value(agentID, rule: "1 to 64 letters, digits, '.', '_' or '-'") { text in
            (1...64).contains(text.count)
                && text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }) ? text : nil
        }
        let advertised = try settings.value(
            advertiseAddress, rule: "host:port with a specific host and a port of 1..65535, such as 10.0.0.5:7500"
        ) { text -> String? in
            guard let parsed = HostAndPort(text), parsed.port > 0, !["0.0.0.0", "::", "[::]"].contains(parsed.host)
            else { return nil }
            return text
        }
        if advertised == nil, ["0.0.0.0", "::", "[::]"].contains(listen.host) {
            throw ValidationError(
                "\(advertiseAddress.flag) is required with \(store.flag) etcd when \(httpAddress.flag) listens on every "
                    + "interface: other agents must know where to relay heartbeats to this one")
        }
        return .etcd(
            .init(
                endpoints: endpoints, prefix: prefix,
                agentID: id ?? AgentConfiguration.EtcdStorage.generatedAgentID(), advertiseAddress: advertised))
    }

    private static func positiveDuration(_ text: String) -> Duration? {
        guard let parsed = try? HumanDuration(parsing: text, field: ""), parsed.milliseconds > 0 else { return nil }
        return parsed.duration
    }

    private static func dns(from settings: SettingsReader) throws -> DNSConfiguration? {
        if try settings.isOn(dnsDisable) { return nil }
        let address = try settings.required(dnsAddress, rule: "host:port with a port of 0..65535", HostAndPort.init)
        let domain = try settings.required(
            dnsDomain,
            rule: "a domain name of letters, digits, '-' and '_' labels, such as switchboard. or consul."
        ) { text -> DNSName? in
            guard let name = try? DNSName(text), !name.labels.isEmpty,
                name.labels.allSatisfy({ label in
                    label.allSatisfy {
                        $0 == 0x2D || $0 == 0x5F || $0 >= 0x30 && $0 <= 0x39 || $0 >= 0x61 && $0 <= 0x7A
                    }
                })
            else { return nil }
            return name
        }
        let ttl = try settings.required(dnsTTL, rule: "a duration such as 0s or 30s") { text -> UInt32? in
            guard let parsed = try? HumanDuration(parsing: text, field: ""),
                parsed.milliseconds < Int64(UInt32.max) * 1000
            else { return nil }
            return UInt32(parsed.milliseconds / 1000)
        }
        let limit = try settings.required(dnsAnswerLimit, rule: "a whole number from 0 to 65535") {
            Int($0).flatMap { (0...65535).contains($0) ? $0 : nil }
        }
        return DNSConfiguration(
            host: address.host, port: address.port, domain: domain, ttl: ttl, answerLimit: limit == 0 ? nil : limit)
    }
}

/// `switchboard agent`: runs the registry until SIGINT or SIGTERM.
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the Switchboard agent (the registry).",
        discussion: """
            Every setting can also come from its environment variable (named in its help) or from a YAML file given \
            with --config-file, keyed by flag name. A flag wins over its variable, which wins over the file.
            """
    )

    @Option(name: AgentSettings.httpAddress.argumentName, help: AgentSettings.httpAddress.help)
    var httpAddress: String?

    @Option(name: AgentSettings.store.argumentName, help: AgentSettings.store.help)
    var store: String?

    @Option(name: AgentSettings.etcdEndpoints.argumentName, help: AgentSettings.etcdEndpoints.help)
    var etcdEndpoints: String?

    @Option(name: AgentSettings.etcdPrefix.argumentName, help: AgentSettings.etcdPrefix.help)
    var etcdPrefix: String?

    @Option(name: AgentSettings.agentID.argumentName, help: AgentSettings.agentID.help)
    var agentID: String?

    @Option(name: AgentSettings.advertiseAddress.argumentName, help: AgentSettings.advertiseAddress.help)
    var advertiseAddress: String?

    @Option(name: AgentSettings.dataDirectory.argumentName, help: AgentSettings.dataDirectory.help)
    var dataDirectory: String?

    @Flag(name: AgentSettings.dev.argumentName, help: AgentSettings.dev.help)
    var dev = false

    @OptionGroup var logging: LoggingOptions

    @OptionGroup var tracing: TracingOptions

    @Option(name: AgentSettings.sqliteSync.argumentName, help: AgentSettings.sqliteSync.help)
    var sqliteSync: String?

    @Option(
        name: AgentSettings.selfPreservationShare.argumentName, help: AgentSettings.selfPreservationShare.help)
    var selfPreservationShare: String?

    @Option(
        name: AgentSettings.selfPreservationMinimumInstances.argumentName,
        help: AgentSettings.selfPreservationMinimumInstances.help)
    var selfPreservationMinimumInstances: String?

    @Option(name: AgentSettings.maximumQueryTime.argumentName, help: AgentSettings.maximumQueryTime.help)
    var maximumQueryTime: String?

    @Option(name: AgentSettings.defaultQueryTime.argumentName, help: AgentSettings.defaultQueryTime.help)
    var defaultQueryTime: String?

    @Option(name: AgentSettings.dnsAddress.argumentName, help: AgentSettings.dnsAddress.help)
    var dnsAddress: String?

    @Option(name: AgentSettings.dnsDomain.argumentName, help: AgentSettings.dnsDomain.help)
    var dnsDomain: String?

    @Option(name: AgentSettings.dnsTTL.argumentName, help: AgentSettings.dnsTTL.help)
    var dnsTTL: String?

    @Option(name: AgentSettings.dnsAnswerLimit.argumentName, help: AgentSettings.dnsAnswerLimit.help)
    var dnsAnswerLimit: String?

    @Flag(name: AgentSettings.dnsDisable.argumentName, help: AgentSettings.dnsDisable.help)
    var dnsDisable = false

    @Option(name: AgentSettings.consulAddress.argumentName, help: AgentSettings.consulAddress.help)
    var consulAddress: String?

    @Option(name: AgentSettings.tls.certificate.argumentName, help: AgentSettings.tls.certificate.help)
    var tlsCertificate: String?

    @Option(name: AgentSettings.tls.key.argumentName, help: AgentSettings.tls.key.help)
    var tlsKey: String?

    @Option(name: AgentSettings.tls.clientCA.argumentName, help: AgentSettings.tls.clientCA.help)
    var tlsClientCA: String?

    @Option(name: AgentSettings.aclDefaultPolicy.argumentName, help: AgentSettings.aclDefaultPolicy.help)
    var aclDefaultPolicy: String?

    @Option(name: AgentSettings.aclDNSToken.argumentName, help: AgentSettings.aclDNSToken.help)
    var aclDNSToken: String?

    @Option(name: AgentSettings.writeRateLimit.argumentName, help: AgentSettings.writeRateLimit.help)
    var writeRateLimit: String?

    @Option(name: AgentSettings.writeBurst.argumentName, help: AgentSettings.writeBurst.help)
    var writeBurst: String?

    @Option(name: AgentSettings.maximumHeldRequests.argumentName, help: AgentSettings.maximumHeldRequests.help)
    var maximumHeldRequests: String?

    @Option(name: AgentSettings.maximumConnections.argumentName, help: AgentSettings.maximumConnections.help)
    var maximumConnections: String?

    @Option(name: AgentSettings.clusterCAFile.argumentName, help: AgentSettings.clusterCAFile.help)
    var caFile: String?

    /// The settings given on the command line.
    var commandLine: [Setting: String] {
        var given = logging.commandLine.merging(tracing.commandLine) { $1 }
        let options: [(Setting, String?)] = [
            (AgentSettings.httpAddress, httpAddress), (AgentSettings.store, store),
            (AgentSettings.etcdEndpoints, etcdEndpoints), (AgentSettings.etcdPrefix, etcdPrefix),
            (AgentSettings.agentID, agentID), (AgentSettings.advertiseAddress, advertiseAddress),
            (AgentSettings.dataDirectory, dataDirectory),
            (AgentSettings.dev, dev ? "true" : nil), (AgentSettings.sqliteSync, sqliteSync),
            (AgentSettings.selfPreservationShare, selfPreservationShare),
            (AgentSettings.selfPreservationMinimumInstances, selfPreservationMinimumInstances),
            (AgentSettings.maximumQueryTime, maximumQueryTime), (AgentSettings.defaultQueryTime, defaultQueryTime),
            (AgentSettings.dnsAddress, dnsAddress), (AgentSettings.dnsDomain, dnsDomain),
            (AgentSettings.dnsTTL, dnsTTL), (AgentSettings.dnsAnswerLimit, dnsAnswerLimit),
            (AgentSettings.dnsDisable, dnsDisable ? "true" : nil), (AgentSettings.consulAddress, consulAddress),
            (AgentSettings.tls.certificate, tlsCertificate), (AgentSettings.tls.key, tlsKey),
            (AgentSettings.tls.clientCA, tlsClientCA), (AgentSettings.aclDefaultPolicy, aclDefaultPolicy),
            (AgentSettings.aclDNSToken, aclDNSToken), (AgentSettings.writeRateLimit, writeRateLimit),
            (AgentSettings.writeBurst, writeBurst), (AgentSettings.maximumHeldRequests, maximumHeldRequests),
            (AgentSettings.maximumConnections, maximumConnections), (AgentSettings.clusterCAFile, caFile),
        ]
        for case (let setting, let value?) in options { given[setting] = value }
        return given
    }

    func run() async throws {
        let (configuration, otlpEndpoint, level, format) = try await Self.settled {
            let settings = try await SettingsReader(AgentSettings.all, commandLine: commandLine)
            let (level, format) = try LoggingOptions.resolved(settings)
            return (
                try AgentSettings.configuration(from: settings), try TracingSettings.endpoint(from: settings), level,
                format
            )
        }
        ParentWatch.startIfAsked()
        LoggingOptions.bootstrap(level: level, format: format)
        let logger = Logger(label: "switchboard.agent")
        let spans = try SpanExport.bootstrap(endpoint: otlpEndpoint, serviceName: "switchboard-agent", logger: logger)
        try await runUntilSignalled(
            [spans].compactMap { $0 } + [Agent(configuration: configuration, logger: logger)], logger: logger,
            command: "agent")
    }
}

import ArgumentParser
import Foundation
import Logging
import ProcessSupport
import ServiceLifecycle
import SwitchboardAgent
import SwitchboardCore
import SwitchboardDNS
import UnixSignals

/// `switchboard agent`: runs the registry until SIGINT or SIGTERM.
struct AgentCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "agent",
        abstract: "Run the Switchboard agent (the registry).",
        discussion: """
            Every option can also be set with an environment variable: SWITCHBOARD_HTTP_ADDR, SWITCHBOARD_DATA_DIR, \
            SWITCHBOARD_DEV, SWITCHBOARD_LOG_LEVEL, SWITCHBOARD_LOG_FORMAT, SWITCHBOARD_SQLITE_SYNC, \
            SWITCHBOARD_SELF_PRESERVATION_SHARE, SWITCHBOARD_SELF_PRESERVATION_MIN_INSTANCES, \
            SWITCHBOARD_MAX_QUERY_TIME, SWITCHBOARD_DEFAULT_QUERY_TIME, SWITCHBOARD_DNS_ADDR, SWITCHBOARD_DNS_DOMAIN, \
            SWITCHBOARD_DNS_TTL, SWITCHBOARD_DNS_ANSWER_LIMIT, SWITCHBOARD_DNS_DISABLE. A flag wins over its variable.
            """
    )

    @Option(
        name: .customLong("http-addr"),
        help: "Address of the HTTP API, host:port; port 0 picks a free one. (default: 127.0.0.1:7500)")
    var httpAddress: String?

    @Option(name: .customLong("data-dir"), help: "Directory of the durable catalog. (default: ./.switchboard)")
    var dataDirectory: String?

    @Flag(help: "Development mode: keep the catalog in memory only; nothing survives a restart.")
    var dev = false

    @OptionGroup var logging: LoggingOptions

    @Option(
        name: .customLong("sqlite-sync"),
        help:
            "full: a write survives a power loss (fsync per commit); normal: it survives a crash of the agent. (default: full)"
    )
    var sqliteSync: String?

    @Option(
        name: .customLong("self-preservation-share"),
        help: """
            Pause TTL expiry when more than this share (0 to 1) of TTL instances miss their heartbeat within 10 s; \
            0 turns self-preservation off. (default: 0.5)
            """
    )
    var selfPreservationShare: String?

    @Option(
        name: .customLong("self-preservation-min-instances"),
        help: "Self-preservation needs at least this many TTL instances to engage. (default: 10)")
    var selfPreservationMinimumInstances: String?

    @Option(
        name: .customLong("max-query-time"),
        help: "The longest a blocking query is held; a longer wait is cut to it. (default: 10m)")
    var maximumQueryTime: String?

    @Option(
        name: .customLong("default-query-time"),
        help: "How long a blocking query without wait is held. (default: 5m, or the maximum if lower)")
    var defaultQueryTime: String?

    @Option(
        name: .customLong("dns-addr"),
        help: "Address DNS answers on (UDP and TCP), host:port; port 0 picks a free one. (default: 127.0.0.1:7553)")
    var dnsAddress: String?

    @Option(name: .customLong("dns-domain"), help: "The zone DNS answers for. (default: switchboard.)")
    var dnsDomain: String?

    @Option(
        name: .customLong("dns-ttl"),
        help: "TTL of DNS answers, such as 0s or 5s; 0 keeps resolvers from caching a dead instance. (default: 0s)")
    var dnsTTL: String?

    @Option(
        name: .customLong("dns-answer-limit"),
        help:
            "The most address or SRV records in one DNS answer, picked at random each time; 0: as many as fit. (default: 0)"
    )
    var dnsAnswerLimit: String?

    @Flag(name: .customLong("dns-disable"), help: "Do not serve DNS.")
    var dnsDisable = false

    func validate() throws {
        _ = try resolvedDNS()
        _ = try resolvedAddress()
        _ = try logging.resolved()
        _ = try resolvedSynchronous()
        _ = try resolvedSelfPreservation()
        _ = try resolvedWatch()
    }

    func run() async throws {
        ParentWatch.startIfAsked()
        try logging.bootstrap()
        let logger = Logger(label: "switchboard.agent")
        let address = try resolvedAddress()
        let dev = dev || Environment.flag("SWITCHBOARD_DEV")
        let configuration = AgentConfiguration(
            httpHost: address.host,
            httpPort: address.port,
            storage: dev
                ? .memory
                : .sqlite(directory: dataDirectory ?? Environment.value("SWITCHBOARD_DATA_DIR") ?? ".switchboard"),
            sqlite: SQLiteCatalogStore.Configuration(synchronous: try resolvedSynchronous()),
            health: HealthConfiguration(selfPreservation: try resolvedSelfPreservation()),
            watch: try resolvedWatch(),
            dns: try resolvedDNS()
        )
        try await runUntilSignalled(
            [Agent(configuration: configuration, logger: logger)], logger: logger, command: "agent")
    }

    private func resolvedAddress() throws -> HostAndPort {
        let text = httpAddress ?? Environment.value("SWITCHBOARD_HTTP_ADDR") ?? "127.0.0.1:7500"
        guard let address = HostAndPort(text) else {
            throw ValidationError("--http-addr must be host:port with a port of 0..65535, got '\(text)'")
        }
        return address
    }

    private func resolvedDNS() throws -> DNSConfiguration? {
        if dnsDisable || Environment.flag("SWITCHBOARD_DNS_DISABLE") { return nil }
        let addressText = dnsAddress ?? Environment.value("SWITCHBOARD_DNS_ADDR") ?? "127.0.0.1:7553"
        guard let address = HostAndPort(addressText) else {
            throw ValidationError("--dns-addr must be host:port with a port of 0..65535, got '\(addressText)'")
        }
        let domainText = dnsDomain ?? Environment.value("SWITCHBOARD_DNS_DOMAIN") ?? "switchboard."
        guard let domain = try? DNSName(domainText), !domain.labels.isEmpty,
            domain.labels.allSatisfy({ label in
                label.allSatisfy { $0 == 0x2D || $0 == 0x5F || $0 >= 0x30 && $0 <= 0x39 || $0 >= 0x61 && $0 <= 0x7A }
            })
        else {
            throw ValidationError(
                "--dns-domain must be a domain name of letters, digits, '-' and '_' labels, such as switchboard. or consul., got '\(domainText)'"
            )
        }
        let ttlText = dnsTTL ?? Environment.value("SWITCHBOARD_DNS_TTL") ?? "0s"
        guard let ttl = try? HumanDuration(parsing: ttlText, field: "dns-ttl"),
            ttl.milliseconds < Int64(UInt32.max) * 1000
        else {
            throw ValidationError("--dns-ttl must be a duration such as 0s or 30s, got '\(ttlText)'")
        }
        let limitText = dnsAnswerLimit ?? Environment.value("SWITCHBOARD_DNS_ANSWER_LIMIT") ?? "0"
        guard let limit = Int(limitText), limit >= 0, limit <= 65535 else {
            throw ValidationError("--dns-answer-limit must be a whole number from 0 to 65535, got '\(limitText)'")
        }
        return DNSConfiguration(
            host: address.host, port: address.port, domain: domain, ttl: UInt32(ttl.milliseconds / 1000),
            answerLimit: limit == 0 ? nil : limit)
    }

    private func resolvedSynchronous() throws -> SQLiteCatalogStore.Configuration.Synchronous {
        let text = sqliteSync ?? Environment.value("SWITCHBOARD_SQLITE_SYNC") ?? "full"
        guard let value = SQLiteCatalogStore.Configuration.Synchronous(rawValue: text.uppercased()) else {
            throw ValidationError("--sqlite-sync must be full or normal, got '\(text)'")
        }
        return value
    }

    private func resolvedSelfPreservation() throws -> HealthConfiguration.SelfPreservation {
        let shareText =
            selfPreservationShare ?? Environment.value("SWITCHBOARD_SELF_PRESERVATION_SHARE") ?? "0.5"
        guard let share = Double(shareText), share >= 0, share <= 1 else {
            throw ValidationError("--self-preservation-share must be a number from 0 to 1, got '\(shareText)'")
        }
        let minimumText =
            selfPreservationMinimumInstances ?? Environment.value("SWITCHBOARD_SELF_PRESERVATION_MIN_INSTANCES")
            ?? "10"
        guard let minimum = Int(minimumText), minimum >= 1 else {
            throw ValidationError(
                "--self-preservation-min-instances must be a whole number of at least 1, got '\(minimumText)'")
        }
        return HealthConfiguration.SelfPreservation(enabled: share > 0, share: share, minimumInstances: minimum)
    }

    private func resolvedWatch() throws -> WatchConfiguration {
        func duration(_ flag: String, _ value: String?, _ variable: String, _ fallback: String) throws -> Duration {
            let text = value ?? Environment.value(variable) ?? fallback
            guard let parsed = try? HumanDuration(parsing: text, field: flag), parsed.milliseconds > 0 else {
                throw ValidationError("--\(flag) must be a duration such as 30s or 10m, got '\(text)'")
            }
            return parsed.duration
        }
        let maximum = try duration("max-query-time", maximumQueryTime, "SWITCHBOARD_MAX_QUERY_TIME", "10m")
        let standard = try duration("default-query-time", defaultQueryTime, "SWITCHBOARD_DEFAULT_QUERY_TIME", "5m")
        return WatchConfiguration(defaultWait: min(standard, maximum), maximumWait: maximum)
    }
}

import ArgumentParser
import Foundation
import Logging
import ProcessSupport
import ServiceLifecycle
import SwitchboardClient
import SwitchboardCore
import SwitchboardGateway
import SwitchboardSidecar
import UnixSignals

/// The sidecar's settings; the defaults are the library's (`SidecarConfiguration`).
enum SidecarSettings {
    static let service = Setting(
        "service", environment: "SWITCHBOARD_SIDECAR_SERVICE", valueName: "name", "The service to register (required).")
    static let port = Setting(
        "port", environment: "SWITCHBOARD_SIDECAR_PORT", valueName: "port",
        "The port the service listens on (required).")
    static let address = Setting(
        "address", environment: "SWITCHBOARD_SIDECAR_ADDRESS", default: "127.0.0.1", valueName: "host",
        "Where callers (and the sidecar's probe) reach the service.")
    static let id = Setting(
        "id", environment: "SWITCHBOARD_SIDECAR_ID", valueName: "id",
        "The instance id; none: <service>-<address>:<port>.")
    static let tags = Setting(
        "tag", environment: "SWITCHBOARD_SIDECAR_TAGS", valueName: "tag",
        "A tag of the instance; repeat for several (the variable takes them comma-separated).")
    static let meta = Setting(
        "meta", environment: "SWITCHBOARD_SIDECAR_META", valueName: "key=value",
        "A meta entry of the instance; repeat for several (the variable takes them comma-separated).")
    static let health = Setting(
        "health", environment: "SWITCHBOARD_SIDECAR_HEALTH", default: "tcp", valueName: "path|tcp",
        "How the sidecar checks the service: an HTTP path (such as /health: 2xx passing, 429 warning, else critical) or "
            + "tcp (a connect).")
    static let interval = Setting(
        "interval", environment: "SWITCHBOARD_SIDECAR_INTERVAL", default: "1s", valueName: "duration",
        "Time between probes; the instance's TTL is three of them.")
    static let timeout = Setting(
        "timeout", environment: "SWITCHBOARD_SIDECAR_TIMEOUT", valueName: "duration",
        "How long one probe may take; none: 1s, or the interval when shorter.")
    static let successes = Setting(
        "successes-before-passing", environment: "SWITCHBOARD_SIDECAR_SUCCESSES_BEFORE_PASSING", default: "1",
        valueName: "count", "Passing probes in a row before the service is reported passing again.")
    static let failures = Setting(
        "failures-before-critical", environment: "SWITCHBOARD_SIDECAR_FAILURES_BEFORE_CRITICAL", default: "1",
        valueName: "count", "Failing probes in a row before the service is reported critical.")
    static let drainTime = Setting(
        "drain-time", environment: "SWITCHBOARD_SIDECAR_DRAIN_TIME", default: "2s", valueName: "duration",
        "On SIGTERM: how long the instance stays in maintenance, for calls under way, before it deregisters and the "
            + "command is stopped.")
    static let stopTimeout = Setting(
        "stop-timeout", environment: "SWITCHBOARD_SIDECAR_STOP_TIMEOUT", default: "10s", valueName: "duration",
        "How long the command may take to exit after SIGTERM before it gets SIGKILL.")

    static let upstreams = Setting(
        "upstream", environment: "SWITCHBOARD_SIDECAR_UPSTREAMS", valueName: "service=host:port[,tcp]",
        "A local listener for calls to a service: the application calls host:port and the sidecar sends each request "
            + "(or, with ',tcp', each connection) to a healthy instance; repeat for several (the variable takes them "
            + "separated by ';').")

    static let threads = Setting(
        "threads", environment: "SWITCHBOARD_SIDECAR_THREADS", valueName: "count",
        "Event-loop threads for the upstream listeners and the probes; none: one per core the process may run on.")

    static let all: [Setting] =
        [
            service, port, address, id, tags, meta, health, interval, timeout, successes, failures, drainTime,
            stopTimeout, upstreams, threads, ClientSettings.agents,
        ] + ClientSettings.agentAccess + [
            TracingSettings.otlpEndpoint, CommonSettings.logLevel, CommonSettings.logFormat, Setting.configFile,
        ]

    /// The sidecar's configuration from `settings` and the command after `--`; every bad value is refused naming its
    /// flag and the rule.
    static func configuration(from settings: SettingsReader, command: [String]) throws -> SidecarConfiguration {
        let name = try settings.value(service, rule: "a service name (a DNS label such as 'payment')") {
            try? ServiceName($0)
        }
        guard let name else { throw ValidationError("--service is required: the service to register") }
        let number = try settings.value(port, rule: "a port of 1..65535") {
            Int($0).flatMap { (1...65535).contains($0) ? $0 : nil }
        }
        guard let number else { throw ValidationError("--port is required: the port the service listens on") }
        let host = try settings.required(address, rule: "a host name or IP address") {
            (try? HostAddress($0)).map(\.description)
        }
        let instance = try settings.text(id).map { text in
            guard let parsed = try? InstanceID(text) else {
                throw ValidationError(
                    "--id must be 1..128 of ASCII letters, digits, '-', '_', '.' and ':', got '\(text)'")
            }
            return parsed
        }
        var entries: [String: String] = [:]
        for entry in settings.list(meta) {
            let parts = entry.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty else {
                throw ValidationError("--meta must be key=value, got '\(entry)'")
            }
            entries[String(parts[0])] = String(parts[1])
        }
        let probe = try settings.required(health, rule: "a path starting with '/' or 'tcp'") {
            text -> SidecarConfiguration.Health? in
            if text == "tcp" { return .tcp }
            return text.hasPrefix("/") ? .http(path: text) : nil
        }
        let every = try settings.required(
            interval, rule: "a duration such as 500ms or 1s", SettingValue.positiveDuration)
        let probeTimeout = try settings.value(timeout, rule: "a duration such as 500ms", SettingValue.positiveDuration)
        let count: (String) -> Int? = { Int($0).flatMap { (1...100).contains($0) ? $0 : nil } }
        return SidecarConfiguration(
            service: name, id: try instance ?? InstanceID("\(name.rawValue)-\(host):\(number)"), address: host,
            port: number, tags: settings.list(tags), meta: entries, health: probe, interval: every,
            timeout: probeTimeout, successesBeforePassing: try settings.required(successes, rule: "1..100", count),
            failuresBeforeCritical: try settings.required(failures, rule: "1..100", count),
            drainTime: try settings.required(drainTime, rule: "a duration such as 2s", SettingValue.duration),
            stopTimeout: try settings.required(
                stopTimeout, rule: "a duration such as 10s", SettingValue.positiveDuration),
            command: command,
            agents: AgentConnectionConfiguration(
                agents: settings.list(ClientSettings.agents), tls: try ClientSettings.agentTLS(from: settings),
                token: try ClientSettings.token(from: settings)))
    }

    /// The `--upstream` listeners: `service=host:port` (HTTP) or `service=host:port,tcp`.
    static func upstreamListeners(from settings: SettingsReader) throws -> [UpstreamProxyConfiguration] {
        let entries = (settings.text(upstreams) ?? "").split(separator: ";").map {
            $0.trimmingCharacters(in: .whitespaces)
        }.filter { !$0.isEmpty }
        return try entries.map { entry in
            let rule = "--upstream must be service=host:port, optionally followed by ',tcp' or ',http', got '\(entry)'"
            let parts = entry.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, let name = try? ServiceName(parts[0]) else { throw ValidationError(rule) }
            var address = parts[1]
            var mode = UpstreamProxyConfiguration.Mode.http
            if let comma = address.lastIndex(of: ",") {
                switch address[address.index(after: comma)...] {
                case "tcp": mode = .tcp
                case "http": mode = .http
                default: throw ValidationError(rule)
                }
                address = String(address[..<comma])
            }
            guard let listen = HostAndPort(address) else { throw ValidationError(rule) }
            return UpstreamProxyConfiguration(service: name, host: listen.host, port: listen.port, mode: mode)
        }
    }
}

/// `switchboard sidecar`: registration, health checks and supervision for a service in any language.
struct SidecarCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sidecar",
        abstract: "Register a service in any language and keep it registered while it is healthy; with -- COMMAND, "
            + "start and supervise it.",
        discussion: """
            The sidecar probes the service itself (--health), registers it with a TTL check and reports each probe's \
            outcome (passing, warning, critical) as a heartbeat. With a command after --, it starts it, passes \
            SIGHUP, SIGUSR1 and SIGUSR2 on, and on SIGTERM drains (maintenance for --drain-time), deregisters, then \
            stops the command; when the command exits, it deregisters at once. It exits with the command's status. \
            Every setting can also come from its environment variable or a YAML file (--config-file).
            """
    )

    @Option(name: SidecarSettings.service.argumentName, help: SidecarSettings.service.help) var service: String?
    @Option(name: SidecarSettings.port.argumentName, help: SidecarSettings.port.help) var port: String?
    @Option(name: SidecarSettings.address.argumentName, help: SidecarSettings.address.help) var address: String?
    @Option(name: SidecarSettings.id.argumentName, help: SidecarSettings.id.help) var id: String?
    @Option(name: SidecarSettings.tags.argumentName, help: SidecarSettings.tags.help) var tags: [String] = []
    @Option(name: SidecarSettings.meta.argumentName, help: SidecarSettings.meta.help) var meta: [String] = []
    @Option(name: SidecarSettings.health.argumentName, help: SidecarSettings.health.help) var health: String?
    @Option(name: SidecarSettings.interval.argumentName, help: SidecarSettings.interval.help) var interval: String?
    @Option(name: SidecarSettings.timeout.argumentName, help: SidecarSettings.timeout.help) var timeout: String?
    @Option(name: SidecarSettings.successes.argumentName, help: SidecarSettings.successes.help) var successes: String?
    @Option(name: SidecarSettings.failures.argumentName, help: SidecarSettings.failures.help) var failures: String?
    @Option(name: SidecarSettings.drainTime.argumentName, help: SidecarSettings.drainTime.help) var drainTime: String?
    @Option(name: SidecarSettings.stopTimeout.argumentName, help: SidecarSettings.stopTimeout.help)
    var stopTimeout: String?
    @Option(name: SidecarSettings.upstreams.argumentName, help: SidecarSettings.upstreams.help)
    var upstreams: [String] = []
    @Option(name: SidecarSettings.threads.argumentName, help: SidecarSettings.threads.help) var threads: String?
    @Option(name: ClientSettings.agents.argumentName, help: ClientSettings.agents.help) var agents: [String] = []
    @OptionGroup var access: AgentAccessOptions
    @OptionGroup var logging: LoggingOptions
    @OptionGroup var tracing: TracingOptions

    @Argument(parsing: .postTerminator, help: "The service's command and arguments, after --.")
    var command: [String] = []

    /// The settings given on the command line.
    var commandLine: [Setting: String] {
        var given = logging.commandLine
        given[SidecarSettings.service] = service
        given[SidecarSettings.port] = port
        given[SidecarSettings.address] = address
        given[SidecarSettings.id] = id
        given[SidecarSettings.tags] = tags.isEmpty ? nil : tags.joined(separator: ",")
        given[SidecarSettings.meta] = meta.isEmpty ? nil : meta.joined(separator: ",")
        given[SidecarSettings.health] = health
        given[SidecarSettings.interval] = interval
        given[SidecarSettings.timeout] = timeout
        given[SidecarSettings.successes] = successes
        given[SidecarSettings.failures] = failures
        given[SidecarSettings.drainTime] = drainTime
        given[SidecarSettings.stopTimeout] = stopTimeout
        given[SidecarSettings.upstreams] = upstreams.isEmpty ? nil : upstreams.joined(separator: ";")
        given[SidecarSettings.threads] = threads
        given.merge(tracing.commandLine) { $1 }
        given[ClientSettings.agents] = agents.isEmpty ? nil : agents.joined(separator: ",")
        given.merge(access.commandLine) { $1 }
        return given
    }

    func run() async throws {
        let command = self.command
        let (configuration, upstreams, threads, otlpEndpoint, level, format) = try await Self.settled {
            let settings = try await SettingsReader(SidecarSettings.all, commandLine: commandLine)
            let (level, format) = try LoggingOptions.resolved(settings)
            return (
                try SidecarSettings.configuration(from: settings, command: command),
                try SidecarSettings.upstreamListeners(from: settings),
                try settings.threadCount(SidecarSettings.threads),
                try TracingSettings.endpoint(from: settings), level, format
            )
        }
        ParentWatch.startIfAsked()
        CPUAffinity.sizeSharedEventLoops(threads)
        LoggingOptions.bootstrap(level: level, format: format)
        let logger = Logger(label: "switchboard.sidecar")
        // Spans of the calls through the upstream listeners, named for the service the sidecar stands beside.
        let spans = try SpanExport.bootstrap(
            endpoint: otlpEndpoint, serviceName: "\(configuration.service)-sidecar",
            instance: configuration.id.rawValue, logger: logger)
        let sidecar = Sidecar(configuration: configuration, logger: logger)
        // The span exporter first, so it stops last and flushes what the others ended on their way out.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = spans.map { [.init(service: $0)] } ?? []
        if !upstreams.isEmpty {
            // First in the group, so it stops last: the application still calls out while it drains.
            let agents = configuration.agents
            services.append(
                .init(
                    service: UpstreamProxy(
                        upstreams: upstreams, agents: agents.agents, agentTLS: agents.tls, agentToken: agents.token,
                        logger: logger)))
        }
        // The sidecar returns when the command exits: the group then ends, without calling that a failure.
        services.append(.init(service: sidecar, successTerminationBehavior: .gracefullyShutdownGroup))
        var group = ServiceGroupConfiguration(
            services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // The drain, then the command's own stop, must fit.
        group.maximumGracefulShutdownDuration = configuration.drainTime + configuration.stopTimeout + .seconds(5)
        do {
            try await ServiceGroup(configuration: group).run()
        } catch {
            StandardStream.error.write("switchboard sidecar: \(error)\n")
            throw ExitCode.failure
        }
        if let status = sidecar.exitStatus, status != 0 { throw ExitCode(status) }
    }
}

import ArgumentParser
import Foundation
import Logging
import NIOCore
import ProcessSupport
import ServiceLifecycle
import SwitchboardCore
import SwitchboardGateway
import UnixSignals

/// The gateway's settings. The defaults are the library's (`GatewayConfiguration()`), except the access log and the
/// admin address, which the library leaves off and the command turns on.
enum GatewaySettings {
    private static let defaults = GatewayConfiguration()

    static let listen = Setting(
        "listen", environment: "SWITCHBOARD_GATEWAY_LISTEN", default: "\(defaults.host):\(defaults.port)",
        valueName: "host:port", "Address callers send requests to.")
    static let agents = Setting(
        "agent", environment: "SWITCHBOARD_AGENT", default: defaults.agents.joined(separator: ","), valueName: "url",
        "An agent URL; repeat for several (the variable takes them comma-separated).")
    static let routeFile = Setting(
        "config", environment: "SWITCHBOARD_GATEWAY_CONFIG", valueName: "file",
        "Route file (YAML): routes, authentication and policies; without one, /<service>/... goes to services tagged public."
    )
    static let accessLog = Setting(
        "access-log", environment: "SWITCHBOARD_GATEWAY_ACCESS_LOG", default: "-", valueName: "destination",
        "Where the JSON access log goes: '-' for standard output, a file path, or 'off'.")
    static let admin = Setting(
        "admin", environment: "SWITCHBOARD_GATEWAY_ADMIN", default: "127.0.0.1:7081", valueName: "host:port",
        "Admin address for /metrics, /routes and /health, or 'off'.")
    static let register = Setting(
        "register", environment: "SWITCHBOARD_GATEWAY_REGISTER", valueName: "service",
        "Register this gateway as an instance of this service (such as 'gateway'), with an HTTP check on the admin "
            + "/health, so callers and the dashboard find it; unset: not registered.")
    static let advertise = Setting(
        "advertise-address", environment: "SWITCHBOARD_GATEWAY_ADVERTISE_ADDRESS", valueName: "host",
        "The host others reach this gateway at, for its registration; unset: the listen host (127.0.0.1 when it "
            + "listens on every interface).")
    static let webSocketIdleTimeout = Setting(
        "websocket-idle-timeout", environment: "SWITCHBOARD_GATEWAY_WEBSOCKET_IDLE_TIMEOUT",
        default: "\(Int(defaults.webSocketIdleTimeout.components.seconds))s", valueName: "duration",
        "An upgraded (WebSocket) connection through which nothing passes either way for this long is closed.")
    static let upstreamCAFile = Setting(
        "upstream-ca-file", environment: "SWITCHBOARD_GATEWAY_UPSTREAM_CA_FILE", valueName: "file",
        "CA certificates (PEM) verifying instances reached over TLS (tagged tls, or meta scheme: https); none: the "
            + "system's trust roots.")
    static let threads = Setting(
        "threads", environment: "SWITCHBOARD_GATEWAY_THREADS", valueName: "count",
        "Event-loop threads serving callers and instances; none: one per core the process may run on.")

    static let tls = ServerTLSSettings(environmentPrefix: "SWITCHBOARD_GATEWAY_", server: "the gateway's listener")

    static let all: [Setting] =
        [
            listen, agents, routeFile, accessLog, admin, register, advertise, webSocketIdleTimeout, upstreamCAFile,
            threads,
            tls.certificate, tls.key, tls.clientCA,
        ] + ClientSettings.agentAccess + [
            TracingSettings.otlpEndpoint, CommonSettings.logLevel,
            CommonSettings.logFormat, Setting.configFile,
        ]

    /// The gateway's configuration from `settings`; every bad value is refused naming its flag and the rule.
    static func configuration(from settings: SettingsReader) throws -> GatewayConfiguration {
        let address = try settings.required(listen, rule: "host:port with a port of 0..65535", HostAndPort.init)
        let agentURLs = settings.list(agents)
        for url in agentURLs
        where !((url.hasPrefix("http://") && url.count > 7) || (url.hasPrefix("https://") && url.count > 8)) {
            throw ValidationError(
                "--agent must be an http:// or https:// URL such as http://127.0.0.1:7500, got '\(url)'")
        }
        guard !agentURLs.isEmpty else { throw ValidationError("--agent must name at least one agent URL") }
        let destination = try settings.required(accessLog, rule: "'-', 'off' or a file path") {
            text -> GatewayConfiguration.AccessLogDestination? in
            switch text {
            case "-": .standardOutput
            case "off": .off
            case "": nil
            default: .file(text)
            }
        }
        let adminAddress = try settings.required(admin, rule: "host:port or 'off'") {
            text -> (host: String, port: Int)?? in
            if text == "off" { return .some(nil) }
            return HostAndPort(text).map { .some(($0.host, $0.port)) }
        }
        let registration = try settings.value(register, rule: "a service name (a DNS label such as 'gateway')") {
            try? ServiceName($0)
        }.map { GatewayRegistration(service: $0, advertisedHost: settings.text(advertise)) }
        let webSocketIdle = try settings.required(
            webSocketIdleTimeout, rule: "a duration such as 90s or 5m", SettingValue.positiveDuration)
        return GatewayConfiguration(
            host: address.host, port: address.port,
            agents: agentURLs.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 },
            routeFile: settings.text(routeFile), accessLog: destination, admin: adminAddress,
            tls: try tls.settings(from: settings), agentTLS: try ClientSettings.agentTLS(from: settings),
            agentToken: try ClientSettings.token(from: settings), registration: registration,
            webSocketIdleTimeout: webSocketIdle, upstreamCAFile: settings.text(upstreamCAFile))
    }
}

/// `switchboard gateway`: the HTTP entry point for callers that know nothing of the registry.
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Route requests to healthy instances (server-side discovery): by a route file, or /<service>/... to "
            + "services tagged public.",
        discussion: """
            Every setting can also come from its environment variable (named in its help) or from a YAML file given \
            with --config-file, keyed by flag name. A flag wins over its variable, which wins over the file. The \
            route file is read again every second; a changed, valid file replaces the routes without dropping a \
            connection.
            """
    )

    @Option(name: GatewaySettings.listen.argumentName, help: GatewaySettings.listen.help)
    var listen: String?

    @Option(name: GatewaySettings.agents.argumentName, help: GatewaySettings.agents.help)
    var agents: [String] = []

    @Option(name: GatewaySettings.routeFile.argumentName, help: GatewaySettings.routeFile.help)
    var config: String?

    @Option(name: GatewaySettings.accessLog.argumentName, help: GatewaySettings.accessLog.help)
    var accessLog: String?

    @Option(name: GatewaySettings.admin.argumentName, help: GatewaySettings.admin.help)
    var admin: String?

    @Option(name: GatewaySettings.register.argumentName, help: GatewaySettings.register.help)
    var register: String?

    @Option(name: GatewaySettings.advertise.argumentName, help: GatewaySettings.advertise.help)
    var advertiseAddress: String?

    @Option(
        name: GatewaySettings.webSocketIdleTimeout.argumentName, help: GatewaySettings.webSocketIdleTimeout.help)
    var webSocketIdleTimeout: String?

    @Option(name: GatewaySettings.upstreamCAFile.argumentName, help: GatewaySettings.upstreamCAFile.help)
    var upstreamCAFile: String?

    @Option(name: GatewaySettings.threads.argumentName, help: GatewaySettings.threads.help)
    var threads: String?

    @Option(name: GatewaySettings.tls.certificate.argumentName, help: GatewaySettings.tls.certificate.help)
    var tlsCertificate: String?

    @Option(name: GatewaySettings.tls.key.argumentName, help: GatewaySettings.tls.key.help)
    var tlsKey: String?

    @Option(name: GatewaySettings.tls.clientCA.argumentName, help: GatewaySettings.tls.clientCA.help)
    var tlsClientCA: String?

    @OptionGroup var access: AgentAccessOptions

    @OptionGroup var logging: LoggingOptions

    @OptionGroup var tracing: TracingOptions

    /// The settings given on the command line.
    var commandLine: [Setting: String] {
        var given = logging.commandLine
        given[GatewaySettings.listen] = listen
        given[GatewaySettings.agents] = agents.isEmpty ? nil : agents.joined(separator: ",")
        given[GatewaySettings.routeFile] = config
        given[GatewaySettings.accessLog] = accessLog
        given[GatewaySettings.admin] = admin
        given[GatewaySettings.register] = register
        given[GatewaySettings.advertise] = advertiseAddress
        given[GatewaySettings.threads] = threads
        given[GatewaySettings.webSocketIdleTimeout] = webSocketIdleTimeout
        given[GatewaySettings.upstreamCAFile] = upstreamCAFile
        given[GatewaySettings.tls.certificate] = tlsCertificate
        given[GatewaySettings.tls.key] = tlsKey
        given[GatewaySettings.tls.clientCA] = tlsClientCA
        given.merge(access.commandLine) { $1 }
        given.merge(tracing.commandLine) { $1 }
        return given
    }

    func run() async throws {
        let (configuration, threads, otlpEndpoint, level, format) = try await Self.settled {
            let settings = try await SettingsReader(GatewaySettings.all, commandLine: commandLine)
            let (level, format) = try LoggingOptions.resolved(settings)
            return (
                try GatewaySettings.configuration(from: settings), try settings.threadCount(GatewaySettings.threads),
                try TracingSettings.endpoint(from: settings), level, format
            )
        }
        ParentWatch.startIfAsked()
        CPUAffinity.sizeSharedEventLoops(threads)
        LoggingOptions.bootstrap(level: level, format: format)
        let logger = Logger(label: "switchboard.gateway")
        let spans = try SpanExport.bootstrap(endpoint: otlpEndpoint, serviceName: "switchboard-gateway", logger: logger)
        let gateway = GatewayServer(configuration: configuration, logger: logger)
        try await runUntilSignalled([spans].compactMap { $0 } + [gateway], logger: logger, command: "gateway")
    }
}

import ArgumentParser
import Foundation
import Logging
import NIOCore
import ProcessSupport
import ServiceLifecycle
import SwitchboardCore
import SwitchboardGateway
import UnixSignals

/// `switchboard gateway`: the HTTP entry point for callers that know nothing of the registry.
struct GatewayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gateway",
        abstract: "Route requests to healthy instances (server-side discovery): by a route file, or /<service>/... to "
            + "services tagged public.",
        discussion: """
            Options also read SWITCHBOARD_GATEWAY_LISTEN, SWITCHBOARD_GATEWAY_CONFIG, SWITCHBOARD_GATEWAY_ACCESS_LOG, \
            SWITCHBOARD_GATEWAY_ADMIN, \
            SWITCHBOARD_AGENT (comma-separated URLs), SWITCHBOARD_LOG_LEVEL and SWITCHBOARD_LOG_FORMAT. A flag wins over \
            its variable. The route file is read again every second; a changed, valid file replaces the routes \
            without dropping a connection.
            """
    )

    @Option(name: .customLong("listen"), help: "Address callers send requests to, host:port. (default: 127.0.0.1:7080)")
    var listen: String?

    @Option(name: .customLong("agent"), help: "An agent URL; repeat for several. (default: http://127.0.0.1:7500)")
    var agents: [String] = []

    @Option(
        name: .customLong("config"),
        help: "Route file (YAML): routes, authentication and policies. (default: /<service>/... to public services)")
    var config: String?

    @Option(
        name: .customLong("access-log"),
        help: "Where the JSON access log goes: '-' for standard output, a file path, or 'off'. (default: -)")
    var accessLog: String?

    @Option(
        name: .customLong("admin"),
        help: "Admin address for /metrics, /routes and /health, host:port, or 'off'. (default: 127.0.0.1:7081)")
    var admin: String?

    @Option(
        name: .customLong("threads"),
        help: "Event-loop threads serving callers and instances. (default: one per core the process may run on)")
    var threads: Int?

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if let threads, threads < 1 || threads > 256 {
            throw ValidationError("--threads must be from 1 to 256, got \(threads)")
        }
        _ = try resolvedConfiguration()
        _ = try logging.resolved()
    }

    func run() async throws {
        ParentWatch.startIfAsked()
        // Before anything creates the shared event loops: their number is fixed when they start.
        NIOSingletons.groupLoopCountSuggestion = threads ?? CPUAffinity.usableCores()
        try logging.bootstrap()
        let logger = Logger(label: "switchboard.gateway")
        let gateway = GatewayServer(configuration: try resolvedConfiguration(), logger: logger)
        try await runUntilSignalled([gateway], logger: logger, command: "gateway")
    }

    private func resolvedConfiguration() throws -> GatewayConfiguration {
        let text = listen ?? Environment.value("SWITCHBOARD_GATEWAY_LISTEN") ?? "127.0.0.1:7080"
        guard let address = HostAndPort(text) else {
            throw ValidationError("--listen must be host:port with a port of 0..65535, got '\(text)'")
        }
        var agentURLs = agents
        if agentURLs.isEmpty {
            agentURLs = (Environment.value("SWITCHBOARD_AGENT") ?? "http://127.0.0.1:7500").split(separator: ",").map {
                String($0).trimmingCharacters(in: .whitespaces)
            }
        }
        for url in agentURLs where !(url.hasPrefix("http://") && url.count > "http://".count) {
            throw ValidationError("--agent must be an http:// URL such as http://127.0.0.1:7500, got '\(url)'")
        }
        let accessLogText = accessLog ?? Environment.value("SWITCHBOARD_GATEWAY_ACCESS_LOG") ?? "-"
        let destination: GatewayConfiguration.AccessLogDestination =
            switch accessLogText {
            case "-": .standardOutput
            case "off": .off
            case "": throw ValidationError("--access-log must be '-', 'off' or a file path")
            default: .file(accessLogText)
            }
        let adminText = admin ?? Environment.value("SWITCHBOARD_GATEWAY_ADMIN") ?? "127.0.0.1:7081"
        var adminAddress: (host: String, port: Int)?
        if adminText != "off" {
            guard let parsed = HostAndPort(adminText) else {
                throw ValidationError("--admin must be host:port or 'off', got '\(adminText)'")
            }
            adminAddress = (parsed.host, parsed.port)
        }
        return GatewayConfiguration(
            host: address.host, port: address.port,
            agents: agentURLs.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 },
            routeFile: config ?? Environment.value("SWITCHBOARD_GATEWAY_CONFIG"), accessLog: destination,
            admin: adminAddress)
    }
}

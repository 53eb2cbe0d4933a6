import ArgumentParser
import Foundation
import NIOCore
import NIOHTTP1
import ProcessSupport
import SwitchboardClient
import SwitchboardCore

/// The settings of the client commands.
enum ClientSettings {
    static let agents = Setting(
        "agent", environment: "SWITCHBOARD_AGENT",
        default: AgentConnectionConfiguration().agents.joined(separator: ","), valueName: "url",
        "The agent's URL; repeat for several, tried in order (the variable takes them comma-separated).")

    static let caFile = Setting(
        "ca-file", valueName: "file", "A PEM file of the CA that signs the agents' certificates (https:// agents).")
    static let clientCertificate = Setting(
        "client-cert", valueName: "file", "A PEM client certificate for agents that require one, with --client-key.")
    static let clientKey = Setting("client-key", valueName: "file", "The PEM key of --client-cert.")

    static let token = Setting(
        "token", valueName: "secret", secret: true,
        "The ACL token to present to agents with ACLs on (prefer SWITCHBOARD_TOKEN or --token-file: a flag shows in the process list)."
    )
    static let tokenFile = Setting(
        "token-file", valueName: "file", "A file holding the ACL token to present (its first line).")

    /// How a command reaches agents that want TLS or a token: the CLI's client commands and the gateway share these.
    static let agentAccess: [Setting] = [caFile, clientCertificate, clientKey, token, tokenFile]

    static let all: [Setting] = [agents] + agentAccess + [Setting.configFile]

    /// The ACL token from `--token`, or else from `--token-file`; a file that cannot be read is refused naming it.
    static func token(from settings: SettingsReader) throws -> String? {
        if let token = settings.text(token), !token.isEmpty { return token }
        guard let file = settings.text(tokenFile) else { return nil }
        guard let contents = try? String(contentsOfFile: file, encoding: .utf8) else {
            throw ValidationError("--token-file: cannot read \(file)")
        }
        let token = contents.split(whereSeparator: \.isNewline).first.map {
            $0.trimmingCharacters(in: .whitespaces)
        }
        guard let token, !token.isEmpty else { throw ValidationError("--token-file: \(file) holds no token") }
        return token
    }

    /// How to trust `https://` agents, when a CA file or client certificate is given; a file that does not load is
    /// refused naming it.
    static func agentTLS(from settings: SettingsReader) throws -> AgentTLSConfiguration? {
        let files = [caFile, clientCertificate, clientKey].map { settings.text($0) }
        guard files.contains(where: { $0 != nil }) else { return nil }
        do {
            return try AgentTLSConfiguration(caFile: files[0], clientCertificateFile: files[1], clientKeyFile: files[2])
        } catch {
            throw ValidationError("\(error)")
        }
    }
}

/// The flags of ``ClientSettings/agentAccess``: a CA file, a client certificate, an ACL token.
struct AgentAccessOptions: ParsableArguments {
    @Option(name: ClientSettings.caFile.argumentName, help: ClientSettings.caFile.help)
    var caFile: String?

    @Option(name: ClientSettings.clientCertificate.argumentName, help: ClientSettings.clientCertificate.help)
    var clientCertificate: String?

    @Option(name: ClientSettings.clientKey.argumentName, help: ClientSettings.clientKey.help)
    var clientKey: String?

    @Option(name: ClientSettings.token.argumentName, help: ClientSettings.token.help)
    var token: String?

    @Option(name: ClientSettings.tokenFile.argumentName, help: ClientSettings.tokenFile.help)
    var tokenFile: String?

    /// The settings given on the command line.
    var commandLine: [Setting: String] {
        var given: [Setting: String] = [:]
        given[ClientSettings.caFile] = caFile
        given[ClientSettings.clientCertificate] = clientCertificate
        given[ClientSettings.clientKey] = clientKey
        given[ClientSettings.token] = token
        given[ClientSettings.tokenFile] = tokenFile
        return given
    }
}

/// Options every client command shares.
struct ClientOptions: ParsableArguments {
    @Option(name: ClientSettings.agents.argumentName, help: ClientSettings.agents.help)
    var agents: [String] = []

    @Option(name: Setting.configFile.argumentName, help: Setting.configFile.help)
    var configFile: String?

    @OptionGroup var access: AgentAccessOptions

    @Flag(help: "Print JSON instead of a table, for scripts.")
    var json = false

    /// Runs a client call against the agent, turning any failure into one line on standard error and exit status 1.
    ///
    /// The CLI commands are thin clients of the API (as Consul's are): everything they print comes from the agent's
    /// answers, through the client library's typed client.
    func perform(as command: any ParsableCommand.Type, _ body: (AgentClient) async throws -> Void) async throws {
        var given: [Setting: String] = [:]
        given[ClientSettings.agents] = agents.isEmpty ? nil : agents.joined(separator: ",")
        given[Setting.configFile] = configFile
        given.merge(access.commandLine) { $1 }
        let (urls, tls, token) = try await command.settled {
            let settings = try await SettingsReader(ClientSettings.all, commandLine: given)
            let urls = settings.list(ClientSettings.agents).map { url in
                var url = url
                while url.hasSuffix("/") { url.removeLast() }
                return url
            }
            guard !urls.isEmpty else { throw ValidationError("--agent must name at least one agent URL") }
            return (urls, try ClientSettings.agentTLS(from: settings), try ClientSettings.token(from: settings))
        }
        // A command makes one request: a dead agent should cost seconds, not a long-lived client's patience.
        let connection = AgentConnection(
            configuration: AgentConnectionConfiguration(
                agents: urls, connectTimeout: .seconds(3), requestTimeout: .seconds(10), tls: tls, token: token))
        var failure: String?
        do {
            try await body(AgentClient(connection: connection))
        } catch let error as SwitchboardClientError {
            failure = describe(error, agents: urls.joined(separator: ", "))
        } catch let error as SwitchboardCore.ValidationError {
            failure = error.field.isEmpty ? error.message : "\(error.message) (field: \(error.field))"
        }
        try? await connection.shutdown()
        if let failure {
            StandardStream.error.write("switchboard: \(failure)\n")
            throw ExitCode.failure
        }
    }

    /// A failed call in one line: the agent's refusal in its own words, or why it could not be reached.
    func describe(_ error: SwitchboardClientError, agents: String) -> String {
        if let apiError = error.apiError, let status = error.status {
            let field = apiError.field.map { " (field: \($0))" } ?? ""
            return "the agent refused: \(apiError.message)\(field) [\(status.code) \(apiError.error)]"
        }
        if let status = error.status {
            return "the agent answered \(status.code) \(status.reasonPhrase)"
        }
        switch error.code {
        case .agentUnreachable:
            let reason = error.transport?.description ?? error.message
            if case .certificateRejected = error.transport {
                return "cannot reach the agent at \(agents): \(reason)"
            }
            return "cannot reach the agent at \(agents): \(reason); is `switchboard agent` running?"
        case .invalidAnswer:
            return "the agent's answer could not be read: \(error.message)"
        default:
            return error.message
        }
    }

    /// Prints an answer's body as the agent sent it, with a final line break.
    func printJSON(_ body: ByteBuffer) {
        let bytes = Array(body.readableBytesView)
        StandardStream.output.write(Data(bytes.last == 0x0A ? bytes : bytes + [0x0A]))
    }
}

/// The lookup filters `instances` and `watch` share.
struct InstanceFilterOptions: ParsableArguments {
    @Option(help: "healthy, any, passing, warning, critical or maintenance.")
    var status = "any"

    @Option(help: "Only instances with this tag (repeatable).")
    var tag: [String] = []

    @Option(help: "Only instances with this meta value, key:value (repeatable).")
    var meta: [String] = []

    /// The filters as the API's query, checked by the same rules the agent applies.
    func query() throws(SwitchboardCore.ValidationError) -> InstanceQuery {
        InstanceQuery(
            status: try InstanceQuery.StatusFilter(parsing: status),
            tags: tag,
            meta: try meta.map { text throws(SwitchboardCore.ValidationError) in
                try InstanceQuery.MetaCondition(parsing: text)
            })
    }
}

/// `text` as a service name, checked as the agent checks it.
func serviceName(_ text: String) throws(SwitchboardCore.ValidationError) -> ServiceName {
    try ServiceName(text, field: "service")
}

/// `text` as an instance id, checked as the agent checks it.
func instanceID(_ text: String) throws(SwitchboardCore.ValidationError) -> InstanceID {
    try InstanceID(text, field: "id")
}

struct ServicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "services", abstract: "List services with instance counts.")

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await options.perform(as: Self.self) { agent in
            let request = AgentRequest.services()
            if options.json { return options.printJSON(try await agent.call(request.ignoringAnswer()).body) }
            let answer = try await agent.call(request)
            let rows = answer.value.services.map { service in
                [
                    service.name.rawValue, "\(service.counts.passing)", "\(service.counts.warning)",
                    "\(service.counts.critical)", "\(service.counts.maintenance)", service.tags.joined(separator: ","),
                ]
            }
            print(Table(header: ["SERVICE", "PASSING", "WARNING", "CRITICAL", "MAINTENANCE", "TAGS"], rows: rows))
        }
    }
}

struct MembersCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "members", abstract: "List the live agents of the cluster (cluster mode, --store etcd).")

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await options.perform(as: Self.self) { agent in
            let request = AgentRequest.agentInfo()
            let answer = try await agent.call(request)
            guard let cluster = answer.value.cluster else {
                throw SwitchboardCore.ValidationError(
                    field: "",
                    message: "the agent at \(agent.connection.currentAgent) is not in cluster mode (its store is "
                        + "\(answer.value.store)); start agents with --store etcd")
            }
            if options.json {
                let members = (try? SwitchboardJSON.encoder(pretty: true).encode(cluster.members)) ?? Data("[]".utf8)
                return options.printJSON(ByteBuffer(bytes: members))
            }
            let rows = cluster.members.map { member in
                [
                    member.id + (member.id == cluster.agentID ? " (answered)" : ""), member.address, member.version,
                    SwitchboardJSON.timestamp(member.startedAt),
                ]
            }
            print(Table(header: ["AGENT", "ADDRESS", "VERSION", "STARTED"], rows: rows))
            let age = cluster.viewAgeMilliseconds.map { "\($0) ms" } ?? "never confirmed"
            print("store: etcd \(cluster.endpoints.joined(separator: ",")) \(cluster.prefix); view age: \(age)")
        }
    }
}

struct InstancesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "instances", abstract: "List the instances of a service.")

    @OptionGroup var options: ClientOptions

    @Argument(help: "The service name.")
    var service: String

    @OptionGroup var filters: InstanceFilterOptions

    func run() async throws {
        try await options.perform(as: Self.self) { agent in
            let request = AgentRequest.lookup(try serviceName(service), matching: try filters.query())
            if options.json { return options.printJSON(try await agent.call(request.ignoringAnswer()).body) }
            let answer = try await agent.call(request)
            let rows = answer.value.instances.map { instance in
                [
                    instance.id.rawValue, instance.definition.address.rawValue, "\(instance.definition.port)",
                    instance.status.rawValue, "\(instance.definition.weight)",
                    instance.definition.tags.joined(separator: ","),
                ]
            }
            print(Table(header: ["ID", "ADDRESS", "PORT", "STATUS", "WEIGHT", "TAGS"], rows: rows))
        }
    }
}

struct RegisterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "register",
        abstract: "Register (or update) an instance of a service.",
        discussion: "At most one health check can be given on the command line; use the HTTP API for more."
    )

    @OptionGroup var options: ClientOptions

    @Argument(help: "The service name.")
    var service: String

    @Option(help: "The instance's address: IPv4, IPv6 or hostname.")
    var address: String

    @Option(help: "The instance's port.")
    var port: Int

    @Option(help: "The instance id. (default: <service>-<address>-<port>)")
    var id: String?

    @Option(help: "A tag (repeatable).")
    var tag: [String] = []

    @Option(help: "A meta entry, key=value (repeatable).")
    var meta: [String] = []

    @Option(help: "Balancing weight, 1..10000.")
    var weight: Int?

    @Option(help: "Add a TTL check with this TTL (for example 10s); the instance must heartbeat.")
    var ttl: String?

    @Option(name: .customLong("http-check"), help: "Add an HTTP check polling this URL.")
    var httpCheck: String?

    @Option(name: .customLong("tcp-check"), help: "Add a TCP check connecting to host:port.")
    var tcpCheck: String?

    @Option(help: "Interval of the HTTP or TCP check (default 10s).")
    var interval: String?

    @Option(help: "Timeout of the HTTP or TCP check.")
    var timeout: String?

    @Option(name: .customLong("deregister-after"), help: "Remove the instance after its check is critical this long.")
    var deregisterAfter: String?

    func validate() throws {
        if [ttl, httpCheck, tcpCheck].compactMap({ $0 }).count > 1 {
            throw ValidationError("give at most one of --ttl, --http-check and --tcp-check")
        }
        for entry in meta where !entry.contains("=") {
            throw ValidationError("--meta must be key=value, got '\(entry)'")
        }
    }

    func run() async throws {
        var request = RegistrationRequest(address: address, port: port, tags: tag.isEmpty ? nil : tag, weight: weight)
        if !meta.isEmpty {
            var entries: [String: String] = [:]
            for entry in meta {
                let parts = entry.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                entries[String(parts[0])] = String(parts[1])
            }
            request.meta = entries
        }
        var check: CheckRequest?
        if let ttl {
            check = CheckRequest(type: "ttl")
            check?.ttl = ttl
        } else if let httpCheck {
            check = CheckRequest(type: "http")
            check?.url = httpCheck
        } else if let tcpCheck {
            check = CheckRequest(type: "tcp")
            check?.target = tcpCheck
        }
        if check != nil, check?.type != "ttl" {
            check?.interval = interval
            check?.timeout = timeout
        }
        check?.deregisterAfterCritical = deregisterAfter
        request.checks = check.map { [$0] }
        let instance = try id ?? defaultID()
        try await options.perform(as: Self.self) { agent in
            let registration = AgentRequest.register(
                request, service: try serviceName(service), id: try instanceID(instance))
            if options.json { return options.printJSON(try await agent.call(registration.ignoringAnswer()).body) }
            let answer = try await agent.call(registration)
            let instance = answer.value
            print(
                "registered \(instance.service)/\(instance.id) at \(instance.definition.address):\(instance.definition.port) (\(instance.status.rawValue), index \(instance.modifyIndex))"
            )
        }
    }

    private func defaultID() throws -> String {
        do {
            let name = try SwitchboardCore.ServiceName(service)
            return try InstanceID.defaultID(service: name, address: HostAddress(address), port: port).rawValue
        } catch {
            throw ValidationError("\(error.field): \(error.message)")
        }
    }
}

struct DeregisterCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deregister", abstract: "Remove an instance from the registry.")

    @OptionGroup var options: ClientOptions

    @Argument(help: "The service name.")
    var service: String

    @Argument(help: "The instance id.")
    var id: String

    func run() async throws {
        try await options.perform(as: Self.self) { agent in
            let answer = try await agent.call(
                AgentRequest.deregister(try serviceName(service), id: try instanceID(id)).ignoringAnswer())
            if options.json { return options.printJSON(answer.body) }
            print("deregistered \(service)/\(id)")
        }
    }
}

struct MaintenanceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "maintenance",
        abstract: "Drain an instance (take it out of every lookup without deregistering it), or bring it back."
    )

    @OptionGroup var options: ClientOptions

    @Argument(help: "The service name.")
    var service: String

    @Argument(help: "The instance id.")
    var id: String

    @Flag(exclusivity: .exclusive, help: "Turn maintenance on (drain) or off.")
    var mode: Mode

    @Option(help: "Why, for other operators.")
    var reason: String?

    enum Mode: String, EnumerableFlag {
        case enable
        case disable
    }

    func run() async throws {
        try await options.perform(as: Self.self) { agent in
            let answer = try await agent.call(
                .maintenance(try serviceName(service), id: try instanceID(id), enabled: mode == .enable, reason: reason)
            )
            if options.json { return options.printJSON(answer.body) }
            print("\(service)/\(id) is now \(answer.value.status.rawValue)")
        }
    }
}

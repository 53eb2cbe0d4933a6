import ArgumentParser
import Foundation
import NIOHTTP1
import ProcessSupport
import SwitchboardCore

/// Options every client command shares.
struct ClientOptions: ParsableArguments {
    @Option(name: .customLong("agent"), help: "The agent's URL. (default: $SWITCHBOARD_AGENT or http://127.0.0.1:7500)")
    var agentURL: String?

    @Flag(help: "Print JSON instead of a table, for scripts.")
    var json = false

    var client: AgentAPIClient {
        var url = agentURL ?? Environment.value("SWITCHBOARD_AGENT") ?? "http://127.0.0.1:7500"
        while url.hasSuffix("/") { url.removeLast() }
        return AgentAPIClient(baseURL: url)
    }

    /// Runs a client call, turning any failure into one line on standard error and exit status 1.
    func perform(_ body: () async throws -> Void) async throws {
        do {
            try await body()
        } catch let failure as AgentAPIClient.Failure {
            StandardStream.error.write("switchboard: \(failure)\n")
            throw ExitCode.failure
        }
    }

    func printJSON(_ data: Data) {
        StandardStream.output.write(data.last == 0x0A ? data : data + Data("\n".utf8))
    }
}

/// The lookup filters `instances` and `watch` share, as the API's query parameters.
struct InstanceFilterOptions: ParsableArguments {
    @Option(help: "healthy, any, passing, warning, critical or maintenance.")
    var status = "any"

    @Option(help: "Only instances with this tag (repeatable).")
    var tag: [String] = []

    @Option(help: "Only instances with this meta value, key:value (repeatable).")
    var meta: [String] = []

    /// `status=…&tag=…&meta=…`, escaped.
    var queryString: String {
        var query = ["status=\(AgentAPIClient.escape(status))"]
        query += tag.map { "tag=\(AgentAPIClient.escape($0))" }
        query += meta.map { "meta=\(AgentAPIClient.escape($0))" }
        return query.joined(separator: "&")
    }
}

struct ServicesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "services", abstract: "List services with instance counts.")

    @OptionGroup var options: ClientOptions

    func run() async throws {
        try await options.perform {
            let data = try await options.client.send(.GET, "/v1/services")
            if options.json { return options.printJSON(data) }
            let list = try SwitchboardJSON.decoder().decode(ServiceList.self, from: data)
            let rows = list.services.map { service in
                [
                    service.name.rawValue, "\(service.counts.passing)", "\(service.counts.warning)",
                    "\(service.counts.critical)", "\(service.counts.maintenance)", service.tags.joined(separator: ","),
                ]
            }
            print(Table(header: ["SERVICE", "PASSING", "WARNING", "CRITICAL", "MAINTENANCE", "TAGS"], rows: rows))
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
        let path = "/v1/services/\(AgentAPIClient.escape(service))?\(filters.queryString)"
        try await options.perform {
            let data = try await options.client.send(.GET, path)
            if options.json { return options.printJSON(data) }
            let lookup = try SwitchboardJSON.decoder().decode(ServiceLookup.self, from: data)
            let rows = lookup.instances.map { instance in
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
        let instanceID = try id ?? defaultID()
        let path = "/v1/services/\(AgentAPIClient.escape(service))/instances/\(AgentAPIClient.escape(instanceID))"
        let body = try JSONEncoder().encode(request)
        try await options.perform {
            let data = try await options.client.send(.PUT, path, body: body)
            if options.json { return options.printJSON(data) }
            let instance = try SwitchboardJSON.decoder().decode(Instance.self, from: data)
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
        let path = "/v1/services/\(AgentAPIClient.escape(service))/instances/\(AgentAPIClient.escape(id))"
        try await options.perform {
            let data = try await options.client.send(.DELETE, path)
            if options.json { return options.printJSON(data) }
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
        let path = "/v1/services/\(AgentAPIClient.escape(service))/instances/\(AgentAPIClient.escape(id))/maintenance"
        var body: [String: AnyEncodable] = ["enabled": AnyEncodable(mode == .enable)]
        if let reason { body["reason"] = AnyEncodable(reason) }
        let encoded = try JSONEncoder().encode(body)
        try await options.perform {
            let data = try await options.client.send(.PUT, path, body: encoded)
            if options.json { return options.printJSON(data) }
            let instance = try SwitchboardJSON.decoder().decode(Instance.self, from: data)
            print("\(service)/\(id) is now \(instance.status.rawValue)")
        }
    }
}

/// A JSON value of either kind the maintenance body needs.
struct AnyEncodable: Encodable {
    private let encodeValue: (any Encoder) throws -> Void

    init(_ value: some Encodable) {
        encodeValue = value.encode(to:)
    }

    func encode(to encoder: any Encoder) throws {
        try encodeValue(encoder)
    }
}

import ArgumentParser
import Demo
import Dispatch
import Foundation
import Logging
import ProcessSupport
import SwitchboardClient
import SwitchboardCore

#if canImport(Glibc)
import Glibc
#endif

/// The demo's settings; the defaults are `DemoConfiguration()`'s.
enum DemoSettings {
    private static let defaults = DemoConfiguration()

    static let duration = Setting(
        "duration", environment: "SWITCHBOARD_DEMO_DURATION", default: "\(defaults.duration.components.seconds)",
        valueName: "seconds", "How long the shoppers shop.")
    static let noChaos = Setting(
        "no-chaos", environment: "SWITCHBOARD_DEMO_NO_CHAOS", default: "\(!defaults.chaos)",
        "Traffic only: no kill, scale-up, slow-down, drain or restart.")
    static let shoppers = Setting(
        "shoppers", environment: "SWITCHBOARD_DEMO_SHOPPERS", default: "\(defaults.shoppers)", valueName: "count",
        "Concurrent shoppers.")

    static let cluster = Setting(
        "cluster", environment: "SWITCHBOARD_DEMO_CLUSTER", default: "\(defaults.cluster)",
        "Cluster mode: three etcd members (Debian's etcd-server) and two agents; the script kills an agent and an etcd member with -9."
    )

    static let acl = Setting(
        "acl", environment: "SWITCHBOARD_DEMO_ACL", default: "\(defaults.acl)",
        "ACLs on: the agents deny by default, the demo bootstraps them and gives the shop's processes and the gateway a token scoped to the shop's services."
    )

    static let all: [Setting] = [
        duration, noChaos, shoppers, cluster, acl, TracingSettings.otlpEndpoint, Setting.configFile,
    ]
}

/// The settings of one shop process (`switchboard demo` gives them as flags).
enum DemoServiceSettings {
    static let role = Setting(
        "role", environment: "SWITCHBOARD_DEMO_SERVICE_ROLE", valueName: "role", "cart, order or payment.")
    static let port = Setting(
        "port", environment: "SWITCHBOARD_DEMO_SERVICE_PORT", default: "0", valueName: "port",
        "The port to listen on (0: any free port; the chosen one is printed as 'listening PORT').")
    static let id = Setting(
        "id", environment: "SWITCHBOARD_DEMO_SERVICE_ID", valueName: "id", "The instance id; none: <role>-<port>.")
    static let agents = Setting(
        "agent", environment: "SWITCHBOARD_AGENT",
        default: AgentConnectionConfiguration().agents.joined(separator: ","),
        valueName: "url", "An agent URL; repeat for several.")
    static let dataDirectory = Setting(
        "data-dir", environment: "SWITCHBOARD_DEMO_SERVICE_DATA_DIR", default: ".", valueName: "directory",
        "Where the service keeps its store (order and payment).")

    static let all: [Setting] = [
        role, port, id, agents, dataDirectory, ClientSettings.token, ClientSettings.tokenFile,
        TracingSettings.otlpEndpoint, Setting.configFile,
    ]
}

/// `switchboard demo`: the shop, as real processes, with a crash, a scale-up, a slow instance, a drain and an agent
/// restart, while shoppers check out through the gateway.
struct DemoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the shop (agent, gateway, cart, 3 order, 2 payment processes) under traffic and chaos.",
        discussion: """
            Shoppers check out through the gateway (cart -> order -> payment, a saga with idempotency keys) while \
            the script kills an order instance with -9, starts a fourth, slows a payment instance, drains the \
            other and restarts the agent. A live view shows every instance's traffic; the summary at the end \
            says whether any shopper saw a failure. Ctrl-C stops every process the demo started.
            """)

    @Option(name: DemoSettings.duration.argumentName, help: DemoSettings.duration.help)
    var duration: String?

    @Flag(name: DemoSettings.noChaos.argumentName, help: DemoSettings.noChaos.help)
    var noChaos = false

    @Flag(name: DemoSettings.cluster.argumentName, help: DemoSettings.cluster.help)
    var cluster = false

    @Flag(name: DemoSettings.acl.argumentName, help: DemoSettings.acl.help)
    var acl = false

    @Flag(help: "Print the summary as JSON (and no live view).")
    var json = false

    @Option(name: DemoSettings.shoppers.argumentName, help: DemoSettings.shoppers.help)
    var shoppers: String?

    @OptionGroup var tracing: TracingOptions

    @Option(name: Setting.configFile.argumentName, help: Setting.configFile.help)
    var configFile: String?

    func run() async throws {
        var given: [Setting: String] = [:]
        given[DemoSettings.duration] = duration
        given[DemoSettings.noChaos] = noChaos ? "true" : nil
        given[DemoSettings.shoppers] = shoppers
        given[DemoSettings.cluster] = cluster ? "true" : nil
        given[DemoSettings.acl] = acl ? "true" : nil
        given[Setting.configFile] = configFile
        given.merge(tracing.commandLine) { $1 }
        let configuration = try await Self.settled {
            let settings = try await SettingsReader(DemoSettings.all, commandLine: given)
            let seconds = try settings.required(DemoSettings.duration, rule: "10 to 3600 seconds") {
                Int($0).flatMap { (10...3600).contains($0) ? $0 : nil }
            }
            let shoppers = try settings.required(DemoSettings.shoppers, rule: "1 to 64") {
                Int($0).flatMap { (1...64).contains($0) ? $0 : nil }
            }
            return DemoConfiguration(
                duration: .seconds(seconds), chaos: !(try settings.isOn(DemoSettings.noChaos)), json: json,
                shoppers: shoppers, cluster: try settings.isOn(DemoSettings.cluster),
                acl: try settings.isOn(DemoSettings.acl), otlpEndpoint: try TracingSettings.endpoint(from: settings))
        }
        let runner = try DemoRunner(configuration: configuration)
        // Ctrl-C or a TERM: every child goes at once, then the demo.
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let sources = [SIGINT, SIGTERM].map { (number: Int32) in
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                runner.interrupt()
                // _exit: no atexit handlers racing the threads still running.
                _exit(130)
            }
            source.resume()
            return source
        }
        defer { sources.forEach { $0.cancel() } }
        let summary = try await runner.run()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            StandardStream.output.write(try encoder.encode(summary) + Data("\n".utf8))
        } else {
            print(DemoReport.table(summary))
        }
        let audit = summary.audit
        if summary.failedUserRequests > 0 || audit == nil || audit?.doubleCharges != 0
            || audit?.chargedButNotConfirmed != 0 || audit?.confirmedButNotCharged != 0 || audit?.pendingOrders != 0
        {
            throw ExitCode(1)
        }
    }
}

/// `switchboard demo-service`: one process of the shop (started by `switchboard demo`).
struct DemoServiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo-service",
        abstract: "Run one shop service (cart, order or payment) of the demo; it registers itself with the agent.")

    @Option(name: DemoServiceSettings.role.argumentName, help: DemoServiceSettings.role.help)
    var role: String?

    @Option(name: DemoServiceSettings.port.argumentName, help: DemoServiceSettings.port.help)
    var port: String?

    @Option(name: DemoServiceSettings.id.argumentName, help: DemoServiceSettings.id.help)
    var id: String?

    @Option(name: DemoServiceSettings.agents.argumentName, help: DemoServiceSettings.agents.help)
    var agent: [String] = []

    @Option(name: DemoServiceSettings.dataDirectory.argumentName, help: DemoServiceSettings.dataDirectory.help)
    var dataDir: String?

    @OptionGroup var tracing: TracingOptions

    @Option(name: Setting.configFile.argumentName, help: Setting.configFile.help)
    var configFile: String?

    func run() async throws {
        var given: [Setting: String] = [:]
        given[DemoServiceSettings.role] = role
        given[DemoServiceSettings.port] = port
        given[DemoServiceSettings.id] = id
        given[DemoServiceSettings.agents] = agent.isEmpty ? nil : agent.joined(separator: ",")
        given[DemoServiceSettings.dataDirectory] = dataDir
        given[Setting.configFile] = configFile
        given.merge(tracing.commandLine) { $1 }
        let (configuration, otlpEndpoint) = try await Self.settled {
            let settings = try await SettingsReader(DemoServiceSettings.all, commandLine: given)
            let role = try settings.required(DemoServiceSettings.role, rule: "cart, order or payment", ShopRole.init)
            let port = try settings.required(DemoServiceSettings.port, rule: "0 to 65535") {
                Int($0).flatMap { (0...65535).contains($0) ? $0 : nil }
            }
            let configuration = ShopServiceConfiguration(
                role: role, port: port, agents: settings.list(DemoServiceSettings.agents),
                dataDirectory: settings.text(DemoServiceSettings.dataDirectory) ?? ".",
                id: settings.text(DemoServiceSettings.id), token: try ClientSettings.token(from: settings))
            return (configuration, try TracingSettings.endpoint(from: settings))
        }
        ParentWatch.startIfAsked()
        // The service's spans are named for its role, the process by its instance id.
        let spans = try SpanExport.bootstrap(
            endpoint: otlpEndpoint, serviceName: configuration.role.rawValue, instance: configuration.id,
            logger: Logger(label: "shop.\(configuration.role.rawValue)"))
        try await runShopService(configuration, services: [spans].compactMap { $0 })
    }
}

/// The summary as a table for people.
enum DemoReport {
    static func table(_ summary: DemoSummary) -> String {
        var lines = ["", "Summary", "", "  instance        service       requests"]
        for instance in summary.instances {
            lines.append(
                "  \(instance.id.padding(toLength: 15, withPad: " ", startingAt: 0)) "
                    + "\(instance.service.padding(toLength: 13, withPad: " ", startingAt: 0)) \(instance.requests)"
                    + (instance.killed ? "   (killed)" : ""))
        }
        func seconds(_ value: Double?) -> String { value.map { String(format: "%.2fs", $0) } ?? "n/a" }
        lines += [
            "",
            "  user requests            \(summary.userRequests)",
            "  failed user requests     \(summary.failedUserRequests)",
            "  orders confirmed         \(summary.ordered)",
            "  payments declined        \(summary.paymentFailed) (orders cancelled, carts told)",
            "  notifications sent       \(summary.notificationsSent) (Python, under sidecars; best-effort)",
            "  notification -> payment  \(summary.notificationCallsToPayment) calls through the sidecars' upstream"
                + " listeners, \(summary.notificationCallsToPaymentFailed) failed",
            "  double charges           \(summary.doubleCharges.map(String.init) ?? "unknown (stores unreadable)")",
            "  charged, not confirmed   \(summary.audit.map { String($0.chargedButNotConfirmed) } ?? "unknown")",
            "  confirmed, not charged   \(summary.audit.map { String($0.confirmedButNotCharged) } ?? "unknown")",
            "  orders left pending      \(summary.audit.map { String($0.pendingOrders) } ?? "unknown")",
            "  kill -9 detected after   \(seconds(summary.killDetectionSeconds))",
            "  traffic to the dead one  \(summary.trafficToKilledAfterDetection.map(String.init) ?? "n/a") connections after detection",
            "  new instance served in   \(seconds(summary.newInstanceFirstTrafficSeconds))",
            "  every live instance served: \(summary.everyLiveInstanceServed ? "yes" : "no")",
            "",
        ]
        return lines.joined(separator: "\n")
    }
}

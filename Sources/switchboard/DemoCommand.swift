import ArgumentParser
import Demo
import Dispatch
import Foundation
import ProcessSupport
import SwitchboardCore

#if canImport(Glibc)
import Glibc
#endif

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

    @Option(help: "How long the shoppers shop, in seconds.")
    var duration: Int = 60

    @Flag(name: .customLong("no-chaos"), help: "Traffic only: no kill, scale-up, slow-down, drain or restart.")
    var noChaos = false

    @Flag(help: "Print the summary as JSON (and no live view).")
    var json = false

    @Option(help: "Concurrent shoppers.")
    var shoppers: Int = 6

    func validate() throws {
        guard (10...3600).contains(duration) else { throw ValidationError("--duration must be 10 to 3600 seconds") }
        guard (1...64).contains(shoppers) else { throw ValidationError("--shoppers must be 1 to 64") }
    }

    func run() async throws {
        let runner = try DemoRunner(
            configuration: DemoConfiguration(
                duration: .seconds(duration), chaos: !noChaos, json: json, shoppers: shoppers))
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

    @Option(help: "cart, order or payment.")
    var role: String

    @Option(help: "The port to listen on (0: any free port; the chosen one is printed as 'listening PORT').")
    var port: Int = 0

    @Option(help: "The instance id. (default: <role>-<port>)")
    var id: String?

    @Option(help: "An agent URL; repeat for several.")
    var agent: [String] = ["http://127.0.0.1:7500"]

    @Option(name: .customLong("data-dir"), help: "Where the service keeps its store (order and payment).")
    var dataDir: String = "."

    func validate() throws {
        guard ShopRole(rawValue: role) != nil else { throw ValidationError("--role must be cart, order or payment") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0 to 65535") }
    }

    func run() async throws {
        ParentWatch.startIfAsked()
        try await runShopService(
            ShopServiceConfiguration(
                role: ShopRole(rawValue: role)!, port: port, agents: agent, dataDirectory: dataDir, id: id))
    }
}

/// The summary as a table for people.
enum DemoReport {
    static func table(_ summary: DemoSummary) -> String {
        var lines = ["", "Summary", "", "  instance     service   requests"]
        for instance in summary.instances {
            lines.append(
                "  \(instance.id.padding(toLength: 12, withPad: " ", startingAt: 0)) "
                    + "\(instance.service.padding(toLength: 9, withPad: " ", startingAt: 0)) \(instance.requests)"
                    + (instance.killed ? "   (killed)" : ""))
        }
        func seconds(_ value: Double?) -> String { value.map { String(format: "%.2fs", $0) } ?? "n/a" }
        lines += [
            "",
            "  user requests            \(summary.userRequests)",
            "  failed user requests     \(summary.failedUserRequests)",
            "  orders confirmed         \(summary.ordered)",
            "  payments declined        \(summary.paymentFailed) (orders cancelled, carts told)",
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

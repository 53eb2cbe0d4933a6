import Foundation
import NIOHTTP1
import SwitchboardCore
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `Tests/Fixtures/otlp_receiver.py` as a process: an OTLP/HTTP receiver that writes each span it is sent as a JSON
/// line (its output goes to a file, read when the test wants the spans).
final class OTLPReceiver: Sendable {
    struct Span: Sendable {
        var service: String
        var instance: String?
        var name: String
        var kind: String
        var traceID: String
        var spanID: String
        var parentSpanID: String
        var attributes: [String: String]
    }

    let port: Int
    private let process: Process
    private let output: String

    private init(port: Int, process: Process, output: String) {
        self.port = port
        self.process = process
        self.output = output
    }

    static func start() async throws -> OTLPReceiver {
        let python = try await PythonClients.python()
        let output = try makeTemporaryDirectory() + "/spans.jsonl"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [PythonClients.fixture("otlp_receiver.py")]
        // One handle for both: a Python error shows among the lines, as something that is not a span.
        let handle = FileHandle(forWritingAtPath: output)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let first = (try? String(contentsOfFile: output, encoding: .utf8))?.split(separator: "\n").first
            if let first, first.hasPrefix("listening "), let port = Int(first.dropFirst("listening ".count)) {
                return OTLPReceiver(port: port, process: process, output: output)
            }
            guard process.isRunning else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        throw TestFailure(
            "the OTLP receiver did not start: \((try? String(contentsOfFile: output, encoding: .utf8)) ?? "")")
    }

    /// The spans received so far, and the requests it refused (a sender that got the protocol wrong).
    func received() -> (spans: [Span], refusals: [String]) {
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        var spans: [Span] = []
        var refusals: [String] = []
        for line in text.split(separator: "\n").dropFirst() {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                refusals.append(String(line))
                continue
            }
            if object["refused"] != nil {
                refusals.append(String(line))
                continue
            }
            spans.append(
                Span(
                    service: object["service"] as? String ?? "", instance: object["instance"] as? String,
                    name: object["name"] as? String ?? "", kind: object["kind"] as? String ?? "",
                    traceID: object["traceId"] as? String ?? "", spanID: object["spanId"] as? String ?? "",
                    parentSpanID: object["parentSpanId"] as? String ?? "",
                    attributes: (object["attributes"] as? [String: Any] ?? [:]).mapValues { "\($0)" }))
        }
        return (spans, refusals)
    }

    func stop() {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

/// A span as a failure message shows it.
func describe(_ span: OTLPReceiver.Span) -> String {
    "\(span.service) \(span.kind) '\(span.name)' \(span.spanID)<-\(span.parentSpanID.isEmpty ? "root" : span.parentSpanID)"
}

/// The demo, traced: in the demo's suite, so it never runs beside another demo (the suite is serialized).
extension DemoTests {
    /// `--otlp-endpoint` is a setting like the others: a flag, `SWITCHBOARD_OTLP_ENDPOINT` or `otlp-endpoint:` in
    /// the configuration file, checked wherever it comes from, on each command that traces.
    @Test func theOTLPEndpointComesFromTheFlagTheVariableOrTheFileAndABadOneIsRefused() async throws {
        let rule = "--otlp-endpoint must be an http:// or https:// URL such as http://127.0.0.1:4318"
        let viaVariable = try await SwitchboardBinary.run(
            ["agent", "--dev", "--dns-disable"], environment: ["SWITCHBOARD_OTLP_ENDPOINT": "ftp://127.0.0.1:4318"],
            timeout: .seconds(20))
        #expect(viaVariable.status == 64)
        #expect(viaVariable.stderr.contains("\(rule), got 'ftp://127.0.0.1:4318'"), "\(viaVariable.stderr)")

        let file = FileManager.default.temporaryDirectory.appendingPathComponent("otlp-\(UUID().uuidString).yaml").path
        try "otlp-endpoint: collector:4318\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let viaFile = try await SwitchboardBinary.run(["gateway", "--config-file", file], timeout: .seconds(20))
        #expect(viaFile.status == 64)
        #expect(viaFile.stderr.contains("\(rule), got 'collector:4318'"), "\(viaFile.stderr)")

        let viaFlag = try await SwitchboardBinary.run(
            ["demo-service", "--role", "cart", "--otlp-endpoint", "http://"], timeout: .seconds(20))
        #expect(viaFlag.status == 64)
        #expect(viaFlag.stderr.contains("\(rule), got 'http://'"), "\(viaFlag.stderr)")

        for command in ["agent", "gateway", "sidecar", "demo", "demo-service"] {
            let help = try await SwitchboardBinary.run([command, "--help"]).stdout
            // The help is wrapped to the terminal's width: compared with its lines joined.
            let text = help.split(whereSeparator: \.isWhitespace).joined(separator: " ")
            #expect(text.contains("--otlp-endpoint <url> Export spans over OTLP/HTTP"), "\(command): \(help)")
            #expect(text.contains("env: SWITCHBOARD_OTLP_ENDPOINT"), "\(command): \(help)")
        }
    }

    /// The demo's processes export their spans to a receiver; a checkout sent with a known trace id is followed from
    /// the gateway (continuing the caller's trace) to cart, order and payment, each hop's server span under the
    /// caller's client span; and the agent exports its request and store-commit spans.
    @Test func oneCheckoutThroughTheGatewayIsOneTraceAcrossGatewayCartOrderAndPayment() async throws {
        let receiver = try await OTLPReceiver.start()
        defer { receiver.stop() }
        let logs = try makeTemporaryDirectory()
        let demo = Process()
        demo.executableURL = URL(fileURLWithPath: SwitchboardBinary.executable(named: "switchboard"))
        demo.arguments = [
            "demo", "--no-chaos", "--duration", "10", "--shoppers", "1", "--json",
            "--otlp-endpoint", "http://127.0.0.1:\(receiver.port)",
        ]
        // Batches every 200 ms rather than every 5 s: the spans arrive while the shop runs (the rest at shutdown).
        demo.environment = ProcessInfo.processInfo.environment.merging(["OTEL_BSP_SCHEDULE_DELAY": "200"]) { $1 }
        _ = FileManager.default.createFile(atPath: "\(logs)/demo.out", contents: nil)
        _ = FileManager.default.createFile(atPath: "\(logs)/demo.err", contents: nil)
        demo.standardOutput = FileHandle(forWritingAtPath: "\(logs)/demo.out")
        demo.standardError = FileHandle(forWritingAtPath: "\(logs)/demo.err")
        try demo.run()
        defer {
            if demo.isRunning { kill(demo.processIdentifier, SIGKILL) }
        }

        // The gateway's and the agent's addresses, from their command lines, once the demo started them.
        var addresses: [String: String] = [:]
        let started = ContinuousClock.now + .seconds(30)
        while addresses.count < 2, ContinuousClock.now < started {
            for pid in demoChildren(of: demo.processIdentifier) {
                let arguments = (FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") ?? Data())
                    .split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
                for (command, flag) in [("gateway", "--listen"), ("agent", "--http-addr")]
                where arguments.dropFirst().first == command {
                    if let position = arguments.firstIndex(of: flag), position + 1 < arguments.count {
                        addresses[command] = "http://\(arguments[position + 1])"
                    }
                }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        let gatewayURL = try #require(addresses["gateway"], "the demo started no gateway")
        let agentURL = try #require(addresses["agent"], "the demo started no agent")
        // The shop is up once the agent has its three services healthy. The gateway is not asked before: it would
        // remember for a second that the cart has no instance yet, and fail the first shoppers' checkouts.
        let up = ContinuousClock.now + .seconds(30)
        for service in try ["payment", "order", "cart"].map(ServiceName.init) {
            while (try? await http(.GET, agentURL + APIPath.service(service)))?.object["instances"]
                .map({ ($0 as? [Any])?.isEmpty == false }) != true
            {
                guard ContinuousClock.now < up, demo.isRunning else {
                    throw TestFailure("\(service) never had a healthy instance")
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }

        let traceID = (0..<4).map { _ in String(format: "%08x", UInt32.random(in: 1...UInt32.max)) }.joined()
        let callerSpanID = String(format: "%016llx", UInt64.random(in: 1...UInt64.max))
        let checkout = try await http(
            .POST, "\(gatewayURL)/api/cart/checkout",
            json: #"{"cartId": "traced-\#(traceID.prefix(8))", "amountCents": 4200}"#,
            headers: [("traceparent", "00-\(traceID)-\(callerSpanID)-01")])
        #expect(checkout.status == 200, "\(checkout.text)")
        #expect(checkout.object["status"] as? String == "ordered", "\(checkout.text)")

        // The demo ends by itself; its processes stop gracefully, flushing what spans they still hold.
        let ended = ContinuousClock.now + .seconds(60)
        while demo.isRunning, ContinuousClock.now < ended { try await Task.sleep(for: .milliseconds(100)) }
        #expect(!demo.isRunning, "the demo did not end")
        let output = ["out", "err"].map { (try? String(contentsOfFile: "\(logs)/demo.\($0)", encoding: .utf8)) ?? "" }
        #expect(demo.isRunning || demo.terminationStatus == 0, "\(output.joined(separator: "\n"))")

        let (spans, refusals) = receiver.received()
        #expect(refusals.isEmpty, "\(refusals)")
        let trace = spans.filter { $0.traceID == traceID }
        let shown = trace.map(describe).joined(separator: "\n")
        let byID = Dictionary(spans.map { ($0.spanID, $0) }, uniquingKeysWith: { first, _ in first })

        // The gateway continued the caller's trace, and sent the cart its attempt's context.
        let gatewayServer = try #require(
            trace.first { $0.service == "switchboard-gateway" && $0.kind == "SERVER" },
            "no gateway server span in the trace:\n\(shown)")
        #expect(gatewayServer.parentSpanID == callerSpanID)
        #expect(gatewayServer.attributes["http.response.status_code"] == "200")
        let attempt = try #require(
            trace.first { $0.service == "switchboard-gateway" && $0.kind == "CLIENT" },
            "no gateway attempt span in the trace:\n\(shown)")
        #expect(attempt.parentSpanID == gatewayServer.spanID)
        #expect(attempt.attributes["switchboard.instance"] == "cart-1")

        // Each service's server span is a child of its caller's client span.
        for (service, caller) in [("cart", "switchboard-gateway"), ("order", "cart"), ("payment", "order")] {
            let server = trace.first { $0.service == service && $0.kind == "SERVER" }
            #expect(server != nil, "no \(service) server span in the trace:\n\(shown)")
            guard let server else { continue }
            let parent = byID[server.parentSpanID]
            #expect(
                parent?.service == caller && parent?.kind == "CLIENT" && parent?.traceID == traceID,
                "\(service)'s parent is \(parent.map(describe) ?? "missing"), not a client span of \(caller):\n\(shown)"
            )
        }

        // The agent spans its requests and its store's commits.
        let agent = spans.filter { $0.service == "switchboard-agent" }
        #expect(
            agent.contains { $0.kind == "SERVER" && $0.attributes["http.request.method"] == "PUT" },
            "no agent request span among \(agent.count): \(agent.prefix(20).map(describe))")
        #expect(
            agent.contains {
                $0.name == "store commit" && Int($0.attributes["switchboard.commit.changes"] ?? "") ?? 0 > 0
            },
            "no store-commit span among \(agent.count): \(agent.prefix(20).map(describe))")

        // The Python notification service's call to payment went through its sidecar's upstream listener, which
        // spans it as the gateway would (a server span for the application's request, a client span per attempt).
        let sidecar = spans.filter { $0.service == "notification-sidecar" }
        #expect(
            sidecar.contains { $0.kind == "SERVER" } && sidecar.contains { $0.kind == "CLIENT" },
            "no sidecar request and attempt spans among \(sidecar.count): \(sidecar.prefix(20).map(describe))")
    }
}

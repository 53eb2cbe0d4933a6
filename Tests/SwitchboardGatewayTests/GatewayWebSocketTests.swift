import Foundation
import NIOHTTP1
import SwitchboardGateway
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A WebSocket echo server in Python (`Tests/Fixtures/websocket_echo.py`), registered in the agent as an instance
/// of `service` tagged `public`; it answers each message with its name and the message.
final class WebSocketEchoServer: Sendable {
    let name: String
    let port: Int
    let process: Process

    init(name: String, service: String, agent: AgentProcess) async throws {
        (process, port) = try await startPrintingPort(
            try await PythonClients.python(), [PythonClients.fixture("websocket_echo.py"), name],
            output: try makeTemporaryDirectory() + "/echo.out")
        self.name = name
        let registered = try await http(
            .PUT, "\(agent.baseURL)/v1/services/\(service)/instances/\(name)",
            json: #"{"address": "127.0.0.1", "port": \#(port), "tags": ["public"]}"#)
        guard (200..<300).contains(registered.status) else {
            throw TestFailure("registering \(name): \(registered.text)")
        }
    }

    func kill() {
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    deinit {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    }
}

/// Runs `Tests/Fixtures/websocket_client.py` (Python's `websockets`) with `arguments`, as a process, to its end.
func webSocketClient(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    let python = try await PythonClients.python()
    let result = try await runProgram(
        python, [PythonClients.fixture("websocket_client.py")] + arguments, timeout: .seconds(90))
    return (result.status, result.stdout + result.stderr)
}

/// `websocket_client.py URL hold`, running: connected to an instance (``instance``), waiting for its connection to
/// end.
final class HeldWebSocket: Sendable {
    let process: Process
    let output: String
    let instance: String

    init(url: String) async throws {
        let python = try await PythonClients.python()
        output = try makeTemporaryDirectory() + "/client.out"
        _ = FileManager.default.createFile(atPath: output, contents: nil)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = [PythonClients.fixture("websocket_client.py"), url, "hold"]
        process.standardOutput = FileHandle(forWritingAtPath: output)
        process.standardError = process.standardOutput
        try process.run()
        self.process = process
        let deadline = ContinuousClock.now + .seconds(20)
        var instance: String?
        let output = self.output
        func printed() -> String { (try? String(contentsOfFile: output, encoding: .utf8)) ?? "" }
        while instance == nil, process.isRunning, ContinuousClock.now < deadline {
            instance = printed().split(separator: "\n").first { $0.hasPrefix("connected ") }.map {
                String($0.dropFirst("connected ".count))
            }
            if instance == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        guard let instance else {
            process.terminate()
            throw TestFailure("the held WebSocket never connected: \(printed())")
        }
        self.instance = instance
    }

    /// Waits up to `limit` for the client to end; its status and what it printed.
    func end(within limit: Duration) async throws -> (status: Int32?, output: String) {
        let deadline = ContinuousClock.now + limit
        while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        if process.isRunning {
            process.terminate()
            return (nil, text)
        }
        return (process.terminationStatus, text)
    }
}

/// A request with `headers` sent by curl (whose `Connection` and `Upgrade` go out as given); its status and body.
func curlRequest(_ method: String, _ url: String, headers: [String]) async throws -> (status: Int, body: String) {
    let result = try await runProgram(
        "/usr/bin/curl",
        ["-s", "-X", method, "-w", "\n%{http_code}", url] + headers.flatMap { ["-H", $0] }, timeout: .seconds(20))
    let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
    return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
}

@Suite("WebSocket through the gateway, with real clients and servers", .serialized, .loadsTheMachine)
struct GatewayWebSocketTests {
    @Test func aThousandMessagesEchoThroughTheGatewayAndAKilledInstanceClosesItsCallersAndLosesTheNextOnes()
        async throws
    {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let first = try await WebSocketEchoServer(name: "echo-a", service: "chat", agent: agent)
        let second = try await WebSocketEchoServer(name: "echo-b", service: "chat", agent: agent)
        try await waitForHealthy(agent, "chat", count: 2)
        let adminPort = try freePort()
        try await withGateway(agent: agent, configure: { $0.admin = ("127.0.0.1", adminPort) }) { gateway in
            let url = gateway.replacingOccurrences(of: "http://", with: "ws://") + "/chat/room"
            // 1,000 messages on one upgraded connection, every echo checked.
            let echoed = try await webSocketClient([url, "echo", "1000"])
            #expect(echoed.status == 0 && echoed.output.contains("ok"), "\(echoed.output)")

            // A caller held on an instance: killing the instance closes the caller's connection through the gateway.
            let held = try await HeldWebSocket(url: url)
            let (victim, survivor) = held.instance == first.name ? (first, second) : (second, first)
            victim.kill()
            let ended = try await held.end(within: .seconds(10))
            #expect(ended.status == 0 && ended.output.contains("closed"), "\(ended.output)")

            // New connections go to the live instance: a refused connection is retried on another, and the dead
            // one is ejected. The registry still lists both (no health check here).
            for _ in 0..<6 {
                let next = try await webSocketClient([url, "echo", "20"])
                #expect(next.status == 0 && next.output.contains("instance \(survivor.name)"), "\(next.output)")
            }

            // Eight upgrades, each closed again by its caller or its instance.
            var text = ""
            let deadline = ContinuousClock.now + .seconds(10)
            repeat {
                text = try await http(.GET, "http://127.0.0.1:\(adminPort)/metrics").text
                if PrometheusSamples(parsing: text).value("switchboard_gateway_upgraded_connections_open") == 0 {
                    break
                }
                try await Task.sleep(for: .milliseconds(100))
            } while ContinuousClock.now < deadline
            let metrics = PrometheusSamples(parsing: text)
            #expect(metrics.value("switchboard_gateway_upgraded_connections_total") == 8, "\(text)")
            #expect(metrics.value("switchboard_gateway_upgraded_connections_open") == 0, "\(text)")
            #expect(metrics.value("switchboard_gateway_requests_total", ["code": "1xx"]) == 8, "\(text)")
        }
    }

    @Test func anUpgradedConnectionSilentPastTheWebSocketIdleTimeoutIsClosed() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let server = try await WebSocketEchoServer(name: "echo-idle", service: "chat", agent: agent)
        try await waitForHealthy(agent, "chat", count: 1)
        try await withGateway(agent: agent, configure: { $0.webSocketIdleTimeout = .seconds(1) }) { gateway in
            let url = gateway.replacingOccurrences(of: "http://", with: "ws://") + "/chat/room"
            let held = try await HeldWebSocket(url: url)
            #expect(held.instance == server.name)
            let opened = ContinuousClock.now
            let ended = try await held.end(within: .seconds(20))
            #expect(ended.status == 0 && ended.output.contains("closed"), "\(ended.output)")
            #expect(ContinuousClock.now - opened < .seconds(5), "closed after \(ContinuousClock.now - opened)")
        }
    }

    @Test func otherUpgradesAreRefusedAndAnH2cUpgradeIsAnsweredInHTTP11() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["public"])
        _ = backend
        try await waitForHealthy(agent, "shop", count: 1)
        try await withGateway(agent: agent) { gateway in
            let refused = try await curlRequest(
                "GET", "\(gateway)/shop/hello", headers: ["Connection: Upgrade", "Upgrade: IRC/6.9"])
            #expect(refused.status == 501)
            #expect(refused.body.contains("only WebSocket upgrades are proxied"), "\(refused.body)")
            let post = try await curlRequest(
                "POST", "\(gateway)/shop/hello", headers: ["Connection: Upgrade", "Upgrade: websocket"])
            #expect(post.status == 400)
            #expect(post.body.contains("a WebSocket handshake is a GET"), "\(post.body)")
            // curl's own h2c upgrade: the gateway answers in HTTP/1.1 (HTTP/2 without TLS is prior knowledge only).
            let h2c = try await runProgram(
                "/usr/bin/curl", ["-s", "--http2", "-w", "\n%{http_code} %{http_version}", "\(gateway)/shop/hello"])
            #expect(h2c.stdout.hasSuffix("\n200 1.1"), "\(h2c.stdout)")
        }
    }
}

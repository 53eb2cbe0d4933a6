import Foundation
import SwitchboardGateway
import SwitchboardTLS
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// curl, with `arguments`: its status, what it printed, and the `-w` line it was asked for (the last line).
func curl(_ arguments: [String]) async throws -> (status: Int32, body: String, written: String) {
    let run = try await runProgram(
        "/usr/bin/curl", ["-s", "-S", "--max-time", "20"] + arguments, timeout: .seconds(30))
    var lines = run.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    let written = lines.popLast() ?? ""
    return (run.status, lines.joined(separator: "\n") + run.stderr, written)
}

@Suite("HTTP/2 to callers, through the same routes and policies", .serialized, .loadsTheMachine)
struct GatewayHTTP2Tests {
    static let routes = """
        authentication:
          apiKeys:
            - { key: "h2-key-0123456789abcdef", user: reporting, roles: [reader] }
        routes:
          - name: reports
            match: { prefix: /reports }
            service: shop
            rewrite: /hello
            auth: { method: api-key }
            rateLimit: { key: api-key, rate: 0.01, burst: 3 }
          - name: cached
            match: { prefix: /cached }
            service: shop
            rewrite: /hello
            cache: { ttl: 60s }
          - name: echo
            match: { prefix: /echo }
            service: shop
            rewrite: /echo
        """

    @Test func h2cWithPriorKnowledgeGetsAnswersThroughAuthRateLimitsCacheAndBodies() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop")
        _ = backend
        try await waitForHealthy(agent, "shop", count: 1)
        let file = try RouteFileOnDisk(Self.routes)
        try await withGateway(agent: agent, configure: { $0.routeFile = file.path }) { gateway in
            let h2 = ["--http2-prior-knowledge", "-w", "\n%{http_code} %{http_version}"]
            // Authentication, then the rate limit: three calls in the burst, the fourth refused.
            let anonymous = try await curl(h2 + ["\(gateway)/reports"])
            #expect(anonymous.written == "401 2", "\(anonymous)")
            var statuses: [String] = []
            for _ in 0..<4 {
                statuses.append(
                    try await curl(h2 + ["-H", "X-API-Key: h2-key-0123456789abcdef", "\(gateway)/reports"]).written)
            }
            #expect(statuses == ["200 2", "200 2", "200 2", "429 2"], "\(statuses)")
            // The cache answers the second time.
            let first = try await curl(h2 + ["-D", "-", "\(gateway)/cached"])
            let second = try await curl(h2 + ["-D", "-", "\(gateway)/cached"])
            #expect(first.written == "200 2" && first.body.lowercased().contains("x-cache: miss"), "\(first)")
            #expect(second.written == "200 2" && second.body.lowercased().contains("x-cache: hit"), "\(second)")
            // A request body goes up (chunked to the instance, since HTTP/2 gives no length) and comes back.
            let payload = String(repeating: "switchboard ", count: 20_000)
            let payloadFile = try makeTemporaryDirectory() + "/payload"
            try payload.write(toFile: payloadFile, atomically: true, encoding: .utf8)
            let echoed = try await curl(h2 + ["--data-binary", "@\(payloadFile)", "\(gateway)/echo"])
            #expect(echoed.written == "200 2" && echoed.body == payload, "\(echoed.written) \(echoed.body.count)")
            // Several streams on one connection at once.
            let many = try await curl(
                ["--http2-prior-knowledge", "--parallel", "--parallel-immediate", "-w", "%{http_version};"]
                    + Array(repeating: "\(gateway)/cached", count: 8))
            let answered = (many.body + many.written).components(separatedBy: "hello from").count - 1
            let overHTTP2 = (many.body + many.written).components(separatedBy: "2;").count - 1
            #expect(many.status == 0 && answered == 8 && overHTTP2 == 8, "\(many)")
            // HTTP/1.1 callers are served as before on the same port.
            let http1 = try await curl(["--http1.1", "-w", "\n%{http_code} %{http_version}", "\(gateway)/cached"])
            #expect(http1.written == "200 1.1", "\(http1)")
        }
    }

    @Test func h2OverTLSIsNegotiatedByALPNAndHTTP11StillServed() async throws {
        let certificates = try await InstanceCertificates()
        defer { try? FileManager.default.removeItem(atPath: certificates.directory) }
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop")
        _ = backend
        try await waitForHealthy(agent, "shop", count: 1)
        let file = try RouteFileOnDisk(Self.routes)
        try await withGateway(
            agent: agent,
            configure: {
                $0.routeFile = file.path
                $0.tls = TLSSettings(certificateFile: certificates.certificate, keyFile: certificates.key)
            }
        ) { gateway in
            let secure = gateway.replacingOccurrences(of: "http://", with: "https://")
            let tls = ["--cacert", certificates.ca, "-w", "\n%{http_code} %{http_version}"]
            let h2 = try await curl(tls + ["--http2", "-H", "X-API-Key: h2-key-0123456789abcdef", "\(secure)/reports"])
            #expect(h2.written == "200 2" && h2.body.hasPrefix("hello from"), "\(h2)")
            let http1 = try await curl(tls + ["--http1.1", "\(secure)/cached"])
            #expect(http1.written == "200 1.1", "\(http1)")
        }
    }

    @Test func aSilentConnectionAndAnIdleHTTP2ConnectionAreClosedAfterTheIdleTimeout() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        try await withGateway(agent: agent, configure: { $0.clientIdleTimeout = .seconds(1) }) { gateway in
            let port = try #require(Int(gateway.split(separator: ":").last ?? ""))
            for opening in [[UInt8](), CleartextPrefaceBytes.preface] {
                let started = ContinuousClock.now
                let closed = await withCheckedContinuation { continuation in
                    DispatchQueue.global().async {
                        guard let socket = LoopbackSocket.connected(port: port, receiveTimeout: 10) else {
                            continuation.resume(returning: false)
                            return
                        }
                        defer { close(socket) }
                        if !opening.isEmpty {
                            _ = opening.withUnsafeBytes { send(socket, $0.baseAddress, $0.count, 0) }
                        }
                        var byte = [UInt8](repeating: 0, count: 4096)
                        // What the gateway sends (HTTP/2's SETTINGS) is read until it closes (0) or the wait ends.
                        while true {
                            let got = recv(socket, &byte, byte.count, 0)
                            if got == 0 { break }
                            if got < 0 {
                                continuation.resume(returning: false)
                                return
                            }
                        }
                        continuation.resume(returning: true)
                    }
                }
                #expect(closed, "the connection (\(opening.isEmpty ? "silent" : "HTTP/2")) stayed open")
                #expect(ContinuousClock.now - started < .seconds(8))
            }
        }
    }
}

/// HTTP/2's connection preface, as a caller with prior knowledge sends it first.
enum CleartextPrefaceBytes {
    static let preface =
        Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        + [0, 0, 0, 4, 0, 0, 0, 0, 0]  // an empty SETTINGS frame
}

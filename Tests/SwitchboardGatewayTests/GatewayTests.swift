import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import SwitchboardCore
import SwitchboardGateway
import SwitchboardTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Runs a gateway in this process against `agent` while `body` runs; returns the gateway's base URL to it.
func withGateway<T: Sendable>(
    agent: AgentProcess, configure: (inout GatewayConfiguration) -> Void = { _ in },
    _ body: @Sendable (String) async throws -> T
) async throws -> T {
    var configuration = GatewayConfiguration(port: 0, agents: [agent.baseURL])
    configure(&configuration)
    var logger = Logger(label: "test.gateway")
    logger.logLevel = .warning
    let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
    let gateway = GatewayServer(configuration: configuration, logger: logger, onListening: { portSink.yield($0) })
    let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [gateway], logger: logger))
    return try await serving(
        group,
        until: { () async throws -> String in
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw TestFailure("the gateway never reported its port") }
            return "http://127.0.0.1:\(port)"
        }, body)
}

/// Waits until the agent lists `count` healthy instances of `service`.
func waitForHealthy(_ agent: AgentProcess, _ service: String, count: Int) async throws {
    let deadline = ContinuousClock.now + .seconds(20)
    while ContinuousClock.now < deadline {
        let lookup = try await http(.GET, "\(agent.baseURL)/v1/services/\(service)")
        if let instances = lookup.object["instances"] as? [Any], instances.count == count { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestFailure("\(service) never had \(count) healthy instances")
}

/// Calls made and failed by a load's callers.
final class LoadTally: Sendable {
    let completed = Atomic(0)
    let stop = Atomic(false)
    private let failed = Mutex<[String]>([])

    func fail(_ reason: String) { failed.withLock { $0.append(reason) } }
    var failures: [String] { failed.withLock { $0 } }
}

@Suite("The gateway, with real backends", .serialized, .loadsTheMachine)
struct GatewayTests {
    @Test func publicServicesAreRoutedByTheirFirstPathSegmentAndBalancedAcrossInstances() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let shop = [
            try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["public"]),
            try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["public"]),
        ]
        let hidden = try await ExampleBackend(agents: [agent.baseURL], service: "hidden")
        try await waitForHealthy(agent, "shop", count: 2)
        try await waitForHealthy(agent, "hidden", count: 1)
        try await withGateway(agent: agent) { gateway in
            for _ in 0..<10 {
                let answer = try await http(.GET, "\(gateway)/shop/hello")
                #expect(answer.status == 200 && answer.text.hasPrefix("hello from shop"))
                #expect(answer.headers.first(name: "X-Request-ID")?.count == 32)
            }
            // The prefix is stripped: the backend saw /hello, and each instance got a share.
            #expect(try await shop[0].answeredCalls() == 5)
            #expect(try await shop[1].answeredCalls() == 5)

            let notPublic = try await http(.GET, "\(gateway)/hidden/hello")
            #expect(notPublic.status == 503)
            #expect(notPublic.object["service"] as? String == "hidden")
            #expect(notPublic.object["error"] as? String == "no_instance")
            #expect(try await hidden.answeredCalls() == 0)
            let noRoute = try await http(.GET, "\(gateway)/")
            #expect(noRoute.status == 404 && noRoute.object["error"] as? String == "no_route")
            let unknown = try await http(.GET, "\(gateway)/nothing/here")
            #expect(unknown.status == 503)
            // Made-up names start no watch on the agent: only services with public instances are followed.
            func waiting() async throws -> Int {
                let info = try await http(.GET, "\(agent.baseURL)/v1/agent").object
                return (info["watches"] as? [String: Any])?["waiting"] as? Int ?? -1
            }
            let before = try await waiting()
            for index in 0..<20 { _ = try await http(.GET, "\(gateway)/made-up-\(index)/x") }
            try await Task.sleep(for: .milliseconds(300))
            #expect(try await waiting() == before)
        }
    }

    @Test func forwardedHeadersAreSetAndHopByHopHeadersStripped() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["public"])
        try await waitForHealthy(agent, "shop", count: 1)
        _ = backend
        try await withGateway(agent: agent) { gateway in
            var request = HTTPClientRequest(url: "\(gateway)/shop/headers?x=1")
            request.headers.add(name: "X-Forwarded-For", value: "203.0.113.9")
            request.headers.add(name: "Connection", value: "keep-alive, X-Hop")
            request.headers.add(name: "X-Hop", value: "must not pass")
            request.headers.add(name: "Proxy-Authorization", value: "Basic c2VjcmV0")
            request.headers.add(name: "X-Request-ID", value: "trace-42")
            request.headers.add(name: "X-Custom", value: "kept")
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            #expect(response.status == .ok)
            #expect(response.headers.first(name: "X-Request-ID") == "trace-42")
            let body = try await response.body.collect(upTo: 1 << 20)
            let seen = try #require(
                try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: String])
            #expect(seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1")
            #expect(seen["x-forwarded-proto"] == "http")
            #expect(seen["x-forwarded-host"]?.hasPrefix("127.0.0.1:") == true)
            #expect(seen["x-request-id"] == "trace-42")
            #expect(seen["x-custom"] == "kept")
            #expect(seen["x-hop"] == nil && seen["proxy-authorization"] == nil)
        }
    }

    @Test func largeBodiesStreamThroughBothWays() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["public"])
        try await waitForHealthy(agent, "shop", count: 1)
        _ = backend
        try await withGateway(agent: agent) { gateway in
            var random = FastRandom(seed: 7)
            let bytes = (0..<(8 << 20)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            var request = HTTPClientRequest(url: "\(gateway)/shop/echo")
            request.method = .POST
            // Sent in pieces with no length: the gateway forwards it chunked.
            let pieces = stride(from: 0, to: bytes.count, by: 64 * 1024).map {
                ByteBuffer(bytes: bytes[$0..<min(bytes.count, $0 + 64 * 1024)])
            }
            let (stream, continuation) = AsyncStream.makeStream(of: ByteBuffer.self)
            for piece in pieces { continuation.yield(piece) }
            continuation.finish()
            request.body = .stream(stream, length: .unknown)
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(60))
            #expect(response.status == .ok)
            let echoed = try await response.body.collect(upTo: 16 << 20)
            #expect(echoed.readableBytes == bytes.count)
            #expect(Array(echoed.readableBytesView) == bytes)
        }
    }

    @Test func anInstanceTooSlowToAnswerIsA504NamingTheService() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["public"])
        try await waitForHealthy(agent, "shop", count: 1)
        _ = backend
        try await withGateway(agent: agent, configure: { $0.responseTimeout = .milliseconds(300) }) { gateway in
            let started = ContinuousClock.now
            let slow = try await http(.GET, "\(gateway)/shop/slow?ms=3000")
            #expect(slow.status == 504)
            #expect(slow.object["service"] as? String == "shop")
            #expect(slow.object["error"] as? String == "upstream_timeout")
            #expect(ContinuousClock.now - started < .seconds(2))
            // The gateway keeps serving.
            #expect(try await http(.GET, "\(gateway)/shop/slow?ms=10").status == 200)
        }
    }

    @Test func aBackendKilledUnderLoadCostsNoFailedIdempotentCall() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        var backends: [ExampleBackend] = []
        for _ in 0..<3 {
            backends.append(try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["public"]))
        }
        try await waitForHealthy(agent, "shop", count: 3)
        let victim = backends[0]
        let survivors = Array(backends[1...])
        try await withGateway(agent: agent) { gateway in
            let tally = LoadTally()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        while !tally.stop.load(ordering: .relaxed) {
                            do {
                                let answer = try await http(.GET, "\(gateway)/shop/hello", timeout: .seconds(10))
                                if answer.status != 200 { tally.fail("\(answer.status) \(answer.text)") }
                            } catch {
                                tally.fail("\(error)")
                            }
                            tally.completed.add(1, ordering: .relaxed)
                        }
                    }
                }
                while tally.completed.load(ordering: .relaxed) < 500 { try await Task.sleep(for: .milliseconds(10)) }
                await victim.stop(with: SIGKILL)
                let atKill = tally.completed.load(ordering: .relaxed)
                while tally.completed.load(ordering: .relaxed) < atKill + 1500 {
                    try await Task.sleep(for: .milliseconds(10))
                }
                tally.stop.store(true, ordering: .relaxed)
                try await group.waitForAll()
            }
            #expect(tally.completed.load(ordering: .relaxed) >= 2000)
            #expect(tally.failures == [])
            // The survivors answered what the dead one no longer could.
            #expect(try await survivors[0].answeredCalls() + survivors[1].answeredCalls() >= 1500)
        }
    }
}

/// ``LoopbackSocket/exchange(_:port:quiet:)`` in HTTP's terms: text out, text back.
func rawExchange(_ segments: [String], port: Int, quiet: Int = 1) async -> String {
    String(
        decoding: await LoopbackSocket.exchange(segments.map { Array($0.utf8) }, port: port, quiet: quiet),
        as: UTF8.self)
}

extension GatewayTests {
    @Test func pipelinedRequestsSmugglingTraceExpectAndHTTP10AreHandledAsAProxyMust() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["public"])
        try await waitForHealthy(agent, "shop", count: 1)
        try await withGateway(agent: agent) { gateway in
            let port = try #require(Int(gateway.split(separator: ":").last ?? ""))
            // Three requests in one write, an error answer in the middle: three answers, in order.
            let pipelined = await rawExchange(
                [
                    "GET /shop/hello HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
                        + "GET /shop/hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                ], port: port, quiet: 3)
            // "\r\n" is one Character in Swift: split the UTF-8 view on the line feeds.
            let statuses = pipelined.utf8.split(separator: UInt8(ascii: "\n")).map {
                String(decoding: $0, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            }.filter { $0.hasPrefix("HTTP/1.1 ") }
            #expect(statuses == ["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK"], "\(pipelined)")

            // `Connection: content-length` must not strip the length: the body stays a body, not a second request.
            let before = try await backend.answeredCalls()
            let smuggled = await rawExchange(
                [
                    "POST /shop/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 36\r\nConnection: close, content-length\r\n\r\n"
                        + "GET /hello HTTP/1.1\r\nHost: a\r\n\r\n\r\n"
                ], port: port)
            #expect(smuggled.components(separatedBy: "HTTP/1.1 ").count == 2, "\(smuggled)")
            #expect(smuggled.contains("GET /hello"), "the body came back as a body")
            #expect(try await backend.answeredCalls() == before, "the smuggled request reached the backend")

            let trace = await rawExchange(
                ["TRACE /shop/hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"], port: port)
            #expect(trace.hasPrefix("HTTP/1.1 405"), "\(trace)")

            // Expect: 100-continue gets its 100 from the gateway, then the final answer.
            let expect = await rawExchange(
                [
                    "POST /shop/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
                    "hello",
                ], port: port)
            #expect(expect.hasPrefix("HTTP/1.1 100 Continue"), "\(expect)")
            #expect(expect.contains("HTTP/1.1 200 OK") && expect.contains("\r\nhello"), "\(expect)")

            // An HTTP/1.0 caller gets its answer and the connection closes.
            let old = await rawExchange(["GET /shop/hello HTTP/1.0\r\n\r\n"], port: port, quiet: 5)
            #expect(old.hasPrefix("HTTP/1.0 200 OK") && old.contains("hello from shop"), "\(old)")
        }
    }
}

extension GatewayTests {
    @Test func chunkedBodiesHEADAndBadHeadsAreHandledAsTheyComeOffTheWire() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["public"])
        try await waitForHealthy(agent, "shop", count: 1)
        try await withGateway(agent: agent) { gateway in
            let port = try #require(Int(gateway.split(separator: ":").last ?? ""))
            // A chunked upload, split mid-chunk, reaches the instance whole; the streamed answer comes back chunked.
            let chunked = await rawExchange(
                [
                    "POST /shop/echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhel",
                    "lo\r\n6\r\n world\r\n0\r\n\r\n",
                ], port: port)
            #expect(chunked.hasPrefix("HTTP/1.1 200 OK"), "\(chunked)")
            #expect(chunked.contains("Transfer-Encoding: chunked"), "\(chunked)")
            let echoed = chunked.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
            #expect(dechunked(echoed) == "hello world", "\(chunked)")

            // HEAD gets the head alone, and the connection serves the next request.
            let head = await rawExchange(
                [
                    "HEAD /shop/hello HTTP/1.1\r\nHost: a\r\n\r\n"
                        + "GET /shop/hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                ], port: port, quiet: 3)
            #expect(head.components(separatedBy: "HTTP/1.1 200 OK").count == 3, "\(head)")
            #expect(head.components(separatedBy: "hello from shop").count == 2, "\(head)")

            // An HTTP/1.0 caller cannot read chunks: it gets the data alone, then the connection closes.
            let old = await rawExchange(
                ["POST /shop/echo HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello"], port: port, quiet: 5)
            #expect(old.hasPrefix("HTTP/1.0 200 OK"), "\(old)")
            #expect(!old.lowercased().contains("transfer-encoding"), "\(old)")
            #expect(old.hasSuffix("\r\n\r\nhello"), "\(old)")

            // Heads that could be read two ways are refused before anything reaches the instance.
            let before = try await backend.answeredCalls()
            let both = await rawExchange(
                [
                    "POST /shop/echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                        + "0\r\n\r\nGET /shop/hello HTTP/1.1\r\nHost: a\r\n\r\n"
                ], port: port)
            #expect(both.hasPrefix("HTTP/1.1 400 Bad Request") && both.contains("Connection: close"), "\(both)")
            #expect(both.components(separatedBy: "HTTP/1.1 ").count == 2, "\(both)")
            let huge = await rawExchange(
                ["GET /shop/hello HTTP/1.1\r\nHost: a\r\nX-Big: \(String(repeating: "a", count: 70_000))\r\n\r\n"],
                port: port)
            #expect(huge.hasPrefix("HTTP/1.1 431"), "\(huge.prefix(200))")
            #expect(try await backend.answeredCalls() == before)
            // The gateway still serves.
            #expect(try await http(.GET, "\(gateway)/shop/hello").status == 200)
        }
    }
}

/// The data of a chunked body (sizes, extensions and trailers dropped), or nil when it is not well formed.
func dechunked(_ body: String) -> String? {
    var lines = body.components(separatedBy: "\r\n")[...]
    var data = ""
    while let sizeLine = lines.popFirst() {
        guard let size = Int(sizeLine.split(separator: ";").first ?? "", radix: 16) else { return nil }
        if size == 0 { return data }
        guard let chunk = lines.popFirst(), chunk.utf8.count == size else { return nil }
        data += chunk
    }
    return nil
}

extension GatewayTests {
    @Test func stoppingTheGatewayClosesCallersKeptAliveConnections() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let backend = try await ExampleBackend(agents: [agent.baseURL], service: "shop", tags: ["public"])
        _ = backend
        try await waitForHealthy(agent, "shop", count: 1)
        let descriptor = try await withGateway(agent: agent) { gateway -> Int32 in
            let port = try #require(Int(gateway.split(separator: ":").last ?? ""))
            let descriptor = try #require(LoopbackSocket.connected(port: port, receiveTimeout: 5))
            let request = Array("GET /shop/hello HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
            _ = send(descriptor, request, request.count, 0)
            var buffer = [UInt8](repeating: 0, count: 4096)
            let count = recv(descriptor, &buffer, buffer.count, 0)
            #expect(String(decoding: buffer.prefix(max(count, 0)), as: UTF8.self).hasPrefix("HTTP/1.1 200 OK"))
            return descriptor
        }
        defer { close(descriptor) }
        // The kept-alive connection was closed by the gateway as it stopped: the next read sees the end at once.
        var buffer = [UInt8](repeating: 0, count: 16)
        let started = ContinuousClock.now
        #expect(recv(descriptor, &buffer, buffer.count, 0) == 0)
        #expect(ContinuousClock.now - started < .seconds(2))
    }
}

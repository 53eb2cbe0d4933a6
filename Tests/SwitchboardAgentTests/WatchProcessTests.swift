import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchboardTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Watches against the real `switchboard` binary: memory under a stuck consumer, SIGTERM with streams open, the CLI.
@Suite(.serialized, .loadsTheMachine) struct WatchProcessTests {
    @Test func aConsumerThatNeverReadsDoesNotGrowTheAgentsMemory() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let agent = try await AgentProcess(dataDirectory: directory, extraArguments: ["--sqlite-sync", "normal"])
        let stuck = try await StuckConsumer(baseURL: agent.baseURL, path: "/v1/watch?status=any")

        // Each update's event carries ~8 KiB of meta; a phase is ~40 MiB of events, more than every bounded buffer
        // holds (the catalog's event ring and the watch frames), so a second phase may not grow memory by much.
        let meta = (0..<16).map { #""k\#($0)": "\#(String(repeating: "x", count: 500))""# }.joined(separator: ",")
        func updatePhase() async throws {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for worker in 0..<16 {
                    group.addTask {
                        for round in 0..<300 {
                            let answer = try await http(
                                .PUT, "\(agent.baseURL)/v1/services/order/instances/o\(worker)",
                                json: #"{"address": "10.0.0.1", "port": \#(8000 + round), "meta": {\#(meta)}}"#)
                            guard answer.status / 100 == 2 else { throw TestFailure("update failed: \(answer.text)") }
                        }
                    }
                }
                try await group.waitForAll()
            }
        }
        try await updatePhase()
        let afterFirst = try residentMemory(of: agent.process.processIdentifier)
        try await updatePhase()
        let afterSecond = try residentMemory(of: agent.process.processIdentifier)
        let growth = afterSecond - afterFirst
        #expect(growth < 24 * 1024 * 1024, "memory grew by \(growth / 1024 / 1024) MiB over ~40 MiB of events")

        // Once it reads again, the consumer is resynchronised with a fresh snapshot rather than the lost changes.
        stuck.startReading()
        _ = try await waitUntil(timeout: .seconds(20), "a resynchronising snapshot") {
            stuck.received.components(separatedBy: "event: snapshot").count - 1 >= 2
        }
        let info = try await http(.GET, "\(agent.baseURL)/v1/agent").object
        let watches = try #require(info["watches"] as? [String: Any])
        #expect((watches["resynchronisations"] as? Int ?? 0) >= 1)
        try await stuck.close()
    }

    @Test func sigtermEndsOpenStreamsAndHeldQueriesAndTheAgentExits() async throws {
        let agent = try await AgentProcess(dataDirectory: nil)
        let stream = try await EventStreamClient("\(agent.baseURL)/v1/watch")
        _ = try await stream.next()
        // A consumer that stopped reading, with its stream's write blocked on a full connection.
        let stuck = try await StuckConsumer(baseURL: agent.baseURL, path: "/v1/watch?status=any")
        let meta = (0..<16).map { #""k\#($0)": "\#(String(repeating: "x", count: 500))""# }.joined(separator: ",")
        for round in 0..<400 {
            _ = try await http(
                .PUT, "\(agent.baseURL)/v1/services/order/instances/o\(round % 8)",
                json: #"{"address": "10.0.0.1", "port": \#(8000 + round), "meta": {\#(meta)}}"#)
        }
        _ = try await stream.next()
        let index = try #require(try await http(.GET, "\(agent.baseURL)/v1/services").index)
        let held = Task { try await http(.GET, "\(agent.baseURL)/v1/services?index=\(index)&wait=5m") }
        try await Task.sleep(for: .milliseconds(200))
        let start = ContinuousClock.now
        let status = await agent.stop(with: SIGTERM)
        #expect(status == 0)
        // The stuck consumer is given up on after the 10 s shutdown limit.
        #expect(ContinuousClock.now - start < .seconds(15))
        #expect(try await held.value.status == 200)
        _ = try await waitUntil(timeout: .seconds(5), "the stream ending") { stream.isFinished }
        try? await stuck.close()
    }

    @Test func theWatchCommandPrintsTheSnapshotAndEachChange() async throws {
        let agent = try await AgentProcess(dataDirectory: nil)
        _ = try await http(
            .PUT, "\(agent.baseURL)/v1/services/order/instances/o1", json: #"{"address": "10.0.0.1", "port": 80}"#)
        async let human = SwitchboardBinary.run(
            ["watch", "order", "--agent", agent.baseURL], timeout: .seconds(3))
        async let json = SwitchboardBinary.run(
            ["watch", "order", "--json", "--agent", agent.baseURL], timeout: .seconds(3))
        try await Task.sleep(for: .milliseconds(1500))
        _ = try await http(
            .PUT, "\(agent.baseURL)/v1/services/order/instances/o2", json: #"{"address": "10.0.0.2", "port": 80}"#)
        let (humanRun, jsonRun) = try await (human, json)
        #expect(humanRun.stdout.contains("order: 1 instance(s)"), "\(humanRun.stdout)")
        #expect(humanRun.stdout.contains("order/o1 10.0.0.1:80 passing"))
        #expect(humanRun.stdout.contains("added order/o2 10.0.0.2:80 passing"))
        let lines = jsonRun.stdout.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
        #expect(lines.map { $0["event"] as? String } == ["snapshot", "added"], "\(jsonRun.stdout)")

        let refused = try await SwitchboardBinary.run(["watch", "Not A Service", "--agent", agent.baseURL])
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("field: service"), "\(refused.stderr)")
    }
}

/// The resident memory of process `pid`, in bytes.
func residentMemory(of pid: Int32) throws -> Int {
    let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
        let kilobytes = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    else { throw TestFailure("no VmRSS for \(pid)") }
    return kilobytes * 1024
}

/// An HTTP client that sends one request and then does not read the answer (a consumer that hangs), until told to.
final class StuckConsumer: Sendable {
    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let bytes = Mutex<[UInt8]>([])

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            bytes.withLock { $0 += buffer.readableBytesView }
        }
    }

    private let channel: any Channel
    private let collector = Collector()

    init(baseURL: String, path: String) async throws {
        let address = baseURL.replacingOccurrences(of: "http://", with: "")
        guard let (host, port) = Self.split(address) else { throw TestFailure("bad address \(address)") }
        let collector = self.collector
        channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.autoRead, value: false)
            .channelOption(.socketOption(.so_rcvbuf), value: 4096)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(host: host, port: port).get()
        var request = ByteBuffer()
        request.writeString("GET \(path) HTTP/1.1\r\nHost: \(address)\r\nAccept: text/event-stream\r\n\r\n")
        try await channel.writeAndFlush(request)
    }

    /// What arrived since reading started.
    var received: String { String(decoding: collector.bytes.withLock { $0 }, as: UTF8.self) }

    func startReading() {
        channel.setOption(.autoRead, value: true).whenComplete { _ in }
        channel.read()
    }

    func close() async throws {
        try await channel.close()
    }

    private static func split(_ address: String) -> (String, Int)? {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            return nil
        }
        return (String(address[..<colon]), port)
    }
}

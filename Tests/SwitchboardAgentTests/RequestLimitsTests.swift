import Foundation
import NIOHTTP1
import SwitchboardCore
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The limits that protect the agent, on a live agent process: writes per caller, held requests, open connections;
/// each refusal is clear and counted in `/metrics`.
@Suite(.serialized, .loadsTheMachine) struct RequestLimitsTests {
    /// Writes past a caller's rate are answered 429 with `Retry-After`; heartbeats are not counted; `/metrics`
    /// shows the limit and the refusals. One write per 20 s refills the allowance: however slow a loaded machine
    /// makes these requests, the fourth finds none.
    @Test func writesPastTheCallersRateGet429WithRetryAfter() async throws {
        let agent = try await AgentProcess(
            dataDirectory: nil, extraArguments: ["--write-rate-limit", "0.05", "--write-burst", "3"])
        let url = agent.baseURL
        var statuses: [Int] = []
        for position in 1...4 {
            let answer = try await http(
                .PUT, "\(url)/v1/services/order/instances/o\(position)",
                json: #"{"address": "127.0.0.7", "port": 80, "checks": [{"type": "ttl", "ttl": "30s"}]}"#)
            statuses.append(answer.status)
            if answer.status == 429 {
                #expect((1...20).contains(Int(answer.headers.first(name: "Retry-After") ?? "") ?? 0))
                #expect(answer.errorCode == "rate_limited")
            }
        }
        #expect(statuses == [201, 201, 201, 429])
        for _ in 0..<5 {
            #expect(try await http(.PUT, "\(url)/v1/services/order/instances/o1/heartbeat").status == 200)
        }
        let metrics = try await http(.GET, "\(url)/metrics").text
        #expect(metrics.contains("switchboard_writes_rate_limited_total 1"), "\(metrics)")
        #expect(metrics.contains("switchboard_write_rate_limit_per_second 0.05"))
    }

    /// Past the ceiling of held requests, a blocking query is answered 429 at once, not held.
    @Test func blockingQueriesPastTheCeilingGet429() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, extraArguments: ["--max-held-requests", "1"])
        let url = agent.baseURL
        // A blocking query on index 0 answers at once: the catalog needs a change to wait past.
        _ = try await http(
            .PUT, "\(url)/v1/services/order/instances/o1", json: #"{"address": "127.0.0.7", "port": 80}"#)
        let index = try #require(try await http(.GET, "\(url)/v1/services").index)
        async let held = http(.GET, "\(url)/v1/services?index=\(index)&wait=3s")
        try await waitUntil(timeout: .seconds(5), "the first query held") {
            try await http(.GET, "\(url)/metrics").text.contains("switchboard_held_requests 1")
        }
        let refused = try await http(.GET, "\(url)/v1/services?index=\(index)&wait=3s")
        #expect(refused.status == 429)
        #expect(refused.headers.first(name: "Retry-After") == "1")
        #expect(try await held.status == 200)
        #expect(try await http(.GET, "\(url)/metrics").text.contains("switchboard_held_requests_refused_total 1"))
    }

    /// Past the ceiling of open connections, a new one is closed as it arrives; once one closes, the next is served.
    @Test func connectionsPastTheCeilingAreClosedAndCounted() async throws {
        let agent = try await AgentProcess(
            dataDirectory: nil, dnsAddress: nil, extraArguments: ["--max-connections", "3"])
        let port = try #require(Int(agent.baseURL.split(separator: ":").last ?? ""))
        let held = (0..<3).compactMap { _ in LoopbackSocket.connected(port: port) }
        #expect(held.count == 3)
        try await Task.sleep(for: .milliseconds(200))
        let request = Array("GET /v1/agent HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        let refused = await LoopbackSocket.exchange([request], port: port)
        #expect(!String(decoding: refused, as: UTF8.self).hasPrefix("HTTP/1.1 200"), "the fourth is closed")
        for descriptor in held { close(descriptor) }
        // Once the held ones are closed, a connection is served again (tries made before the agent saw them close
        // may be refused too: the count only grows).
        try await waitUntil(timeout: .seconds(15), interval: .milliseconds(100), "a connection served again") {
            let answer = await LoopbackSocket.exchange(
                [Array("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)], port: port)
            let text = String(decoding: answer, as: UTF8.self)
            guard text.hasPrefix("HTTP/1.1 200"),
                let line = text.split(separator: "\n").first(where: {
                    $0.hasPrefix("switchboard_connections_refused_total ")
                }),
                let refused = Int(line.split(separator: " ").last ?? "")
            else { return false }
            return refused >= 1
        }
        #expect(agent.log.contains("connection refused: the agent holds its maximum of open connections"))
    }
}

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
@Suite(.serialized) struct RequestLimitsTests {
    /// Writes past a caller's rate are answered 429 with `Retry-After`; heartbeats are not counted; `/metrics`
    /// shows the limit and the refusals.
    @Test func writesPastTheCallersRateGet429WithRetryAfter() async throws {
        let agent = try await AgentProcess(
            dataDirectory: nil, extraArguments: ["--write-rate-limit", "1", "--write-burst", "3"])
        let url = agent.baseURL
        var statuses: [Int] = []
        for position in 1...4 {
            let answer = try await http(
                .PUT, "\(url)/v1/services/order/instances/o\(position)",
                json: #"{"address": "127.0.0.7", "port": 80, "checks": [{"type": "ttl", "ttl": "30s"}]}"#)
            statuses.append(answer.status)
            if answer.status == 429 {
                #expect(Int(answer.headers.first(name: "Retry-After") ?? "") ?? 0 >= 1)
                #expect(answer.errorCode == "rate_limited")
            }
        }
        #expect(statuses == [201, 201, 201, 429])
        for _ in 0..<5 {
            #expect(try await http(.PUT, "\(url)/v1/services/order/instances/o1/heartbeat").status == 200)
        }
        let metrics = try await http(.GET, "\(url)/metrics").text
        #expect(metrics.contains("switchboard_writes_rate_limited_total 1"), "\(metrics)")
        #expect(metrics.contains("switchboard_write_rate_limit_per_second 1"))
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
        try await waitUntil(timeout: .seconds(5), "a connection served again") {
            let answer = await LoopbackSocket.exchange(
                [Array("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".utf8)], port: port)
            return String(decoding: answer, as: UTF8.self).contains("switchboard_connections_refused_total 1")
        }
        #expect(agent.log.contains("connection refused: the agent holds its maximum of open connections"))
    }
}

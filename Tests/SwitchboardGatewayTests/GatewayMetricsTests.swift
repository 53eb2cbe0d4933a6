import Foundation
import NIOHTTP1
import SwitchboardGateway
import SwitchboardTestSupport
import Testing

@Suite("The gateway's /metrics", .serialized, .loadsTheMachine)
struct GatewayMetricsTests {
    @Test func theAdminAddressServesRequestsAndTheProcessInAFormPromtoolAccepts() async throws {
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let adminPort = try freePort()
        try await withGateway(agent: agent, configure: { $0.admin = ("127.0.0.1", adminPort) }) { gateway in
            // No instance behind the name: the gateway answers 503 itself.
            #expect(try await http(.GET, "\(gateway)/nothing/here").status == 503)
            let text = try await http(.GET, "http://127.0.0.1:\(adminPort)/metrics").text
            let metrics = PrometheusSamples(parsing: text)
            #expect(metrics.value("switchboard_gateway_requests_total", ["code": "5xx"]) == 1, "\(text)")
            #expect(metrics.value("process_resident_memory_bytes") ?? 0 > 1_000_000)
            #expect(metrics.value("process_open_fds") ?? 0 > 3)
            #expect(metrics.value("process_max_fds") ?? 0 > 3)
            #expect(metrics.value("process_cpu_seconds_total") ?? 0 > 0)
            #expect(metrics.value("process_start_time_seconds") ?? 0 > 1_600_000_000)
            let lint = try await Promtool.checkMetrics(text)
            #expect(lint.status == 0 && lint.output.isEmpty, "promtool check metrics: \(lint.output)")
        }
    }
}

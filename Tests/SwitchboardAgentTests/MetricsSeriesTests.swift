import Foundation
import NIOHTTP1
import SwitchboardAgent
import SwitchboardDNS
import SwitchboardTestSupport
import Testing

/// The agent's `/metrics`: the series of every part (HTTP API, DNS, store, streams, the process), read after using
/// each, in the form Prometheus accepts; and the alert rules shipped in `docs/`.
@Suite("Metrics for every part", .serialized, .loadsTheMachine)
struct MetricsSeriesTests {
    /// The package's root folder (this file is `Tests/SwitchboardAgentTests/MetricsSeriesTests.swift`).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test func theAgentCountsRequestsQueriesCommitsStreamsAndTheProcess() async throws {
        // Keep-alives often, so a stream whose client left finds out soon.
        let configuration = AgentConfiguration(
            httpPort: 0, storage: .memory, watch: WatchConfiguration(keepAliveInterval: .milliseconds(50)),
            dns: DNSConfiguration(port: 0))
        try await withLiveAgent(configuration: configuration) { agent in
            let instance = "\(agent.baseURL)/v1/services/payment/instances/p1"
            #expect(try await http(.PUT, instance, json: #"{"address": "10.0.0.1", "port": 80}"#).status == 201)
            #expect(
                try await http(
                    .PUT, "\(agent.baseURL)/v1/services/db/instances/d1",
                    json: #"{"address": "10.0.0.2", "port": 5432, "checks": [{"type": "ttl", "ttl": "30s"}]}"#
                ).status == 201)
            for _ in 0..<3 { #expect(try await http(.GET, "\(agent.baseURL)/v1/services/payment").status == 200) }
            #expect(try await http(.GET, "\(agent.baseURL)/v1/services/payment/instances/nope").status == 404)
            #expect(try await http(.GET, "\(agent.baseURL)/no/such/path").status == 404)
            let port = try #require(agent.dnsPort)
            let answer = try await runProgram(
                "/usr/bin/dig",
                ["@127.0.0.1", "-p", "\(port)", "+time=5", "+tries=3", "+short", "payment.service.switchboard", "A"])
            #expect(answer.stdout.contains("10.0.0.1"), "\(answer)")
            _ = try await runProgram(
                "/usr/bin/dig",
                ["@127.0.0.1", "-p", "\(port)", "+time=5", "+tries=3", "gone.service.switchboard", "SRV"])
            _ = try await runProgram(
                "/usr/bin/dig",
                ["@127.0.0.1", "-p", "\(port)", "+time=5", "+tries=3", "+tcp", "payment.service.switchboard", "A"])
            let stream = try await EventStreamClient("\(agent.baseURL)/v1/watch?service=payment")
            _ = try await stream.next()

            let text = try await http(.GET, "\(agent.baseURL)/metrics").text
            let metrics = PrometheusSamples(parsing: text)
            // HTTP: by route pattern (never the path asked), method and status, with durations.
            let lookups = ["route": "/v1/services/{service}", "method": "GET", "status": "200"]
            #expect(metrics.value("switchboard_http_requests_total", lookups) == 3, "\(text)")
            #expect(
                metrics.value(
                    "switchboard_http_requests_total",
                    ["route": "/v1/services/{service}/instances/{id}", "method": "PUT", "status": "201"]) == 2)
            #expect(
                metrics.value(
                    "switchboard_http_requests_total",
                    ["route": "/v1/services/{service}/instances/{id}", "method": "GET", "status": "404"]) == 1)
            #expect(metrics.value("switchboard_http_requests_total", ["route": "NotFound", "status": "404"]) == 1)
            #expect(metrics.named("switchboard_http_requests_total").allSatisfy { !$0.labels["route"]!.contains("p1") })
            #expect(
                metrics.value(
                    "switchboard_http_request_duration_seconds_count",
                    ["route": "/v1/services/{service}", "method": "GET"]) == 3)
            #expect(
                metrics.value(
                    "switchboard_http_request_duration_seconds_bucket",
                    ["route": "/v1/services/{service}", "method": "GET", "le": "+Inf"]) == 3)
            // DNS: by question type and response code, UDP and TCP together.
            #expect(metrics.value("switchboard_dns_queries_total", ["type": "A", "rcode": "NOERROR"]) == 2, "\(text)")
            #expect(metrics.value("switchboard_dns_queries_total", ["type": "SRV", "rcode": "NXDOMAIN"]) == 1)
            // The store: two registrations, one or two commits (group commit may batch them).
            let commits = try #require(
                metrics.value("switchboard_store_commit_duration_seconds_count", ["store": "memory"]))
            #expect((1...2).contains(commits))
            #expect(metrics.value("switchboard_store_commit_changes_sum", ["store": "memory"]) == 2)
            #expect(metrics.value("switchboard_store_commit_changes_count", ["store": "memory"]) == commits)
            #expect(metrics.value("switchboard_store_commit_failures_total", ["store": "memory"]) == 0)
            // Streams, and instances per service by status (what the alerts read).
            #expect(metrics.value("switchboard_event_streams_open") == 1)
            #expect(metrics.value("switchboard_service_instances", ["service": "payment", "status": "passing"]) == 1)
            #expect(metrics.value("switchboard_service_instances", ["service": "db", "status": "critical"]) == 1)
            #expect(metrics.value("switchboard_service_instances", ["service": "db", "status": "passing"]) == 0)
            // The process: this test process, as Prometheus's own clients name its figures.
            #expect(metrics.value("process_resident_memory_bytes") ?? 0 > 1_000_000)
            #expect(metrics.value("process_open_fds") ?? 0 > 3)
            #expect(metrics.value("process_max_fds") ?? 0 >= metrics.value("process_open_fds") ?? .infinity)
            #expect(metrics.value("process_cpu_seconds_total") ?? 0 > 0)
            let started = try #require(metrics.value("process_start_time_seconds"))
            #expect(abs(started - Date().timeIntervalSince1970) < 24 * 3600)
            #expect(metrics.value("switchboard_cluster_view_age_seconds") == nil)

            let lint = try await Promtool.checkMetrics(text)
            #expect(lint.status == 0 && lint.output.isEmpty, "promtool check metrics: \(lint.output)")

            // A closed stream and a deregistered service leave the gauges.
            stream.close()
            #expect(try await http(.DELETE, instance).status == 200)
            let deadline = ContinuousClock.now + .seconds(10)
            var after = PrometheusSamples(parsing: "")
            repeat {
                after = PrometheusSamples(parsing: try await http(.GET, "\(agent.baseURL)/metrics").text)
                if after.value("switchboard_event_streams_open") == 0 { break }
                try await Task.sleep(for: .milliseconds(20))
            } while ContinuousClock.now < deadline
            #expect(after.value("switchboard_event_streams_open") == 0)
            #expect(after.named("switchboard_service_instances", ["service": "payment"]).isEmpty)
            #expect(after.value("switchboard_service_instances", ["service": "db", "status": "critical"]) == 1)
        }
    }

    @Test func theAgentProcessOnSQLitePassesPromtool() async throws {
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let agent = try await AgentProcess(dataDirectory: directory)
        #expect(
            try await http(
                .PUT, "\(agent.baseURL)/v1/services/payment/instances/p1", json: #"{"address": "10.0.0.1", "port": 80}"#
            ).status == 201)
        let text = try await http(.GET, "\(agent.baseURL)/metrics").text
        let metrics = PrometheusSamples(parsing: text)
        #expect(metrics.value("switchboard_store_commit_duration_seconds_count", ["store": "sqlite"]) == 1, "\(text)")
        #expect(metrics.value("switchboard_store_commit_changes_sum", ["store": "sqlite"]) == 1)
        // The agent's own process, started just now.
        let started = try #require(metrics.value("process_start_time_seconds"))
        #expect(abs(started - Date().timeIntervalSince1970) < 120)
        let lint = try await Promtool.checkMetrics(text)
        #expect(lint.status == 0 && lint.output.isEmpty, "promtool check metrics: \(lint.output)")
    }

    @Test func theAlertRulesAreValidAndFireOnTheirSeries() async throws {
        let docs = Self.root.appendingPathComponent("docs").path
        let check = try await Promtool.run(["check", "rules", "alerts.yml"], in: docs)
        #expect(check.status == 0, "promtool check rules: \(check.output)")
        let test = try await Promtool.run(["test", "rules", "alerts.test.yml"], in: docs)
        #expect(test.status == 0, "promtool test rules: \(test.output)")
    }
}

import Foundation
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The processes started by the demo with process id `demo` (they carry it in their environment).
func demoChildren(of demo: Int32) -> [Int32] {
    let marker = Array("SWITCHBOARD_PARENT_PID=\(demo)".utf8)
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap(Int32.init).filter { pid in
        guard let environment = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return false }
        return environment.split(separator: 0).contains { Array($0) == marker }
    }
}

/// Starts `switchboard demo` with `arguments` and waits until all twelve of its processes run (the two notification
/// instances are a sidecar and its Python process each).
func startDemo(_ arguments: [String]) async throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: SwitchboardBinary.executable(named: "switchboard"))
    process.arguments = ["demo"] + arguments
    process.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
    process.standardError = FileHandle(forWritingAtPath: "/dev/null")
    try process.run()
    let deadline = ContinuousClock.now + .seconds(30)
    while demoChildren(of: process.processIdentifier).count < 12 {
        guard ContinuousClock.now < deadline else {
            kill(process.processIdentifier, SIGKILL)
            throw TestFailure("the demo never started its twelve processes")
        }
        try await Task.sleep(for: .milliseconds(100))
    }
    return process
}

/// A process's command line and state, for a failure message.
func describe(_ pid: Int32) -> String {
    let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline").map {
        String(decoding: $0.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
    }
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8))?.split(separator: "\n")
        .filter { $0.hasPrefix("State") || $0.hasPrefix("PPid") }.joined(separator: ", ")
    return "\(pid) \(command ?? "?") [\(status ?? "?")]"
}

func waitUntilNoChildren(of demo: Int32, within limit: Duration) async throws -> [Int32] {
    let deadline = ContinuousClock.now + limit
    var left = demoChildren(of: demo)
    while !left.isEmpty, ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(100))
        left = demoChildren(of: demo)
    }
    return left
}

/// The order and payment stores agree: no cart charged twice, every charge's order confirmed, every confirmed order
/// charged, no saga left pending; and the shoppers kept shopping.
func expectBalancedBooks(_ summary: [String: Any]) {
    #expect(summary["doubleCharges"] as? Int == 0)
    let audit = summary["audit"] as? [String: Int] ?? [:]
    #expect(
        audit == ["doubleCharges": 0, "chargedButNotConfirmed": 0, "confirmedButNotCharged": 0, "pendingOrders": 0],
        "\(audit)")
    #expect((summary["userRequests"] as? Int ?? 0) > 200)
}

@Suite("switchboard demo, end to end", .serialized, .loadsTheMachine)
struct DemoTests {
    /// With ACLs on (deny by default): the shop, the gateway and the script run with their tokens.
    @Test func theDemoPlaysTheWholeScriptWithACLsOnWithoutAFailedUserRequestOrADoubleCharge() async throws {
        let run = try await runProgram(
            SwitchboardBinary.executable(named: "switchboard"), ["demo", "--acl", "--duration", "20", "--json"],
            timeout: .seconds(150))
        #expect(run.status == 0, "\(run.stderr)")
        let summary = try #require(
            try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stdout)")
        #expect(summary["failedUserRequests"] as? Int == 0, "\(run.stdout)")
        expectBalancedBooks(summary)
        // Declined payments happened, and were compensated (the order cancelled, the cart told): no failures.
        #expect((summary["paymentFailed"] as? Int ?? 0) > 0 && (summary["ordered"] as? Int ?? 0) > 0)
        // The killed instance: detected within its TTL and a bit, and nothing reached its address afterwards.
        #expect((summary["killDetectionSeconds"] as? Double ?? 99) < 3)
        #expect(summary["trafficToKilledAfterDetection"] as? Int == 0)
        // The new instance took traffic within 2 s of starting, and every live instance served.
        #expect((summary["newInstanceFirstTrafficSeconds"] as? Double ?? 99) <= 2)
        #expect(summary["everyLiveInstanceServed"] as? Bool == true)
        let instances = summary["instances"] as? [[String: Any]] ?? []
        #expect(instances.count == 9)
        #expect(instances.first { $0["id"] as? String == "order-1" }?["killed"] as? Bool == true)
        // The Python service took order's notifications through its sidecars, and lost a process to kill -9.
        #expect(instances.first { $0["id"] as? String == "notification-1" }?["killed"] as? Bool == true)
        #expect((summary["notificationsSent"] as? Int ?? 0) > 0)
        // ... and called payment through its sidecars' upstream listeners.
        #expect((summary["notificationCallsToPayment"] as? Int ?? 0) > 0)
        let events = (summary["events"] as? [[String: Any]] ?? []).compactMap { $0["event"] as? String }
        for expected in [
            "kill -9 order-1", "started order-4", "payment-1 answers", "kill -9 notification-1",
            "its sidecar deregistered notification-1", "payment-2 in maintenance", "agent stopped", "agent restarted",
        ] {
            #expect(events.contains { $0.hasPrefix(expected) }, "\(expected) in \(events)")
        }
    }

    @Test func theClusterDemoLosesAnAgentAndAnEtcdMemberWithoutAFailedUserRequestOrADoubleCharge() async throws {
        let run = try await runProgram(
            SwitchboardBinary.executable(named: "switchboard"), ["demo", "--cluster", "--duration", "25", "--json"],
            timeout: .seconds(180))
        #expect(run.status == 0, "\(run.stderr)")
        let summary = try #require(
            try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any], "\(run.stdout)")
        #expect(summary["failedUserRequests"] as? Int == 0, "\(run.stdout)")
        expectBalancedBooks(summary)
        #expect(summary["everyLiveInstanceServed"] as? Bool == true)
        let events = (summary["events"] as? [[String: Any]] ?? []).compactMap { $0["event"] as? String }
        for expected in [
            "cluster: 3 etcd members, 2 agents", "kill -9 order-1", "kill -9 notification-1", "kill -9 agent-1",
            "kill -9 etcd member",
            "writes through agent-2 still work",
        ] {
            #expect(events.contains { $0.hasPrefix(expected) }, "\(expected) in \(events)")
        }
    }

    @Test func interruptingTheDemoStopsEveryProcessItStarted() async throws {
        let demo = try await startDemo(["--duration", "120"])
        kill(demo.processIdentifier, SIGINT)
        let left = try await waitUntilNoChildren(of: demo.processIdentifier, within: .seconds(10))
        #expect(left == [], "still running: \(left.map(describe))")
        demo.waitUntilExit()
        #expect(demo.terminationStatus == 130)
    }

    @Test func killingTheDemoWithNineLeavesNoOrphan() async throws {
        let demo = try await startDemo(["--duration", "120"])
        kill(demo.processIdentifier, SIGKILL)
        demo.waitUntilExit()
        // Each child sees its parent gone within 200 ms and ends itself.
        let left = try await waitUntilNoChildren(of: demo.processIdentifier, within: .seconds(5))
        #expect(left == [], "orphans: \(left.map(describe))")
        for pid in left { kill(pid, SIGKILL) }
    }

    @Test func killingTheClusterDemoWithNineLeavesNoEtcdOrAgentBehind() async throws {
        let demo = try await startDemo(["--cluster", "--duration", "120"])
        kill(demo.processIdentifier, SIGKILL)
        demo.waitUntilExit()
        // The agents and services see their parent gone; each etcd member's watcher ends it within half a second.
        let left = try await waitUntilNoChildren(of: demo.processIdentifier, within: .seconds(5))
        #expect(left == [], "orphans: \(left.map(describe))")
        for pid in left { kill(pid, SIGKILL) }
    }
}

import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// What the chaos script measured.
struct ScriptFindings {
    var killDetection: Double?
    var newInstanceFirstTraffic: Double?
    var killedAfterDetection: Int?
}

/// The chaos script and the summary: what happens to the shop while shoppers check out, and what it showed.
extension DemoRunner {
    /// Plays the events at fixed shares of the run: a kill -9, a scale-up, a slow instance, a kill -9 of the Python
    /// service's process under its sidecar, a drain, an agent restart. Measures what the summary reports on.
    func playScript(from beginning: ContinuousClock.Instant, until deadline: ContinuousClock.Instant) async throws {
        let total = deadline - beginning
        func at(_ share: Double) async throws {
            let when = beginning + total * share
            if when > ContinuousClock.now { try await Task.sleep(until: when, clock: .continuous) }
        }
        try await at(0.15)
        let killedPort = snapshot.instances["order-1"]?.port ?? 0
        let killed = ContinuousClock.now
        // Marked first: the demo's own polling must not reach the dead address and count as traffic.
        markKilled("order-1")
        children.crash("order-1")
        record("kill -9 order-1")
        var counter: ConnectionCounter?
        while ContinuousClock.now - killed < .seconds(10) {
            // Only the agent's own word counts: a non-healthy status, or the instance gone (404). A lookup that
            // failed says nothing.
            var status: String?
            var unhealthy = false
            do throws(SwitchboardClientError) {
                let instance = try await agent.instance(ShopRole.order.serviceName, id: try! InstanceID("order-1"))
                status = instance.status.rawValue
                unhealthy = !instance.status.isHealthy
            } catch {
                unhealthy = error.status == .notFound
            }
            if unhealthy {
                let seconds = (ContinuousClock.now - killed).seconds
                findings.withLock { $0.killDetection = seconds }
                record(String(format: "the agent marked order-1 %@ after %.2fs", status ?? "gone", seconds))
                // From here on, anything that still reaches order-1's address is traffic to a dead instance.
                for _ in 0..<20 where counter == nil {
                    counter = try? ConnectionCounter(port: killedPort)
                    if counter == nil { try await Task.sleep(for: .milliseconds(25)) }
                }
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }

        try await at(0.30)
        let scaled = ContinuousClock.now
        try await startInstance("order", 4)
        record("started order-4")
        while ContinuousClock.now - scaled < .seconds(10) {
            if let port = snapshot.instances["order-4"]?.port,
                let stats = try? await getJSON("http://127.0.0.1:\(port)/stats", timeout: .milliseconds(500)),
                stats["requests"] as? Int ?? 0 > 0
            {
                let seconds = (ContinuousClock.now - scaled).seconds
                findings.withLock { $0.newInstanceFirstTraffic = seconds }
                record(String(format: "order-4 served its first request %.2fs after it started", seconds))
                break
            }
            try await Task.sleep(for: .milliseconds(50))
        }

        try await at(0.45)
        if let port = snapshot.instances["payment-1"]?.port {
            _ = try? await send(.POST, "http://127.0.0.1:\(port)/admin/latency", json: #"{"ms": 400}"#)
            record("payment-1 answers 400 ms slower: least-requests shifts calls to payment-2")
        }
        try await at(0.50)
        try await killNotification("notification-1")
        try await at(0.58)
        if let port = snapshot.instances["payment-1"]?.port {
            _ = try? await send(.POST, "http://127.0.0.1:\(port)/admin/latency", json: #"{"ms": 0}"#)
            record("payment-1 is fast again")
        }
        try await at(0.62)
        let payment2 = try! InstanceID("payment-2")
        _ = try? await agent.setMaintenance(
            ShopRole.payment.serviceName, id: payment2, enabled: true, reason: "demo: draining for a deploy")
        record("payment-2 in maintenance (drained): out of every lookup")
        try await at(0.72)
        _ = try? await agent.setMaintenance(ShopRole.payment.serviceName, id: payment2, enabled: false)
        record("payment-2 back from maintenance")

        try await at(0.80)
        if configuration.cluster {
            try await failClusterParts(at: at)
        } else {
            let stopped = ContinuousClock.now
            await children.stop("agent")
            record("agent stopped: callers keep going on their cached instances")
            let pause = Duration.seconds(min(2, total.seconds * 0.05))
            if ContinuousClock.now - stopped < pause {
                try await Task.sleep(until: stopped + pause, clock: .continuous)
            }
            try await startAgent(0)
            try await waitUntilHealthy([.cart: 1, .order: 3, .payment: 2], within: .seconds(10))
            record("agent restarted from its data directory; every instance healthy in it again")
        }

        if ContinuousClock.now < deadline { try await Task.sleep(until: deadline, clock: .continuous) }
        if let counter {
            findings.withLock { $0.killedAfterDetection = counter.count }
            counter.stop()
        }
    }

    /// Kills notification instance `id`'s Python process (not its sidecar) with -9; the sidecar sees its child exit,
    /// deregisters it at once and exits, and order's notifications go to the other instance.
    private func killNotification(_ id: String) async throws {
        guard let port = snapshot.instances[id]?.port,
            let pid = (try? await getJSON("http://127.0.0.1:\(port)/stats", timeout: .seconds(1)))?["pid"] as? Int
        else {
            record("\(id) did not say its process id: not killed")
            return
        }
        let killed = ContinuousClock.now
        markKilled(id)
        kill(Int32(pid), SIGKILL)
        record("kill -9 \(id) (the Python process under its sidecar)")
        while ContinuousClock.now - killed < .seconds(5) {
            // Only the agent's 404 counts: a lookup that failed says nothing.
            do throws(SwitchboardClientError) {
                _ = try await agent.instance(try! ServiceName("notification"), id: try! InstanceID(id))
            } catch {
                if error.status == .notFound {
                    let seconds = (ContinuousClock.now - killed).seconds
                    record(String(format: "its sidecar deregistered %@ after %.2fs", id, seconds))
                    return
                }
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Cluster mode's part of the script: kill -9 of the first agent (the one everything registered through), then of
    /// the etcd leader; the shop keeps going on the other agent and the two remaining members.
    private func failClusterParts(at: (Double) async throws -> Void) async throws {
        children.crash(agentName(0))
        record("kill -9 \(agentName(0)): its checks move to \(agentName(1)), the services' heartbeats and watches too")
        try await waitUntilHealthy([.cart: 1, .order: 3, .payment: 2], within: .seconds(10))
        try await at(0.88)
        let leader = await etcdLeader() ?? 0
        children.crash("etcd-n\(leader + 1)")
        record("kill -9 etcd member n\(leader + 1) (the leader): two of three keep the quorum")
        try await waitUntilHealthy([.cart: 1, .order: 3, .payment: 2], within: .seconds(10))
        let write = try? await agent.setMaintenance(
            ShopRole.payment.serviceName, id: try! InstanceID("payment-2"), enabled: false)
        record(
            write == nil
                ? "a write through \(agentName(1)) failed after the etcd member died"
                : "writes through \(agentName(1)) still work on two etcd members")
    }

    /// The summary, after a last look at every instance and at the payment ledger.
    func summarise() async throws -> DemoSummary {
        try await Task.sleep(for: .milliseconds(300))
        await refreshInstances()
        let run = snapshot
        let audit = try? ShopAudit.read(
            orders: "\(storeDirectory)/order/orders.sqlite", payments: "\(storeDirectory)/payment/payments.sqlite")
        let reports = run.instances.keys.sorted().map { id in
            let instance = run.instances[id]!
            return DemoSummary.InstanceReport(
                service: instance.service, id: id, requests: instance.requests, killed: run.killed.contains(id))
        }
        let found = findings.withLock { $0 }
        return DemoSummary(
            durationSeconds: (configuration.duration).seconds, userRequests: run.userRequests,
            failedUserRequests: run.failed, ordered: run.ordered, paymentFailed: run.paymentFailed, instances: reports,
            events: run.events, killDetectionSeconds: found.killDetection,
            trafficToKilledAfterDetection: found.killedAfterDetection,
            newInstanceFirstTrafficSeconds: found.newInstanceFirstTraffic,
            notificationsSent: Self.notifications(in: run),
            notificationCallsToPayment: Self.notificationCallsToPayment(in: run).answered,
            notificationCallsToPaymentFailed: Self.notificationCallsToPayment(in: run).failed,
            doubleCharges: audit?.doubleCharges,
            audit: audit,
            everyLiveInstanceServed: reports.filter { !$0.killed }.allSatisfy { $0.requests > 0 })
    }
}

/// Accepts connections on a port and counts them (closing each): bound to a dead instance's address, it shows
/// whether anything still sends there.
final class ConnectionCounter: Sendable {
    private let descriptor: Int32
    private let accepted = Atomic(0)

    init(port: Int) throws {
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var reuse: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard bound, listen(descriptor, 64) == 0 else {
            close(descriptor)
            throw DemoError("cannot listen on 127.0.0.1:\(port)")
        }
        // A thread of its own for the blocking accepts; it ends when stop() closes the socket.
        Thread.detachNewThread { [self] in
            while true {
                let connection = accept(descriptor, nil, nil)
                guard connection >= 0 else { return }
                accepted.add(1, ordering: .relaxed)
                close(connection)
            }
        }
    }

    var count: Int { accepted.load(ordering: .relaxed) }

    func stop() {
        shutdown(descriptor, Int32(SHUT_RDWR))
        close(descriptor)
    }
}

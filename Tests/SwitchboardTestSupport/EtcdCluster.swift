import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A real etcd cluster on loopback (Debian's `etcd`, as `.ci/run` installs it): one or three members, each a
/// process with its own ports and data directory, that a test can kill with -9 and start again.
///
/// Each member runs under a small shell that kills it when the test process is gone, so a crashed test run leaves
/// no etcd behind.
public final class EtcdCluster: Sendable {
    public struct Member: Sendable {
        public let name: String
        public let clientURL: String
        public let peerURL: String
        let dataDirectory: String
        let pidFile: String
    }

    public let members: [Member]
    private let initialCluster: String
    /// More etcd flags for every member (`--max-request-bytes`, say).
    private let extraArguments: [String]
    private let root: String
    private let wrappers = Mutex<[String: Process]>([:])

    /// The members' client URLs, as agents take them (`--etcd-endpoints`).
    public var endpoints: [String] { members.map(\.clientURL) }

    /// Starts `size` members and waits until the cluster has a leader.
    public static func start(size: Int = 3, arguments: [String] = []) async throws -> EtcdCluster {
        let cluster = try EtcdCluster(size: size, arguments: arguments)
        for member in cluster.members.indices {
            try cluster.launch(member)
        }
        try await cluster.waitUntilHealthy()
        return cluster
    }

    private init(size: Int, arguments: [String]) throws {
        extraArguments = arguments
        root = try makeTemporaryDirectory()
        var members: [Member] = []
        for number in 1...size {
            let client = try freePort()
            var peer = try freePort()
            while peer == client { peer = try freePort() }
            members.append(
                Member(
                    name: "n\(number)", clientURL: "http://127.0.0.1:\(client)", peerURL: "http://127.0.0.1:\(peer)",
                    dataDirectory: "\(root)/n\(number)", pidFile: "\(root)/n\(number).pid"))
        }
        self.members = members
        initialCluster = members.map { "\($0.name)=\($0.peerURL)" }.joined(separator: ",")
    }

    private func launch(_ position: Int) throws {
        let member = members[position]
        let arguments =
            ([
                "--name", member.name, "--data-dir", member.dataDirectory,
                "--listen-client-urls", member.clientURL, "--advertise-client-urls", member.clientURL,
                "--listen-peer-urls", member.peerURL, "--initial-advertise-peer-urls", member.peerURL,
                "--initial-cluster", initialCluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "switchboard-test",
                // Quick elections: a test that kills the leader should not wait seconds for the next one.
                "--heartbeat-interval", "50", "--election-timeout", "500",
                "--log-level", "error",
            ] + extraArguments).map { "'\($0)'" }.joined(separator: " ")
        // etcd in the background; the shell stays to kill it once the test process (its parent) is gone.
        let script = """
            etcd \(arguments) >>'\(root)/\(member.name).log' 2>&1 &
            child=$!
            echo $child > '\(member.pidFile)'
            while kill -0 \(getpid()) 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 0.5; done
            kill -9 $child 2>/dev/null
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try? FileManager.default.removeItem(atPath: member.pidFile)
        try process.run()
        wrappers.withLock { $0[member.name] = process }
    }

    /// Kills member `position` with SIGKILL (its data stays, for ``restart(_:)``).
    public func kill(_ position: Int) async {
        let member = members[position]
        if let pid = await pid(of: member) {
            _ = Glibc.kill(pid, SIGKILL)
            // Until the process is gone, so the next step sees a dead member.
            for _ in 0..<100 where Glibc.kill(pid, 0) == 0 {
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
        try? FileManager.default.removeItem(atPath: member.pidFile)
    }

    /// Starts member `position` again on its data, after ``kill(_:)``.
    public func restart(_ position: Int) throws {
        try launch(position)
    }

    /// Waits until every member answers `/health` with a leader.
    public func waitUntilHealthy(timeout: Duration = .seconds(30)) async throws {
        let deadline = ContinuousClock.now + timeout
        for member in members {
            while !(await Self.isHealthy(member)) {
                guard ContinuousClock.now < deadline else {
                    throw EtcdClusterError(
                        "etcd member \(member.name) at \(member.clientURL) is not healthy after \(timeout): "
                            + log(of: member).suffix(2000))
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// The position of the member that leads now (nil when no member answers or none leads).
    public func leader() async -> Int? {
        var ids: [Int: String] = [:]
        var leader: String?
        for (position, member) in members.enumerated() {
            guard
                let status = try? await http(
                    .POST, member.clientURL + "/v3/maintenance/status", json: "{}", timeout: .seconds(2))
            else { continue }
            ids[position] = (status.object["header"] as? [String: Any])?["member_id"] as? String
            leader = leader ?? status.object["leader"] as? String
        }
        return ids.first { $0.value == leader }?.key
    }

    /// Compacts etcd's history up to its current revision: watches that resume from before it are refused.
    @discardableResult
    public func compact() async throws -> Int64 {
        for candidate in members {
            guard
                let answer = try? await http(
                    .POST, candidate.clientURL + "/v3/kv/range", json: #"{"key": "AA=="}"#, timeout: .seconds(2)),
                let header = answer.object["header"] as? [String: Any],
                let text = header["revision"] as? String, let value = Int64(text)
            else { continue }
            _ = try await http(
                .POST, candidate.clientURL + "/v3/kv/compaction", json: #"{"revision": "\#(value)", "physical": true}"#,
                timeout: .seconds(10))
            return value
        }
        throw EtcdClusterError("no etcd member answered to compact")
    }

    /// Member `position`'s log so far (for failure messages).
    public func log(of member: Member) -> String {
        (try? String(contentsOfFile: "\(root)/\(member.name).log", encoding: .utf8)) ?? ""
    }

    /// Kills every member and removes the data.
    public func stop() async {
        for position in members.indices {
            await kill(position)
        }
        try? FileManager.default.removeItem(atPath: root)
    }

    private func pid(of member: Member) async -> pid_t? {
        for _ in 0..<50 {
            if let text = try? String(contentsOfFile: member.pidFile, encoding: .utf8),
                let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                return pid
            }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    private static func isHealthy(_ member: Member) async -> Bool {
        guard let port = member.clientURL.split(separator: ":").last.flatMap({ Int($0) }) else { return false }
        let answer = await LoopbackSocket.exchange(
            [Array("GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)], port: port)
        return String(decoding: answer, as: UTF8.self).contains(#""health":"true""#)
    }
}

public struct EtcdClusterError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Runs `body` with a fresh etcd cluster of `size` members, stopped afterwards.
public func withEtcdCluster<T>(
    size: Int = 3, arguments: [String] = [], _ body: (EtcdCluster) async throws -> T
) async throws -> T {
    let cluster = try await EtcdCluster.start(size: size, arguments: arguments)
    do {
        let result = try await body(cluster)
        await cluster.stop()
        return result
    } catch {
        await cluster.stop()
        throw error
    }
}

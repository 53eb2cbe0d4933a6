import AsyncHTTPClient
import Foundation
import NIOCore
import ProcessSupport
import SwitchboardCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A `switchboard-example backend` child process: an HTTP backend that registers itself through the client
/// library. Killed with SIGKILL when the test is done with it, whatever happened.
public final class ExampleBackend: @unchecked Sendable {
    public let process = Process()
    public let port: Int

    public init(
        agents: [String], service: String = "order", ttlMilliseconds: Int = 1000, drainMilliseconds: Int = 800,
        tags: [String] = [], id: String? = nil
    )
        async throws
    {
        process.executableURL = URL(fileURLWithPath: SwitchboardBinary.executable(named: "switchboard-example"))
        process.arguments =
            [
                "backend", "--service", service, "--ttl-milliseconds", "\(ttlMilliseconds)", "--drain-milliseconds",
                "\(drainMilliseconds)",
            ] + agents.flatMap { ["--agent", $0] } + tags.flatMap { ["--tag", $0] } + (id.map { ["--id", $0] } ?? [])
        process.environment = ProcessInfo.processInfo.environment.merging(ParentWatch.asChild) { $1 }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try process.run()
        // It prints "listening PORT" once bound. The read blocks, so it runs on a Dispatch thread: on the
        // concurrency pool (two threads here) a few of them at once would starve every other test.
        let reader = output.fileHandleForReading
        let text = await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                var line = Data()
                while let byte = try? reader.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8) {
                    line += byte
                }
                continuation.resume(returning: String(decoding: line, as: UTF8.self))
            }
        }
        guard text.hasPrefix("listening "), let port = Int(text.dropFirst("listening ".count)) else {
            kill(process.processIdentifier, SIGKILL)
            throw TestFailure("the example backend did not report its port: '\(text)'")
        }
        self.port = port
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// The calls it has answered, by its own count.
    public func answeredCalls() async throws -> Int {
        let response = try await HTTPClient.shared.execute(
            HTTPClientRequest(url: "http://127.0.0.1:\(port)/count"), timeout: .seconds(5))
        let body = try await response.body.collect(upTo: 1024)
        return Int(String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
    }

    /// Sends `signal` and waits for the process to end.
    public func stop(with signal: Int32) async {
        kill(process.processIdentifier, signal)
        while process.isRunning { try? await Task.sleep(for: .milliseconds(10)) }
    }
}

/// Listens where a killed backend listened and notes every connection that still arrives, resetting each at once:
/// the dead backend's own log of the calls sent to it after its death, which the client cannot fake. Without
/// `resetConnections`, connections are held open unanswered (a hung server).
public final class ArrivalRecorder: Sendable {
    public let port: Int
    private let descriptor: Int32
    private let held = Mutex<[Int32]>([])
    private let arrivals = Mutex<[ContinuousClock.Instant]>([])
    private let stopped = Atomic(false)
    private let finished = DispatchSemaphore(value: 0)

    /// Binds 127.0.0.1:`port` (the previous owner's connections may still be closing) and starts accepting.
    public init(port: Int, resetConnections: Bool = true) throws {
        self.port = port
        descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var reuse: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        guard LoopbackSocket.bind(descriptor, port: port) != nil, listen(descriptor, 128) == 0 else {
            close(descriptor)
            throw TestFailure("could not listen on the dead backend's port \(port): errno \(errno)")
        }
        let listener = descriptor
        // A blocking accept loop on a Dispatch thread, polled so that stop() ends it.
        DispatchQueue.global().async { [self] in
            var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            while !stopped.load(ordering: .relaxed) {
                guard poll(&poller, 1, 50) > 0 else { continue }
                let connection = accept(listener, nil, nil)
                guard connection >= 0 else { continue }
                arrivals.withLock { $0.append(.now) }
                guard resetConnections else {
                    held.withLock { $0.append(connection) }
                    continue
                }
                // Close with a reset, as a port with nothing behind it would answer.
                var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
                setsockopt(connection, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
                close(connection)
            }
            finished.signal()
        }
    }

    /// The connections that arrived so far.
    public var arrived: [ContinuousClock.Instant] { arrivals.withLock { $0 } }

    /// Stops accepting and releases the port.
    public func stop() {
        stopped.store(true, ordering: .relaxed)
        finished.wait()
        for connection in held.withLock({ $0 }) { close(connection) }
        close(descriptor)
    }
}

import AsyncHTTPClient
import Logging
import NIOHTTP1
import NIOPosix
import ServiceLifecycle
import SwitchboardClient
import SwitchboardCore
import Synchronization
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// `switchboard sidecar`: registration, health checks and supervision for a service that knows nothing of
/// Switchboard (any language, a database, a broker).
///
/// A swift-service-lifecycle `Service`. It starts the service's command (when given), registers the instance with a
/// TTL check, probes the service every interval with the client library's prober, and reports each outcome as a
/// heartbeat carrying the status (after the thresholds), so passing, warning and critical reach the registry as they
/// happen; a heartbeat the agent answers 404 (it lost the instance) registers it again.
///
/// How it ends:
/// - **SIGTERM or SIGINT** (graceful shutdown): maintenance on, so callers stop picking the instance; a wait of
///   ``SidecarConfiguration/drainTime`` for calls under way; deregistration; then SIGTERM to the child (SIGKILL after
///   ``SidecarConfiguration/stopTimeout``). The sidecar exits with the child's status.
/// - **The child exits**: the instance is deregistered at once, and the sidecar exits with the child's status.
/// - **The sidecar is killed**: nothing deregisters, and the instance expires by its TTL (three probe intervals).
///
/// SIGHUP, SIGUSR1 and SIGUSR2 are passed on to the child.
public final class Sidecar: Service, Sendable {
    public let configuration: SidecarConfiguration
    private let logger: Logger
    private let status = Mutex<Int32?>(nil)

    public init(configuration: SidecarConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    /// The child's exit status once ``run()`` has returned (nil without a command).
    public var exitStatus: Int32? { status.withLock { $0 } }

    /// What ended the sidecar's watch.
    private enum Ending {
        case childExited(Int32)
        case shutdown
        case cancelled
    }

    public func run() async throws {
        let definition = try configuration.probeDefinition()
        let child = configuration.command.isEmpty ? nil : try SupervisedChild(command: configuration.command)
        if let child {
            logger.info(
                "started the service", metadata: ["pid": "\(child.pid)", "command": "\(configuration.command)"])
        }
        let group = MultiThreadedEventLoopGroup.singleton
        let httpClient = HTTPClient(
            eventLoopGroupProvider: .shared(group),
            configuration: Prober.httpClientConfiguration(maximumConnectionsPerHost: 2))
        let connection = AgentConnection(configuration: configuration.agents, logger: logger)
        let agent = AgentClient(connection: connection)
        let prober = Prober(httpClient: httpClient, eventLoopGroup: group)

        let ending: Ending = await withTaskGroup(of: Ending?.self) { tasks in
            tasks.addTask {
                await self.report(agent: agent, prober: prober, definition: definition)
                return nil
            }
            if let child {
                tasks.addTask { await child.exited().map(Ending.childExited) }
                tasks.addTask {
                    await Self.passSignals(to: child)
                    return nil
                }
            }
            tasks.addTask {
                do {
                    try await gracefulShutdown()
                    return .shutdown
                } catch {
                    return .cancelled
                }
            }
            var ending: Ending = .cancelled
            for await outcome in tasks {
                if let outcome {
                    ending = outcome
                    break
                }
            }
            tasks.cancelAll()
            return ending
        }

        switch ending {
        case .childExited(let code):
            logger.warning("the service exited; deregistering", metadata: ["status": "\(code)"])
            await deregister(agent)
            status.withLock { $0 = code }
        case .shutdown:
            await drain(agent)
            await deregister(agent)
            if let child {
                let code = await child.stop(timeout: configuration.stopTimeout)
                logger.info("the service stopped", metadata: ["status": "\(code)"])
                status.withLock { $0 = code }
            }
        case .cancelled:
            if let child { status.withLock { $0 = child.exitStatus } }
            if let child, child.exitStatus == nil {
                let code = await child.stop(timeout: configuration.stopTimeout)
                status.withLock { $0 = code }
            }
        }
        try? await connection.shutdown()
        try? await httpClient.shutdown()
    }

    /// Registers, then probes and heartbeats every interval until cancelled.
    private func report(agent: AgentClient, prober: Prober, definition: CheckDefinition) async {
        var registered = false
        var thresholds = ProbeThresholds(
            successesBeforePassing: configuration.successesBeforePassing,
            failuresBeforeCritical: configuration.failuresBeforeCritical)
        var attempt = 0
        let backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(2))
        while !Task.isCancelled {
            let started = ContinuousClock.now
            if !registered {
                do {
                    _ = try await agent.register(
                        configuration.registration, service: configuration.service, id: configuration.id)
                    registered = true
                    attempt = 0
                    logger.info(
                        "registered",
                        metadata: ["service": "\(configuration.service)", "id": "\(configuration.id)"])
                } catch {
                    logger.warning("registration failed, retrying", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: backoff.delay(forAttempt: attempt))
                    attempt += 1
                    continue
                }
            }
            let (observed, output) = await prober.probe(definition)
            guard !Task.isCancelled else { return }
            let (reported, changed) = thresholds.record(observed)
            if changed {
                logger.info("the service is \(reported)", metadata: ["output": "\(output)"])
            }
            do {
                _ = try await agent.heartbeat(
                    configuration.service, id: configuration.id, status: reported, output: output,
                    timeout: configuration.interval)
            } catch let error where error.code == .refused && error.status == .notFound {
                logger.info("the agent does not know the instance any more; registering again")
                registered = false
                continue
            } catch {
                logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(until: started + configuration.interval)
        }
    }

    /// Maintenance on, then the drain wait: callers following the service stop picking it within milliseconds.
    private func drain(_ agent: AgentClient) async {
        do {
            _ = try await agent.setMaintenance(
                configuration.service, id: configuration.id, enabled: true, reason: "the sidecar is stopping")
            logger.info("draining", metadata: ["for": "\(configuration.drainTime)"])
            try? await Task.sleep(for: configuration.drainTime)
        } catch {
            logger.warning("could not drain", metadata: ["error": "\(error)"])
        }
    }

    private func deregister(_ agent: AgentClient) async {
        do {
            _ = try await agent.deregister(configuration.service, id: configuration.id)
            logger.info("deregistered")
        } catch {
            logger.warning("could not deregister", metadata: ["error": "\(error)"])
        }
    }

    /// Passes SIGHUP, SIGUSR1 and SIGUSR2 on to the child until cancelled.
    private static func passSignals(to child: SupervisedChild) async {
        let signals = await UnixSignalsSequence(trapping: .sighup, .sigusr1, .sigusr2)
        for await signal in signals {
            child.send(signal.rawValue)
        }
    }
}

/// The agent's threshold rule, applied to the sidecar's own probes: a status other than the one reported is
/// reported after enough probes in a row say so (warning at once).
struct ProbeThresholds: Sendable {
    let successesBeforePassing: Int
    let failuresBeforeCritical: Int
    private(set) var reported: HealthStatus = .critical
    private var successes = 0
    private var failures = 0

    init(successesBeforePassing: Int, failuresBeforeCritical: Int) {
        self.successesBeforePassing = max(1, successesBeforePassing)
        self.failuresBeforeCritical = max(1, failuresBeforeCritical)
    }

    /// Records one probe; returns the status to report and whether it changed.
    mutating func record(_ observed: HealthStatus) -> (HealthStatus, Bool) {
        let before = reported
        switch observed {
        case .passing:
            successes += 1
            failures = 0
            if reported != .passing, successes >= successesBeforePassing { reported = .passing }
        case .critical:
            failures += 1
            successes = 0
            if reported != .critical, failures >= failuresBeforeCritical { reported = .critical }
        case .warning, .maintenance:
            successes = 0
            failures = 0
            reported = .warning
        }
        return (reported, reported != before)
    }
}

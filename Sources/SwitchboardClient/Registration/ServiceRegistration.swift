import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import SwitchboardCore

/// Registers this process as an instance of a service for as long as it runs, and takes it out cleanly.
///
/// A swift-service-lifecycle `Service`. On start it registers (retrying with backoff until an agent takes it),
/// then heartbeats its TTL check at a third of the TTL; a heartbeat answered 404 (the agent lost the instance,
/// or this is another agent) registers again. On graceful shutdown it drains: it puts the instance in maintenance,
/// so callers following the service stop picking it within milliseconds, waits ``Configuration/drainTime`` for the
/// calls under way, then deregisters.
///
/// Put it after the process's HTTP server in the `ServiceGroup`: services stop in reverse order, so the drain
/// happens while the server still answers.
public final class ServiceRegistration: Service, Sendable {
    /// What to register and how to leave.
    public struct Configuration: Sendable {
        public var service: ServiceName
        public var id: InstanceID
        /// The address callers use to reach this process.
        public var address: String
        public var port: Int
        public var tags: [String]
        public var meta: [String: String]
        public var weight: Int
        /// The TTL of the instance's heartbeat check; heartbeats go every third of it.
        public var ttl: Duration
        /// Further checks the agent runs itself (an HTTP `/health` check, say).
        public var extraChecks: [CheckRequest]
        /// How long the instance stays in maintenance before it deregisters on shutdown.
        public var drainTime: Duration
        /// Waits between failed registration attempts.
        public var retryBackoff: Backoff

        public init(
            service: ServiceName, id: InstanceID, address: String, port: Int, tags: [String] = [],
            meta: [String: String] = [:], weight: Int = 1, ttl: Duration = .seconds(3),
            extraChecks: [CheckRequest] = [],
            drainTime: Duration = .seconds(2),
            retryBackoff: Backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(2))
        ) {
            self.service = service
            self.id = id
            self.address = address
            self.port = port
            self.tags = tags
            self.meta = meta
            self.weight = weight
            self.ttl = ttl
            self.extraChecks = extraChecks
            self.drainTime = drainTime
            self.retryBackoff = retryBackoff
        }
    }

    public let connection: AgentConnection
    public let configuration: Configuration
    private let agent: AgentClient
    private let logger: Logger

    public init(connection: AgentConnection, configuration: Configuration, logger: Logger? = nil) {
        self.connection = connection
        self.agent = AgentClient(connection: connection)
        self.configuration = configuration
        self.logger = logger ?? Logger(label: "switchboard.registration", factory: { _ in SwiftLogNoOpLogHandler() })
    }

    /// The registration body.
    var registration: RegistrationRequest {
        var ttlCheck = CheckRequest(type: "ttl")
        ttlCheck.ttl = "\(max(1, configuration.ttl.nanoseconds / 1_000_000))ms"
        return RegistrationRequest(
            address: configuration.address, port: configuration.port, tags: configuration.tags,
            meta: configuration.meta, weight: configuration.weight, checks: [ttlCheck] + configuration.extraChecks)
    }

    /// Registers, heartbeats until graceful shutdown, then drains and deregisters.
    public func run() async throws {
        do {
            try await cancelWhenGracefulShutdown {
                try await self.register()
                try await self.heartbeat()
            }
        } catch is CancellationError {
            // Graceful shutdown (or cancellation): leave below.
        }
        guard !Task.isCancelled else { return }
        await leave()
    }

    /// Registers, retrying with backoff until an agent accepts; a refusal (bad registration) is thrown.
    func register() async throws {
        var attempt = 0
        while true {
            try Task.checkCancellation()
            do {
                // Registered on any 2xx: an answer this client cannot read (a newer agent's) is still a registration.
                let answer = try await agent.call(
                    AgentRequest.register(registration, service: configuration.service, id: configuration.id)
                        .ignoringAnswer())
                logger.info(
                    "registered",
                    metadata: [
                        "service": "\(configuration.service)", "id": "\(configuration.id)", "agent": "\(answer.agent)",
                    ])
                return
            } catch {
                // A refusal (a bad registration) is final; an agent out of reach is waited for.
                guard error.code == .agentUnreachable || error.code == .timedOut else { throw error }
                logger.warning("registration failed, retrying", metadata: ["error": "\(error)"])
            }
            try await Task.sleep(for: configuration.retryBackoff.delay(forAttempt: attempt))
            attempt += 1
        }
    }

    /// Heartbeats every third of the TTL until cancelled; re-registers when the agent no longer knows the instance.
    private func heartbeat() async throws {
        // The first heartbeat goes at once: a TTL check starts critical, and the instance should not wait a third of
        // the TTL to be called.
        var first = true
        while true {
            if !first { try await Task.sleep(for: configuration.ttl / 3) }
            first = false
            do {
                _ = try await agent.heartbeat(
                    configuration.service, id: configuration.id, timeout: configuration.ttl / 3)
            } catch let error where error.code == .refused && error.status == .notFound {
                logger.info("the agent does not know this instance any more; registering again")
                // A refusal of the registration itself ends the heartbeats: retrying it would not help.
                try await register()
            } catch let error where error.code == .refused {
                logger.warning("the agent refused a heartbeat", metadata: ["error": "\(error)"])
            } catch {
                // No agent answered: keep trying at the same pace; the connection moves on to another agent.
                logger.warning("heartbeat failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Drains (maintenance, then a wait) and deregisters; failures are logged, as the process is leaving anyway.
    private func leave() async {
        do throws(SwitchboardClientError) {
            _ = try await agent.call(
                AgentRequest.maintenance(configuration.service, id: configuration.id, enabled: true, reason: "draining")
                    .ignoringAnswer())
            logger.info("draining", metadata: ["for": "\(configuration.drainTime)"])
            try? await Task.sleep(for: configuration.drainTime)
        } catch let error where error.code == .refused && error.status == .notFound {
            // The agent no longer knows the instance: nobody is sending it calls through the registry.
        } catch let error where error.code == .refused {
            // Refused for another reason: the calls under way still deserve their drain.
            logger.warning("the agent refused the drain", metadata: ["error": "\(error)"])
            try? await Task.sleep(for: configuration.drainTime)
        } catch {
            logger.warning(
                "could not leave the registry cleanly; the TTL check will expire", metadata: ["error": "\(error)"])
            return
        }
        do throws(SwitchboardClientError) {
            _ = try await agent.call(
                AgentRequest.deregister(configuration.service, id: configuration.id).ignoringAnswer())
            logger.info("deregistered", metadata: ["service": "\(configuration.service)", "id": "\(configuration.id)"])
        } catch let error where error.code == .refused {
            logger.info(
                "already deregistered", metadata: ["service": "\(configuration.service)", "id": "\(configuration.id)"])
        } catch {
            logger.warning(
                "could not leave the registry cleanly; the TTL check will expire", metadata: ["error": "\(error)"])
        }
    }
}

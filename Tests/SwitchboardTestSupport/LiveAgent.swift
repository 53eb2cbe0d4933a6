import Logging
import NIOCore
import ServiceLifecycle
import SwitchboardAgent
import SwitchboardCatalog
import SwitchboardCore
import SwitchboardDNS

/// A running in-process agent: its base URL and its catalog.
public struct LiveAgent: Sendable {
    public let baseURL: String
    public let catalog: Catalog
    /// The DNS port (UDP and TCP), when DNS is on.
    public let dnsPort: Int?
}

/// Serves `store` through the real agent application on a free port for the duration of `body`, then shuts the
/// application down gracefully.
public func withLiveAgent<T: Sendable>(
    store: any CatalogStore = InMemoryCatalogStore(),
    configuration: AgentConfiguration = AgentConfiguration(
        httpPort: 0, storage: .memory, dns: DNSConfiguration(port: 0)),
    _ body: @Sendable (LiveAgent) async throws -> T
) async throws -> T {
    var logger = Logger(label: "test.agent")
    logger.logLevel = .warning
    let catalog = try await Catalog.load(from: store)
    let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
    let (dnsPorts, dnsPortSink) = AsyncStream.makeStream(of: Int.self)
    let application = Agent.makeApplication(
        catalog: catalog,
        storeDescription: "memory",
        configuration: configuration,
        logger: logger,
        acls: AccessControl(configuration: configuration.acl, store: InMemoryACLStore(), logger: logger),
        onServerRunning: { address in portSink.yield(address?.port ?? 0) },
        onDNSListening: { port in dnsPortSink.yield(port) }
    )
    let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [application], logger: logger))
    return try await serving(
        group,
        until: { () async throws -> LiveAgent in
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else { throw TestFailure("the agent never reported its port") }
            var dnsPort: Int?
            if configuration.dns != nil {
                var dnsIterator = dnsPorts.makeAsyncIterator()
                dnsPort = await dnsIterator.next()
            }
            return LiveAgent(baseURL: "http://127.0.0.1:\(port)", catalog: catalog, dnsPort: dnsPort)
        }, body)
}

/// Runs `group` while `body` runs, handing it what `ready` returns once the services are up; then shuts the group
/// down gracefully, whether `body` returned or threw.
public func serving<Ready: Sendable, T: Sendable>(
    _ group: ServiceGroup, until ready: () async throws -> Ready, _ body: (Ready) async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        do {
            let result = try await body(try await ready())
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return result
        } catch {
            await group.triggerGracefulShutdown()
            try? await tasks.waitForAll()
            throw error
        }
    }
}

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

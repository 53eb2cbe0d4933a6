import Logging
import NIOCore
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import Synchronization

/// The plain TCP mode of an ``UpstreamProxy``: each accepted connection goes to one healthy instance of a service,
/// its bytes carried both ways as they come, for protocols the proxy does not speak (databases, brokers).
///
/// The instance is picked per connection by the gateway's ``UpstreamSelector`` (the client library's balancing,
/// outlier ejection and circuit breakers); a connection that cannot be made counts against the instance and
/// another is tried. Once connected, the proxy knows nothing of requests: a connection that fails later is not
/// retried, since bytes may already have reached the instance. Each side's end of stream is passed on as a
/// half-close, so a protocol that closes its sending side and still reads the answer works; reading from one side
/// stops while the other cannot take more (NIO's async channels hold reading past their buffer's high mark).
struct TCPForwarder: Sendable {
    typealias Connection = NIOAsyncChannel<ByteBuffer, ByteBuffer>

    let service: ServiceName
    /// The bound port.
    let port: Int
    private let server: NIOAsyncChannel<Connection, Never>
    private let selector: UpstreamSelector
    private let connectTimeout: Duration
    /// Instances tried after the first one could not be connected to.
    private let connectRetries: Int
    private let logger: Logger
    private let connections = ConnectionCount()

    /// Binds `host:port` (0 picks a free port); nothing is accepted before ``run(grace:)``.
    static func bind(
        service: ServiceName, host: String, port: Int, selector: UpstreamSelector, connectTimeout: Duration,
        connectRetries: Int, logger: Logger
    ) async throws -> TCPForwarder {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try Connection(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(isOutboundHalfClosureEnabled: true))
                }
            }
        return TCPForwarder(
            service: service, port: server.channel.localAddress?.port ?? port, server: server, selector: selector,
            connectTimeout: connectTimeout, connectRetries: connectRetries, logger: logger)
    }

    private init(
        service: ServiceName, port: Int, server: NIOAsyncChannel<Connection, Never>, selector: UpstreamSelector,
        connectTimeout: Duration, connectRetries: Int, logger: Logger
    ) {
        self.service = service
        self.port = port
        self.server = server
        self.selector = selector
        self.connectTimeout = connectTimeout
        self.connectRetries = connectRetries
        self.logger = logger
    }

    /// Stops accepting; ``run(grace:)`` then waits for the connections under way.
    func stopAccepting() {
        server.channel.close(promise: nil)
    }

    /// Accepts and forwards connections until ``stopAccepting()``; then gives the connections under way `grace` to
    /// end, and cuts the rest.
    func run(grace: Duration) async {
        await withDiscardingTaskGroup { tasks in
            do {
                try await server.executeThenClose { inbound in
                    for try await caller in inbound {
                        connections.opened()
                        tasks.addTask {
                            defer { connections.closed() }
                            await forward(caller)
                        }
                    }
                }
            } catch {
                logger.debug("the TCP listener ended", metadata: ["service": "\(service)", "error": "\(error)"])
            }
            tasks.addTask {
                try? await Task.sleep(for: grace)
                connections.giveUp()
            }
            await connections.untilNoneOpen()
            tasks.cancelAll()
        }
    }

    /// Connects `caller` to an instance and carries its bytes until both sides are done; a caller no instance can
    /// take is closed at once.
    private func forward(_ caller: Connection) async {
        guard let (upstream, instance) = await connectToInstance(for: caller.channel.eventLoop) else {
            try? await caller.executeThenClose { _, _ in }
            return
        }
        let opened = connections.total
        logger.debug(
            "forwarding a connection",
            metadata: ["service": "\(service)", "instance": "\(instance.id)", "connections": "\(opened)"])
        do {
            try await caller.executeThenClose { callerBytes, toCaller in
                try await upstream.executeThenClose { instanceBytes, toInstance in
                    try await withThrowingTaskGroup(of: Void.self) { directions in
                        directions.addTask {
                            for try await bytes in callerBytes { try await toInstance.write(bytes) }
                            toInstance.finish()
                        }
                        directions.addTask {
                            for try await bytes in instanceBytes { try await toCaller.write(bytes) }
                            toCaller.finish()
                        }
                        try await directions.waitForAll()
                    }
                }
            }
        } catch {
            logger.debug(
                "a forwarded connection failed",
                metadata: ["service": "\(service)", "instance": "\(instance.id)", "error": "\(error)"])
        }
    }

    /// A connection to an instance, on `loop` (the caller's): another instance after one that cannot be reached,
    /// up to ``connectRetries`` more; nil when there is none to try.
    private func connectToInstance(for loop: any EventLoop) async -> (Connection, Instance)? {
        let key = UpstreamSelector.BalancerKey(
            target: RouteTarget(service: service, query: InstanceQuery(), weight: 1), balancer: .roundRobin)
        var tried: Set<InstanceID> = []
        while tried.count <= connectRetries {
            let snapshot: DiscoverySnapshot
            do {
                snapshot = try await selector.discovery.snapshot(of: service)
            } catch {
                logger.warning(
                    "no instance for a TCP connection: the registry could not be asked",
                    metadata: ["service": "\(service)", "error": "\(error)"])
                return nil
            }
            guard let picked = selector.pick(key, from: snapshot, avoiding: tried) else { break }
            let instance = picked.instance
            // `pick` hands back an instance already tried once every other one was: it has had its chance.
            guard !tried.contains(instance.id) else {
                selector.finished(key, on: instance, permit: picked.permit)
                break
            }
            tried.insert(instance.id)
            do {
                let upstream = try await ClientBootstrap(group: loop)
                    .connectTimeout(connectTimeout.timeAmount)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelOption(.allowRemoteHalfClosure, value: true)
                    .connect(host: instance.definition.address.rawValue, port: instance.definition.port) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try Connection(
                                wrappingChannelSynchronously: channel,
                                configuration: .init(isOutboundHalfClosureEnabled: true))
                        }
                    }
                selector.record(true, on: instance, knownInstances: snapshot.instances.count, permit: picked.permit)
                selector.finished(key, on: instance, permit: nil)
                return (upstream, instance)
            } catch {
                selector.record(false, on: instance, knownInstances: snapshot.instances.count, permit: picked.permit)
                selector.finished(key, on: instance, permit: nil)
                logger.debug(
                    "could not connect to an instance",
                    metadata: ["service": "\(service)", "instance": "\(instance.id)", "error": "\(error)"])
            }
        }
        logger.warning(
            "no instance could take a TCP connection",
            metadata: ["service": "\(service)", "tried": "\(tried.count)"])
        return nil
    }
}

/// The forwarded connections open, and a wait for there being none (or for the wait to be given up).
final class ConnectionCount: Sendable {
    private struct State {
        var open = 0
        var total = 0
        var gaveUp = false
        var waiters: [CheckedContinuation<Void, Never>] = []

        mutating func takeWaiters() -> [CheckedContinuation<Void, Never>] {
            defer { waiters = [] }
            return waiters
        }
    }

    private let state = Mutex(State())

    /// Connections accepted since the listener started.
    var total: Int { state.withLock { $0.total } }

    func opened() {
        state.withLock {
            $0.open += 1
            $0.total += 1
        }
    }

    func closed() {
        let waiters = state.withLock { state in
            state.open -= 1
            return state.open == 0 ? state.takeWaiters() : []
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Ends the waits under way and to come.
    func giveUp() {
        let waiters = state.withLock { state in
            state.gaveUp = true
            return state.takeWaiters()
        }
        for waiter in waiters { waiter.resume() }
    }

    /// Returns once no connection is open, or the wait was given up.
    func untilNoneOpen() async {
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                if state.open == 0 || state.gaveUp { return true }
                state.waiters.append(waiter)
                return false
            }
            if done { waiter.resume() }
        }
    }
}

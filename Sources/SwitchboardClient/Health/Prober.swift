import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchboardCore
import Synchronization

/// Runs one probe of an HTTP or TCP check and says what it found, never throwing: every failure is a result.
///
/// The agent's health checker probes with it, and so can any process that checks a service itself (a sidecar
/// beside a service that knows nothing of Switchboard) without importing the agent. The rules are the agent's:
/// an HTTP check passes on 2xx, warns on 429 and is critical otherwise (a redirect included: redirects are not
/// followed), with `expectBody` looked for in the first 64 KiB; a TCP check passes when it connects in time.
///
/// HTTP probes share one AsyncHTTPClient with keep-alive, so thousands of checks against a few hosts reuse their
/// connections; a killed backend closes them, and the next probe's fresh connection is refused at once.
/// Connection attempts are not retried within a probe.
///
/// ```swift
/// let client = HTTPClient(eventLoopGroupProvider: .singleton,
///                         configuration: Prober.httpClientConfiguration(maximumConnectionsPerHost: 8))
/// let prober = Prober(httpClient: client, eventLoopGroup: MultiThreadedEventLoopGroup.singleton)
/// let (status, output) = await prober.probe(check)
/// ```
public struct Prober: Sendable {
    /// The most body bytes read for `expectBody` matching; output keeps fewer (`CheckState.outputLimit`).
    public static let bodyReadLimit = 64 * 1024

    let httpClient: HTTPClient
    let eventLoopGroup: any EventLoopGroup

    /// A prober sending HTTP probes through `httpClient` (configured with ``httpClientConfiguration(maximumConnectionsPerHost:)``)
    /// and connecting TCP probes on `eventLoopGroup`.
    public init(httpClient: HTTPClient, eventLoopGroup: any EventLoopGroup) {
        self.httpClient = httpClient
        self.eventLoopGroup = eventLoopGroup
    }

    /// The client configuration health checks need (see the type's comment).
    public static func httpClientConfiguration(maximumConnectionsPerHost: Int) -> HTTPClient.Configuration {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            decompression: .disabled
        )
        configuration.connectionPool = HTTPClient.Configuration.ConnectionPool(
            idleTimeout: .seconds(60),
            concurrentHTTP1ConnectionsPerHostSoftLimit: maximumConnectionsPerHost
        )
        configuration.connectionPool.retryConnectionEstablishment = false
        return configuration
    }

    /// Probes `check` once, within its timeout (body included for HTTP; connection for TCP).
    ///
    /// Both probes run on the event loops from start to end and resume the caller once: at thousands of probes a
    /// second, hops between the event loops and the concurrency pool would cost more than the probes themselves.
    public func probe(_ check: CheckDefinition) async -> (status: HealthStatus, output: String) {
        let timeout = (check.timeout ?? .seconds(5)).duration
        switch check.type {
        case .http: return await probeHTTP(check, timeout: timeout)
        case .tcp: return await probeTCP(check, timeout: timeout)
        case .ttl: return (.critical, "ttl checks are not probed")
        }
    }

    private func probeHTTP(_ check: CheckDefinition, timeout: Duration) async -> (status: HealthStatus, output: String)
    {
        let url = check.url ?? ""
        let method = check.method ?? "GET"
        let collector = ProbeResponseCollector(bodyLimit: method == "HEAD" ? 0 : Self.bodyReadLimit)
        do {
            var request = try HTTPClient.Request(url: url, method: HTTPMethod(rawValue: method))
            request.headers.add(name: "User-Agent", value: "switchboard-health-check/\(SwitchboardVersion.current)")
            for (name, value) in (check.headers ?? [:]).sorted(by: { $0.key < $1.key }) {
                request.headers.replaceOrAdd(name: name, value: value)
            }
            // The future API's deadline covers the whole exchange, so a backend stalling mid-body times out too.
            let task = httpClient.execute(
                request: request, delegate: collector, deadline: .now() + TimeAmount(timeout))
            try await withTaskCancellationHandler {
                try await task.futureResult.get()
            } onCancel: {
                task.cancel()
            }
        } catch is ProbeResponseCollector.BodyLimitReached {
            // Enough body read: judge on what arrived.
        } catch let error as HTTPClientError where error == .deadlineExceeded {
            return (.critical, "\(method) \(url): no complete answer within \(HumanDuration(timeout))")
        } catch {
            return (.critical, "\(method) \(url): \(error)")
        }
        guard let (head, body) = collector.response else {
            return (.critical, "\(method) \(url): no response")
        }
        let code = Int(head.status.code)
        var output = "HTTP \(code) \(head.status.reasonPhrase)"
        if !body.isEmpty { output += "\n" + String(decoding: body.prefix(CheckState.outputLimit), as: UTF8.self) }
        let status: HealthStatus
        switch code {
        case 200..<300: status = .passing
        case 429: status = .warning
        default: status = .critical
        }
        if status == .passing, let expected = check.expectBody, !Self.contains(body, Array(expected.utf8)) {
            return (.critical, "body does not contain \"\(expected)\"; " + output)
        }
        return (status, output)
    }

    private func probeTCP(_ check: CheckDefinition, timeout: Duration) async -> (status: HealthStatus, output: String) {
        let target = check.target ?? ""
        guard let (host, port) = Self.hostAndPort(target) else { return (.critical, "invalid target \(target)") }
        do {
            let channel = try await ClientBootstrap(group: eventLoopGroup)
                .connectTimeout(TimeAmount(timeout))
                .connect(host: host, port: port)
                .get()
            try? await channel.close()
            return (.passing, "TCP connect \(target): success")
        } catch {
            return (.critical, "TCP connect \(target): \(error)")
        }
    }

    /// Splits `host:port` or `[v6]:port` (the forms check validation accepts).
    static func hostAndPort(_ target: String) -> (String, Int)? {
        guard let colon = target.lastIndex(of: ":"), let port = Int(target[target.index(after: colon)...]) else {
            return nil
        }
        var host = target[..<colon]
        if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
        return (String(host), port)
    }

    private static func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard !needle.isEmpty else { return true }
        guard haystack.count >= needle.count else { return false }
        for start in 0...(haystack.count - needle.count) where haystack[start] == needle[0] {
            if haystack[start..<(start + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }
}

/// Collects a probe's response head and the first `bodyLimit` bytes of its body, on the event loop; once the limit
/// is reached it ends the exchange (``BodyLimitReached``) rather than read a large body to the end.
final class ProbeResponseCollector: HTTPClientResponseDelegate {
    typealias Response = Void

    /// Ends the exchange once enough body has arrived; not a failure of the probe.
    struct BodyLimitReached: Error {}

    private let bodyLimit: Int
    private let state = Mutex<(head: HTTPResponseHead?, body: [UInt8])>((nil, []))

    init(bodyLimit: Int) {
        self.bodyLimit = bodyLimit
    }

    /// The head and body read so far, or nil if no head arrived.
    var response: (HTTPResponseHead, [UInt8])? {
        state.withLock { state in state.head.map { ($0, state.body) } }
    }

    func didReceiveHead(task: HTTPClient.Task<Void>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        state.withLock { $0.head = head }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Void>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        let full = state.withLock { state in
            state.body += buffer.readableBytesView.prefix(bodyLimit - state.body.count)
            return state.body.count >= bodyLimit
        }
        return full ? task.eventLoop.makeFailedFuture(BodyLimitReached()) : task.eventLoop.makeSucceededVoidFuture()
    }

    func didFinishRequest(task: HTTPClient.Task<Void>) throws {}
}

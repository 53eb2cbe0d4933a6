import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchboardCore

/// Runs one probe of an HTTP or TCP check and says what it found, never throwing: every failure is a result.
///
/// HTTP probes share one AsyncHTTPClient with keep-alive, so thousands of checks against a few hosts reuse their
/// connections; a killed backend closes them, and the next probe's fresh connection is refused at once. Redirects
/// are not followed (a 3xx is not a healthy answer) and connection attempts are not retried within a probe.
struct Prober: Sendable {
    /// The most body bytes read for `expectBody` matching; output keeps fewer (``CheckState/outputLimit``).
    static let bodyReadLimit = 64 * 1024

    let httpClient: HTTPClient
    let eventLoopGroup: any EventLoopGroup

    /// The client configuration health checks need (see the type's comment).
    static func httpClientConfiguration(maximumConnectionsPerHost: Int) -> HTTPClient.Configuration {
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

    /// Probes `check` once, within its timeout: the whole probe, body included, races the timeout, because the
    /// HTTP client's deadline stops applying once the response head has arrived (a backend that stalls mid-body
    /// would otherwise hold the probe forever).
    func probe(_ check: CheckDefinition) async -> (status: HealthStatus, output: String) {
        let timeout = (check.timeout ?? .seconds(5)).duration
        let expired: (status: HealthStatus, output: String) = (
            .critical, "\(check.url ?? check.target ?? ""): no complete answer within \(HumanDuration(timeout))"
        )
        return await withTaskGroup(of: (status: HealthStatus, output: String)?.self) { group in
            group.addTask {
                switch check.type {
                case .http: await probeHTTP(check, timeout: timeout)
                case .tcp: await probeTCP(check, timeout: timeout)
                case .ttl: (.critical, "ttl checks are not probed")
                }
            }
            group.addTask {
                // A small margin lets the client's own timeout report first, with its more precise output.
                try? await Task.sleep(for: timeout + .milliseconds(50))
                return Task.isCancelled ? nil : expired
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? expired
        }
    }

    private func probeHTTP(_ check: CheckDefinition, timeout: Duration) async -> (status: HealthStatus, output: String)
    {
        let url = check.url ?? ""
        let method = check.method ?? "GET"
        var request = HTTPClientRequest(url: url)
        request.method = HTTPMethod(rawValue: method)
        request.headers.add(name: "User-Agent", value: "switchboard-health-check/\(SwitchboardVersion.current)")
        for (name, value) in (check.headers ?? [:]).sorted(by: { $0.key < $1.key }) {
            request.headers.replaceOrAdd(name: name, value: value)
        }
        do {
            let response = try await httpClient.execute(request, deadline: .now() + TimeAmount(timeout))
            var body: [UInt8] = []
            if method != "HEAD" {
                for try await chunk in response.body {
                    body += chunk.readableBytesView.prefix(Self.bodyReadLimit - body.count)
                    if body.count >= Self.bodyReadLimit { break }
                }
            }
            let code = Int(response.status.code)
            var output = "HTTP \(code) \(response.status.reasonPhrase)"
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
        } catch let error as HTTPClientError where error == .deadlineExceeded {
            return (.critical, "\(method) \(url): no answer within \(HumanDuration(timeout))")
        } catch {
            return (.critical, "\(method) \(url): \(error)")
        }
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

extension HumanDuration {
    init(_ duration: Duration) {
        self.init(milliseconds: Int64(duration / .milliseconds(1)))
    }
}

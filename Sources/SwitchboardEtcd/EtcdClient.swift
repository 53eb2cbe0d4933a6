import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore
import Synchronization

/// A client of an etcd v3 cluster over its JSON gateway (`POST /v3/...` on each member's client URL).
///
/// It knows several members and moves to the next one when a member cannot be reached or has no leader, so one
/// member lost out of three is invisible to its callers. Every call has a deadline covering all members tried: with
/// quorum lost, etcd holds writes until its own timeout, and a caller must hear "unavailable" sooner than that.
///
/// Why the JSON gateway rather than gRPC: see `bench/RESULTS.md` ("etcd transport"). Each call costs etcd about
/// the same CPU either way once writes are batched into transactions, which the catalog does; the gateway needs no
/// generated code and no HTTP/2 stack in the agent.
public final class EtcdClient: Sendable {
    /// Where and how to reach the cluster.
    public struct Configuration: Sendable {
        /// The members' client URLs (`http://127.0.0.1:2379`), tried in order, starting from the last one that
        /// answered.
        public var endpoints: [String]
        /// How long a TCP connection to a member may take.
        public var connectTimeout: Duration
        /// How long a call may take, every member tried included, unless the call says otherwise.
        public var requestTimeout: Duration
        /// How long one try of a call that may be sent again waits for its member: a proposal forwarded to a leader
        /// that just died is never answered, and the next try (after the election) is.
        public var attemptTimeout: Duration

        public init(
            endpoints: [String], connectTimeout: Duration = .milliseconds(500), requestTimeout: Duration = .seconds(5),
            attemptTimeout: Duration = .milliseconds(1500)
        ) {
            self.endpoints = endpoints.map { $0.hasSuffix("/") ? String($0.dropLast()) : $0 }
            self.connectTimeout = connectTimeout
            self.requestTimeout = requestTimeout
            self.attemptTimeout = attemptTimeout
        }
    }

    public let configuration: Configuration
    let httpClient: HTTPClient
    /// For watches, which hold their connection for as long as they last: a pool of their own, so they never take
    /// the connections that calls wait for.
    let watchClient: HTTPClient
    /// The member calls go to first: the last one that answered.
    let preferred = Mutex(0)
    let logger: Logger

    public init(configuration: Configuration, logger: Logger = Logger(label: "switchboard.etcd")) {
        precondition(!configuration.endpoints.isEmpty, "EtcdClient needs at least one endpoint")
        self.configuration = configuration
        self.logger = logger
        var http = HTTPClient.Configuration()
        http.timeout.connect = .nanoseconds(configuration.connectTimeout.nanoseconds)
        // Moving to the next member is this client's job; retrying one dead member until the deadline is not.
        http.connectionPool.retryConnectionEstablishment = false
        http.decompression = .disabled
        http.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 16
        httpClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
        http.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 256
        watchClient = HTTPClient(eventLoopGroupProvider: .singleton, configuration: http)
    }

    /// Closes the connections; calls after this fail.
    public func shutdown() async throws {
        try await httpClient.shutdown()
        try await watchClient.shutdown()
    }

    /// The member that answered last (for status reports).
    public var currentEndpoint: String {
        let endpoints = configuration.endpoints
        return endpoints[preferred.withLock { $0 } % endpoints.count]
    }

    // MARK: Calls

    /// Reads a range of keys.
    public func range(
        _ request: EtcdRangeRequest, timeout: Duration? = nil
    ) async throws(EtcdError) -> EtcdRangeResponse {
        let answer: EtcdWire.RangeAnswer = try await call(
            "/v3/kv/range", EtcdWire.range(request), idempotent: true, timeout: timeout)
        return answer.value
    }

    /// Writes one key.
    public func put(
        _ key: [UInt8], _ value: [UInt8], lease: Int64 = 0, timeout: Duration? = nil
    ) async throws(EtcdError) -> EtcdResponseHeader {
        let answer: EtcdWire.PutAnswer = try await call(
            "/v3/kv/put", EtcdWire.put(key: key, value: value, lease: lease), idempotent: false, timeout: timeout)
        return answer.header?.value ?? EtcdResponseHeader()
    }

    /// Deletes a range of keys; returns how many were deleted.
    @discardableResult
    public func delete(_ range: EtcdKeyRange, timeout: Duration? = nil) async throws(EtcdError) -> Int64 {
        let answer: EtcdWire.DeleteAnswer = try await call(
            "/v3/kv/deleterange", EtcdWire.deleteRange(range, previousKeyValues: false), idempotent: false,
            timeout: timeout)
        return answer.deleted?.value ?? 0
    }

    /// Runs a transaction.
    ///
    /// `idempotent` says that running it twice does no harm (its compares make a second run fail, say): then a call
    /// that may or may not have reached a member that went away is sent again to the next one. Otherwise such a
    /// call throws ``EtcdError/unavailable(_:)`` and the caller cannot tell whether it happened.
    public func transaction(
        _ transaction: EtcdTransaction, idempotent: Bool = false, timeout: Duration? = nil
    ) async throws(EtcdError) -> EtcdTransactionResponse {
        let answer: EtcdWire.TransactionAnswer = try await call(
            "/v3/kv/txn", EtcdWire.transaction(transaction), idempotent: idempotent, timeout: timeout)
        return answer.value
    }

    /// Grants a lease that lives `ttl` seconds unless kept alive.
    public func grantLease(ttl: Int64, timeout: Duration? = nil) async throws(EtcdError) -> EtcdLease {
        let answer: EtcdWire.LeaseGrantAnswer = try await call(
            "/v3/lease/grant", EtcdWire.lease("TTL", ttl), idempotent: false, timeout: timeout)
        guard let id = answer.ID?.value, id != 0 else {
            throw .malformed("etcd granted no lease: \(answer.error ?? "no id in the answer")")
        }
        return EtcdLease(id: id, ttl: answer.TTL?.value ?? ttl)
    }

    /// Renews a lease; returns its new time to live, or `nil` when the lease is gone (expired or revoked).
    public func keepLeaseAlive(_ id: Int64, timeout: Duration? = nil) async throws(EtcdError) -> Int64? {
        let answer: EtcdWire.LeaseKeepAliveAnswer = try await call(
            "/v3/lease/keepalive", EtcdWire.lease("ID", id), idempotent: true, timeout: timeout)
        // A dead lease answers with no TTL (etcd leaves a zero out).
        guard let ttl = answer.result?.TTL?.value, ttl > 0 else { return nil }
        return ttl
    }

    /// Ends a lease now, deleting the keys attached to it.
    public func revokeLease(_ id: Int64, timeout: Duration? = nil) async throws(EtcdError) {
        let _: EtcdWire.PutAnswer = try await call(
            "/v3/lease/revoke", EtcdWire.lease("ID", id), idempotent: true, timeout: timeout)
    }

    // MARK: Transport

    /// A request to `endpoint` for `path` with a JSON body.
    func request(_ path: String, to endpoint: String, body: [UInt8]) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: endpoint + path)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        // A member cut off from the others must refuse rather than answer from a view that can no longer change.
        request.headers.add(name: "Grpc-Metadata-hasleader", value: "true")
        request.body = .bytes(ByteBuffer(bytes: body))
        return request
    }

    /// Sends one call, moving to the next member when one cannot be reached, has no leader or (for an idempotent
    /// call) went away mid-call; decodes the first answer.
    private func call<Answer: Decodable>(
        _ path: String, _ body: EtcdWireObject, idempotent: Bool, timeout: Duration?
    ) async throws(EtcdError) -> Answer {
        let data = body.json
        let endpoints = configuration.endpoints
        let first = preferred.withLock { $0 }
        let deadline = ContinuousClock.now + (timeout ?? configuration.requestTimeout)
        var failures: [String] = []
        // Whether an attempt may have reached etcd and been applied (sent, then no answer or a timeout).
        var mayHaveApplied = false
        var round = 0
        // Around the members once, then again while time is left: a cluster electing a leader answers "no leader"
        // for a moment everywhere.
        while true {
            for attempt in 0..<endpoints.count {
                let remaining = deadline - .now
                guard remaining > .zero else {
                    let tried = failures.suffix(endpoints.count).joined(separator: "; ")
                    if mayHaveApplied {
                        throw .indeterminate("no etcd member confirmed \(path) in time (\(tried))")
                    }
                    throw .unavailable("no etcd member answered \(path) in time (\(tried))")
                }
                let position = (first + attempt) % endpoints.count
                let endpoint = endpoints[position]
                let wait = idempotent ? min(remaining, configuration.attemptTimeout) : remaining
                do {
                    let response = try await httpClient.execute(
                        request(path, to: endpoint, body: data), timeout: .nanoseconds(wait.nanoseconds))
                    let bytes = try await response.body.collect(upTo: 64 << 20)
                    if response.status == .ok {
                        preferred.withLock { $0 = position }
                        do {
                            return try JSONDecoder().decode(Answer.self, from: Data(bytes.readableBytesView))
                        } catch {
                            throw EtcdError.malformed("etcd's answer to \(path) did not decode: \(error)")
                        }
                    }
                    let failure = EtcdError(status: response.status, body: Data(bytes.readableBytesView))
                    // Refusals that another member would answer the same way end the call.
                    guard failure.isRetryable, idempotent || failure.certainlyNotApplied else { throw failure }
                    failures.append("\(endpoint): \(failure)")
                    if !failure.certainlyNotApplied { mayHaveApplied = true }
                } catch let error as EtcdError {
                    throw error
                } catch {
                    let transport = TransportFailure(error)
                    failures.append("\(endpoint): \(transport)")
                    if !transport.requestNeverLeft { mayHaveApplied = true }
                    guard transport.requestNeverLeft || idempotent else {
                        throw .indeterminate("etcd member \(endpoint) went away during \(path): \(transport)")
                    }
                }
            }
            round += 1
            // Members are all refusing or electing: pause a little before the next round.
            let pause = Duration.milliseconds(min(50 * round, 250))
            guard deadline - .now > pause else { continue }
            do { try await Task.sleep(for: pause) } catch { throw .unavailable("cancelled") }
        }
    }
}

/// Why an etcd call failed.
public enum EtcdError: Error, Sendable, Hashable, CustomStringConvertible {
    /// No member could do it in time: all unreachable, or the cluster has no leader (quorum lost).
    case unavailable(String)
    /// No member confirmed the call in time, and it may have reached one: it may still be applied (when a quorum
    /// commits it). Read back before acting on either outcome.
    case indeterminate(String)
    /// The revision asked for was compacted; the argument is the oldest revision still held.
    case compacted(Int64)
    /// etcd refused the call (a gRPC status code and etcd's message).
    case refused(code: Int, message: String)
    /// An answer this client could not read.
    case malformed(String)

    init(status: HTTPResponseStatus, body: Data) {
        let answer = try? JSONDecoder().decode(EtcdWire.ErrorAnswer.self, from: body)
        self.init(
            code: answer?.code ?? answer?.grpc_code ?? -1, status: Int(status.code),
            message: answer?.message ?? answer?.error ?? String(decoding: body.prefix(200), as: UTF8.self))
    }

    /// From a gRPC status `code` (-1: none) the gateway reported with `message`, under HTTP `status`.
    init(code: Int, status: Int, message: String) {
        switch code {
        case 14, 4:
            // Unavailable (no leader, stopping) and deadline exceeded (no quorum to commit in time).
            self = .unavailable("etcd: \(message)")
        case 11 where message.contains("compacted"):
            self = .compacted(0)
        default:
            self = .refused(code: code == -1 ? status : code, message: message)
        }
    }

    /// Whether another member (or the same one a moment later) may answer differently.
    var isRetryable: Bool {
        switch self {
        case .unavailable, .indeterminate: true
        default: false
        }
    }

    /// Whether the call certainly changed nothing: a member without a leader refuses before proposing.
    var certainlyNotApplied: Bool {
        if case .unavailable(let message) = self { return message.contains("no leader") }
        return false
    }

    public var description: String {
        switch self {
        case .unavailable(let reason): "etcd is unavailable: \(reason)"
        case .indeterminate(let reason): "etcd is unavailable and the call may still be applied: \(reason)"
        case .compacted(let revision): "etcd compacted the revisions asked for (oldest held: \(revision))"
        case .refused(let code, let message): "etcd refused the call (code \(code)): \(message)"
        case .malformed(let reason): "unreadable answer from etcd: \(reason)"
        }
    }
}

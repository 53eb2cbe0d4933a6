import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardClient
import Synchronization

/// What one watch message carries: the changes of one or more whole revisions, or only the store's progress.
public struct EtcdWatchBatch: Sendable {
    /// The store's revision when the message was sent: every change up to it in the watched range has been sent.
    public var revision: Int64
    /// The changes, in revision order; a revision's changes are never split across messages.
    public var events: [EtcdEvent]
}

extension EtcdClient {
    /// Watches `range` from `startRevision` on (0: from now), over one member, for as long as the caller iterates.
    ///
    /// The stream throws ``EtcdError/compacted(_:)`` when `startRevision` is older than what etcd still holds, and
    /// ``EtcdError/unavailable(_:)`` when the member goes away or loses its leader; it never ends otherwise. The
    /// caller resumes on another member from the revision after the last one it saw.
    public func watch(
        _ range: EtcdKeyRange, from startRevision: Int64, previousKeyValues: Bool = false
    ) async throws(EtcdError) -> AsyncThrowingStream<EtcdWatchBatch, any Error> {
        let body = EtcdWire.watchCreate(
            range, startRevision: startRevision, previousKeyValues: previousKeyValues, progressNotify: true
        ).json
        let endpoints = configuration.endpoints
        var failures: [String] = []
        let first = preferred.withLock { $0 }
        for attempt in 0..<endpoints.count {
            let endpoint = endpoints[(first + attempt) % endpoints.count]
            let response: HTTPClientResponse
            do {
                response = try await watchClient.execute(
                    request("/v3/watch", to: endpoint, body: body), timeout: .hours(24 * 365))
            } catch {
                failures.append("\(endpoint): \(TransportFailure(error))")
                continue
            }
            guard response.status == .ok else {
                let bytes = (try? await response.body.collect(upTo: 1 << 20)) ?? ByteBuffer()
                failures.append(
                    "\(endpoint): \(EtcdError(status: response.status, body: Data(bytes.readableBytesView)))")
                continue
            }
            return Self.batches(from: response.body, endpoint: endpoint)
        }
        throw .unavailable("no etcd member took the watch (\(failures.joined(separator: "; ")))")
    }

    /// The gateway's stream (one JSON object per line) as batches.
    private static func batches(
        from body: HTTPClientResponse.Body, endpoint: String
    ) -> AsyncThrowingStream<EtcdWatchBatch, any Error> {
        AsyncThrowingStream { continuation in
            let reader = Task {
                var pending: [UInt8] = []
                do {
                    for try await chunk in body {
                        pending += chunk.readableBytesView
                        while let end = pending.firstIndex(of: UInt8(ascii: "\n")) {
                            let line = pending[..<end]
                            defer { pending.removeSubrange(...end) }
                            guard line.contains(where: { $0 > 0x20 }) else { continue }
                            if let batch = try decode(Data(line)) { continuation.yield(batch) }
                        }
                    }
                    if !pending.isEmpty, pending.contains(where: { $0 > 0x20 }),
                        let batch = try decode(Data(pending))
                    {
                        continuation.yield(batch)
                    }
                    continuation.finish(throwing: EtcdError.unavailable("etcd member \(endpoint) closed the watch"))
                } catch let error as EtcdError {
                    continuation.finish(throwing: error)
                } catch {
                    continuation.finish(
                        throwing: EtcdError.unavailable("the watch on \(endpoint) broke: \(TransportFailure(error))"))
                }
            }
            continuation.onTermination = { _ in reader.cancel() }
        }
    }

    /// One line of the stream: a batch, `nil` for the creation notice, or an error for a cancelled watch.
    private static func decode(_ line: Data) throws -> EtcdWatchBatch? {
        let answer: EtcdWire.WatchAnswer
        do {
            answer = try JSONDecoder().decode(EtcdWire.WatchAnswer.self, from: line)
        } catch {
            throw EtcdError.malformed("a watch message did not decode: \(error)")
        }
        if let error = answer.error {
            throw EtcdError(
                code: error.grpc_code ?? error.code ?? -1, status: 500,
                message: error.message ?? error.error ?? "the watch failed")
        }
        guard let result = answer.result else { return nil }
        if let compacted = result.compact_revision?.value, compacted > 0 {
            throw EtcdError.compacted(compacted)
        }
        if result.canceled == true {
            throw EtcdError.unavailable("etcd cancelled the watch: \(result.cancel_reason ?? "no reason given")")
        }
        let events = (result.events ?? []).map { event in
            EtcdEvent(
                kind: event.type == "DELETE" ? .delete : .put, keyValue: event.kv?.keyValue ?? EtcdKeyValue(key: []),
                previous: event.prev_kv?.keyValue)
        }
        if result.created == true, events.isEmpty { return nil }
        return EtcdWatchBatch(revision: result.header?.revision?.value ?? 0, events: events)
    }
}

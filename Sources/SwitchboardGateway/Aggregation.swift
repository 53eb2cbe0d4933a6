import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore
import Synchronization

/// A route that answers one request with several services' answers at once: a profile page made of the user, their
/// posts and their comments, fetched in parallel and returned as one JSON object.
struct AggregateSpec: Sendable {
    /// One service's share of the answer.
    struct Part: Sendable {
        /// Its key in the answer.
        var name: String
        var service: ServiceName
        /// The path asked of the service; `{rest}` stands for what followed the route's prefix (without its `/`).
        var path: String
        var timeout: Duration
    }

    var parts: [Part]
}

/// Runs aggregate routes through the client library: each part is a ``ServiceClient`` call (healthy instances,
/// balancing, one retry on another instance, outlier ejection), bounded by the part's timeout.
final class Aggregator: Sendable {
    private let discovery: ServiceDiscovery
    private let clients = Mutex<[ServiceName: ServiceClient<RoundRobinBalancer>]>([:])

    init(discovery: ServiceDiscovery) {
        self.discovery = discovery
    }

    private func client(for service: ServiceName) -> ServiceClient<RoundRobinBalancer> {
        clients.withLock { clients in
            if let client = clients[service] { return client }
            let client = ServiceClient(
                service: service, discovery: discovery, balancer: RoundRobinBalancer(),
                policy: CallPolicy(attemptTimeout: .seconds(5), maximumRetries: 1, retryBudget: nil))
            clients[service] = client
            return client
        }
    }

    /// The answer: `{"<part>": <its JSON, or null>, ..., "partial": bool, "errors": {"<part>": "why"}}`; nil when
    /// every part failed.
    func answer(
        _ spec: AggregateSpec, rest: String, query: String?, headers: HTTPHeaders
    ) async -> (body: ByteBuffer, partial: Bool, allFailed: Bool) {
        let results = await withTaskGroup(of: (Int, Result<ByteBuffer, PartFailure>).self) { group in
            for (index, part) in spec.parts.enumerated() {
                group.addTask {
                    (index, await self.fetch(part, rest: rest, query: query, headers: headers))
                }
            }
            var results = [Result<ByteBuffer, PartFailure>?](repeating: nil, count: spec.parts.count)
            for await (index, result) in group { results[index] = result }
            return results.map { $0 ?? .failure(PartFailure(message: "not fetched")) }
        }
        var json = JSONText()
        json.append("{")
        var errors: [(String, String)] = []
        for (part, result) in zip(spec.parts, results) {
            json.appendString(part.name)
            json.append(":")
            switch result {
            case .success(let body): json.bytes += body.readableBytesView
            case .failure(let failure):
                json.append("null")
                errors.append((part.name, failure.message))
            }
            json.append(",")
        }
        json.append(#""partial":\#(!errors.isEmpty)"#)
        if !errors.isEmpty {
            json.append(#","errors":{"#)
            for (index, (name, message)) in errors.enumerated() {
                if index > 0 { json.append(",") }
                json.appendString(name)
                json.append(":")
                json.appendString(message)
            }
            json.append("}")
        }
        json.append("}\n")
        return (ByteBuffer(bytes: json.bytes), !errors.isEmpty, errors.count == spec.parts.count)
    }

    private struct PartFailure: Error {
        var message: String
    }

    private func fetch(
        _ part: AggregateSpec.Part, rest: String, query: String?, headers: HTTPHeaders
    ) async -> Result<ByteBuffer, PartFailure> {
        // In the query, the rest is one value: it cannot add parameters of its own. It comes from a normalised
        // path, so it is escaped already but for the characters a query gives a meaning to.
        var path = part.path
        if let questionMark = path.firstIndex(of: "?") {
            let value = rest.replacingOccurrences(of: "&", with: "%26").replacingOccurrences(of: "=", with: "%3D")
                .replacingOccurrences(of: "+", with: "%2B")
            path =
                path[..<questionMark].replacingOccurrences(of: "{rest}", with: rest)
                + path[questionMark...].replacingOccurrences(of: "{rest}", with: value)
        } else {
            path = path.replacingOccurrences(of: "{rest}", with: rest)
        }
        if let query, !query.isEmpty { path += (path.contains("?") ? "&" : "?") + query }
        let client = self.client(for: part.service)
        let request = ServiceRequest(path: path, headers: headers)
        let outcome = await withTaskGroup(of: Result<ServiceResponse, PartFailure>?.self) { group in
            group.addTask {
                do {
                    return .success(try await client.execute(request))
                } catch {
                    return .failure(PartFailure(message: "\(part.service): \(error)"))
                }
            }
            group.addTask {
                try? await Task.sleep(for: part.timeout)
                return Task.isCancelled
                    ? nil : .failure(PartFailure(message: "\(part.service): no answer within \(part.timeout)"))
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first ?? .failure(PartFailure(message: "\(part.service): cancelled"))
        }
        switch outcome {
        case .failure(let failure):
            return .failure(failure)
        case .success(let response):
            guard response.status.code < 400 else {
                return .failure(PartFailure(message: "\(part.service) answered \(response.status.code)"))
            }
            var body = response.body
            let bytes = body.readBytes(length: body.readableBytes) ?? []
            // A JSON answer goes in as it is; anything else as a string.
            if (try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed])) != nil {
                return .success(ByteBuffer(bytes: bytes))
            }
            var json = JSONText()
            json.appendString(String(decoding: bytes, as: UTF8.self))
            return .success(ByteBuffer(bytes: json.bytes))
        }
    }
}

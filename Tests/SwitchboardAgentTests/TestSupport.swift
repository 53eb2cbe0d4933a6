import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import SwitchboardAgent
import SwitchboardCore
import Testing

/// A running in-process agent: its base URL and its catalog.
struct LiveAgent: Sendable {
    let baseURL: String
    let catalog: Catalog
}

/// Serves `store` through the real agent application on a free port for the duration of `body`, then shuts the
/// application down gracefully.
func withLiveAgent<T: Sendable>(
    store: any CatalogStore = InMemoryCatalogStore(),
    configuration: AgentConfiguration = AgentConfiguration(httpPort: 0, storage: .memory),
    _ body: @Sendable (LiveAgent) async throws -> T
) async throws -> T {
    var logger = Logger(label: "test.agent")
    logger.logLevel = .warning
    let catalog = try await Catalog.load(from: store)
    let (ports, portSink) = AsyncStream.makeStream(of: Int.self)
    let application = Agent.makeApplication(
        catalog: catalog,
        storeDescription: "memory",
        configuration: configuration,
        logger: logger,
        onServerRunning: { address in portSink.yield(address?.port ?? 0) }
    )
    let group = ServiceGroup(configuration: ServiceGroupConfiguration(services: [application], logger: logger))
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next() else { throw TestFailure("the agent never reported its port") }
        do {
            let result = try await body(LiveAgent(baseURL: "http://127.0.0.1:\(port)", catalog: catalog))
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

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// An HTTP answer as the tests inspect it.
struct HTTPAnswer: Sendable {
    let status: Int
    let headers: HTTPHeaders
    let body: Data

    /// The body as a JSON object.
    var object: [String: any Sendable] {
        ((try? JSONSerialization.jsonObject(with: body)) as? [String: any Sendable]) ?? [:]
    }

    var text: String { String(decoding: body, as: UTF8.self) }

    var index: UInt64? { headers.first(name: "X-Switchboard-Index").flatMap(UInt64.init) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try SwitchboardJSON.decoder().decode(T.self, from: body)
    }

    /// The `error`, `field` and message of a JSON error body.
    var errorCode: String? { object["error"] as? String }
    var errorField: String? { object["field"] as? String }
    var errorMessage: String? { object["message"] as? String }
}

/// Sends one request with a real HTTP client.
func http(
    _ method: HTTPMethod,
    _ url: String,
    json: String? = nil,
    body: Data? = nil,
    contentType: String? = "application/json",
    timeout: TimeAmount = .seconds(30)
) async throws -> HTTPAnswer {
    var request = HTTPClientRequest(url: url)
    request.method = method
    if let payload = body ?? json.map({ Data($0.utf8) }) {
        if let contentType { request.headers.add(name: "Content-Type", value: contentType) }
        request.body = .bytes(ByteBuffer(bytes: payload))
    }
    let response = try await HTTPClient.shared.execute(request, timeout: timeout)
    var buffer = try await response.body.collect(upTo: 16 * 1024 * 1024)
    return HTTPAnswer(
        status: Int(response.status.code),
        headers: response.headers,
        body: Data(buffer.readBytes(length: buffer.readableBytes) ?? [])
    )
}

/// A fresh temporary directory, removed by the caller.
func makeTemporaryDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("switchboard-test-\(UUID().uuidString)")
        .path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore

/// The CLI's connection to an agent's HTTP API: one request, a deadline, and errors in words.
///
/// The CLI commands are thin clients of the API (as Consul's are), so everything they print comes from here.
struct AgentAPIClient {
    let baseURL: String
    var timeout: TimeAmount = .seconds(10)

    /// A refusal or failure, printed as one line by the command.
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    /// Sends a request and returns the body of a 2xx answer; throws a ``Failure`` with the agent's message otherwise.
    func send(_ method: HTTPMethod, _ path: String, body: Data? = nil) async throws -> Data {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: body))
        }
        // A command makes one request: fail at once when the agent is down instead of retrying connects until the
        // deadline, as a long-lived client would.
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.timeout.connect = .seconds(3)
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
        let response: HTTPClientResponse
        var bytes: ByteBuffer
        do {
            response = try await client.execute(request, timeout: timeout)
            bytes = try await response.body.collect(upTo: 64 * 1024 * 1024)
            try? await client.shutdown()
        } catch {
            try? await client.shutdown()
            throw Failure(
                description:
                    "cannot reach the agent at \(baseURL): \(Self.describe(error)); is `switchboard agent` running?")
        }
        let data = Data(bytes.readBytes(length: bytes.readableBytes) ?? [])
        guard (200..<300).contains(response.status.code) else {
            throw Self.refusal(status: response.status, body: data)
        }
        return data
    }

    /// The failure a non-2xx answer stands for, in the agent's words when its body is an API error.
    static func refusal(status: HTTPResponseStatus, body: Data) -> Failure {
        if let apiError = try? JSONDecoder().decode(ErrorBody.self, from: body) {
            let field = apiError.field.map { " (field: \($0))" } ?? ""
            return Failure(
                description: "the agent refused: \(apiError.message)\(field) [\(status.code) \(apiError.error)]")
        }
        return Failure(description: "the agent answered \(status.code) \(status.reasonPhrase)")
    }

    /// Sends and decodes a JSON answer.
    func send<Answer: Decodable>(
        _ method: HTTPMethod, _ path: String, body: Data? = nil, as type: Answer.Type
    ) async throws
        -> Answer
    {
        let data = try await send(method, path, body: body)
        do {
            return try SwitchboardJSON.decoder().decode(Answer.self, from: data)
        } catch {
            throw Failure(description: "the agent's answer could not be read: \(error)")
        }
    }

    private struct ErrorBody: Decodable {
        var error: String
        var message: String
        var field: String?
    }

    static func describe(_ error: any Error) -> String {
        TransportFailure(error).description
    }

    /// Percent-encodes one path segment or query value.
    static func escape(_ text: String) -> String {
        PercentEncoding.component(text)
    }
}

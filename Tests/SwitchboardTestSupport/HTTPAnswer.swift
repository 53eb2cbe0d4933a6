import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardCore

/// An HTTP answer as the tests inspect it.
public struct HTTPAnswer: Sendable {
    public let status: Int
    public let headers: HTTPHeaders
    public let body: Data

    public init(status: Int, headers: HTTPHeaders, body: Data) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// The body as a JSON object.
    public var object: [String: any Sendable] {
        ((try? JSONSerialization.jsonObject(with: body)) as? [String: any Sendable]) ?? [:]
    }

    public var text: String { String(decoding: body, as: UTF8.self) }

    public var index: UInt64? { headers.first(name: "X-Switchboard-Index").flatMap(UInt64.init) }

    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try SwitchboardJSON.decoder().decode(T.self, from: body)
    }

    /// The `error`, `field` and message of a JSON error body.
    public var errorCode: String? { object["error"] as? String }
    public var errorField: String? { object["field"] as? String }
    public var errorMessage: String? { object["message"] as? String }
}

/// Sends one request with a real HTTP client.
public func http(
    _ method: HTTPMethod,
    _ url: String,
    json: String? = nil,
    body: Data? = nil,
    contentType: String? = "application/json",
    headers: [(String, String)] = [],
    timeout: TimeAmount = .seconds(30)
) async throws -> HTTPAnswer {
    var request = HTTPClientRequest(url: url)
    request.method = method
    for (name, value) in headers { request.headers.add(name: name, value: value) }
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

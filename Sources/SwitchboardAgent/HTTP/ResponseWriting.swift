import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import SwitchboardCatalog
import SwitchboardCore

/// Writing answers: JSON (pretty on `?pretty`), or bytes encoded once when a change was committed, with the index
/// header every answer carries.
extension AgentHTTPAPI {
    func isPretty(_ request: Request) -> Bool {
        request.uri.queryParameters["pretty"] != nil
    }

    /// The instance a write leaves, from the writer's encoding when there is one.
    func json(
        _ outcome: Catalog.WriteOutcome, status: HTTPResponse.Status = .ok, request: Request
    ) throws
        -> Response
    {
        if let body = outcome.instanceJSON, !isPretty(request) {
            return rawJSON(body, status: status, index: outcome.index)
        }
        return try json(outcome.instance, status: status, index: outcome.index, request: request)
    }

    /// A response carrying JSON that is already encoded.
    func rawJSON(_ body: [UInt8], status: HTTPResponse.Status = .ok, index: UInt64) -> Response {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(body.count + 1)
        buffer.writeBytes(body)
        buffer.writeString("\n")
        return Response(
            status: status,
            headers: [.contentType: "application/json", Self.indexHeader: String(index)],
            body: ResponseBody(byteBuffer: buffer)
        )
    }

    func json(
        _ value: some Encodable, status: HTTPResponse.Status = .ok, index: UInt64, request: Request
    ) throws
        -> Response
    {
        let pretty = isPretty(request)
        var buffer = ByteBuffer()
        buffer.writeBytes(try SwitchboardJSON.encoder(pretty: pretty).encode(value))
        buffer.writeString("\n")
        return Response(
            status: status,
            headers: [.contentType: "application/json", Self.indexHeader: String(index)],
            body: ResponseBody(byteBuffer: buffer)
        )
    }
}

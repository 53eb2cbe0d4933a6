import AsyncHTTPClient
import Foundation
import NIOCore
import SwitchboardClient
import SwitchboardCore
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The errors AsyncHTTPClient really throws, read the way the client's retries and messages read them.
@Suite struct TransportFailureTests {
    @Test func aClosedPortIsRefusedAndASilentServerTimesOut() async throws {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)

        let closed = try freePort()
        do {
            _ = try await client.execute(HTTPClientRequest(url: "http://127.0.0.1:\(closed)/"), timeout: .seconds(2))
            Issue.record("a closed port answered")
        } catch {
            let failure = TransportFailure(error)
            #expect(failure == .refused, "\(error)")
            #expect(failure.requestNeverLeft)
        }

        // A listener that accepts (the kernel does) and never answers.
        let silent = try ArrivalRecorder(port: try freePort(), resetConnections: false)
        defer { silent.stop() }
        do {
            _ = try await client.execute(
                HTTPClientRequest(url: "http://127.0.0.1:\(silent.port)/"), timeout: .milliseconds(300))
            Issue.record("a silent server answered")
        } catch {
            let failure = TransportFailure(error)
            #expect(failure == .timedOut, "\(error)")
            #expect(!failure.requestNeverLeft)
        }
        try await client.shutdown()
    }
}

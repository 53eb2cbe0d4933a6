import Foundation
import NIOHTTP1
import SwitchboardGateway
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A test CA and a certificate it signed for 127.0.0.1 (an IP address entry), made with openssl.
struct InstanceCertificates {
    let directory: String
    var ca: String { directory + "/ca.pem" }
    var certificate: String { directory + "/instance.pem" }
    var key: String { directory + "/instance.key" }

    init() async throws {
        directory = try makeTemporaryDirectory()
        for arguments in [
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory + "/ca.key", "-out", ca, "-days",
                "1", "-subj", "/CN=switchboard-gateway-test-ca",
            ],
            [
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", directory + "/instance.csr", "-subj",
                "/CN=instance",
            ],
        ] {
            try await Self.openssl(arguments)
        }
        try "subjectAltName=IP:127.0.0.1\n".write(toFile: directory + "/san.cnf", atomically: true, encoding: .utf8)
        try await Self.openssl([
            "x509", "-req", "-in", directory + "/instance.csr", "-CA", ca, "-CAkey", directory + "/ca.key",
            "-CAcreateserial", "-out", certificate, "-days", "1", "-extfile", directory + "/san.cnf",
        ])
    }

    static func openssl(_ arguments: [String]) async throws {
        let run = try await runProgram("/usr/bin/openssl", arguments)
        guard run.status == 0 else { throw TestFailure("openssl \(arguments.joined(separator: " ")): \(run.stderr)") }
    }
}

/// `Tests/Fixtures/https_backend.py`: Python's http.server behind TLS, on a free port.
final class HTTPSBackend: Sendable {
    let process: Process
    let port: Int

    init(certificates: InstanceCertificates) async throws {
        (process, port) = try await startPrintingPort(
            "/usr/bin/python3",
            [PythonClients.fixture("https_backend.py"), certificates.certificate, certificates.key],
            output: certificates.directory + "/backend.out")
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

@Suite("TLS from the gateway to instances", .serialized, .loadsTheMachine)
struct GatewayUpstreamTLSTests {
    @Test func instancesMarkedForTLSAreReachedOverItAndVerifiedAgainstTheCAFile() async throws {
        let certificates = try await InstanceCertificates()
        defer { try? FileManager.default.removeItem(atPath: certificates.directory) }
        let agent = try await AgentProcess(dataDirectory: nil, dnsAddress: nil)
        let secure = try await HTTPSBackend(certificates: certificates)
        let plain = try await ExampleBackend(agents: [agent.baseURL], service: "plain", tags: ["public"])
        _ = plain
        for (service, marks) in [
            ("secure", #""meta": {"scheme": "https"}, "tags": ["public"]"#),
            ("tagged", #""tags": ["public", "tls"]"#),
        ] {
            let registered = try await http(
                .PUT, "\(agent.baseURL)/v1/services/\(service)/instances/\(service)-1",
                json: #"{"address": "127.0.0.1", "port": \#(secure.port), \#(marks)}"#)
            #expect((200..<300).contains(registered.status), "\(registered.text)")
        }
        try await waitForHealthy(agent, "plain", count: 1)

        try await withGateway(agent: agent, configure: { $0.upstreamCAFile = certificates.ca }) { gateway in
            for service in ["secure", "tagged"] {
                let answer = try await get("\(gateway)/\(service)/orders/7")
                #expect(answer.status == 200 && answer.text == "secure ok /orders/7\n", "\(service): \(answer.text)")
            }
            // Instances without the marks stay plain HTTP.
            #expect(try await get("\(gateway)/plain/hello").status == 200)
        }
        // Without the CA, the instance's certificate is not trusted: a 502 that says so, and no answer from it.
        try await withGateway(agent: agent) { gateway in
            let answer = try await get("\(gateway)/secure/orders/7")
            #expect(answer.status == 502, "\(answer.text)")
            #expect(answer.text.lowercased().contains("certificate"), "\(answer.text)")
        }
    }

    @Test func aCAFileThatCannotBeReadStopsTheGatewayNamingIt() async throws {
        let run = try await SwitchboardBinary.run(
            ["gateway", "--listen", "127.0.0.1:0", "--admin", "off", "--upstream-ca-file", "/no/such/ca.pem"],
            timeout: .seconds(30))
        #expect(run.status != 0)
        #expect((run.stdout + run.stderr).contains("/no/such/ca.pem"), "\(run.stdout)\(run.stderr)")
    }
}

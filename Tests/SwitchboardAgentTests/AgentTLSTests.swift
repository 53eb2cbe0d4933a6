import Foundation
import SwitchboardClient
import SwitchboardCore
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// TLS on the agent's HTTP API, with certificates `openssl` makes in the test and curl as the client.
@Suite(.serialized, .loadsTheMachine) struct AgentTLSTests {
    /// A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate, in `directory`.
    struct Certificates {
        let directory: String
        var ca: String { directory + "/ca.pem" }
        var serverCertificate: String { directory + "/server.pem" }
        var serverKey: String { directory + "/server.key" }
        var clientCertificate: String { directory + "/client.pem" }
        var clientKey: String { directory + "/client.key" }

        init() async throws {
            directory = try makeTemporaryDirectory()
            try await Self.openssl([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", directory + "/ca.key", "-out",
                directory + "/ca.pem", "-days", "1", "-subj", "/CN=switchboard-test-ca",
            ])
            try "subjectAltName=IP:127.0.0.1\n".write(toFile: directory + "/san.cnf", atomically: true, encoding: .utf8)
            try await issue("server", commonName: "first")
            try await issue("client", commonName: "a-client")
        }

        /// A certificate for `name` (server or client) signed by the CA, replacing the files atomically.
        func issue(_ name: String, commonName: String) async throws {
            let staging = directory + "/staging-\(name)"
            try await Self.openssl([
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", staging + ".key", "-out", staging + ".csr",
                "-subj", "/CN=\(commonName)",
            ])
            try await Self.openssl([
                "x509", "-req", "-in", staging + ".csr", "-CA", ca, "-CAkey", directory + "/ca.key",
                "-CAcreateserial", "-out", staging + ".pem", "-days", "1", "-extfile", directory + "/san.cnf",
            ])
            _ = rename(staging + ".key", directory + "/\(name).key")
            _ = rename(staging + ".pem", directory + "/\(name).pem")
        }

        /// A certificate for `name` signed by the CA that expired in 2020 (`openssl ca` sets any validity).
        func issueExpired(_ name: String) async throws {
            let staging = directory + "/expired-\(name)"
            try await Self.openssl([
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", staging + ".key", "-out", staging + ".csr",
                "-subj", "/CN=\(name)",
            ])
            try "".write(toFile: directory + "/index.txt", atomically: true, encoding: .utf8)
            try "01\n".write(toFile: directory + "/serial", atomically: true, encoding: .utf8)
            try """
            [ca]
            default_ca = expired
            [expired]
            database = \(directory)/index.txt
            serial = \(directory)/serial
            new_certs_dir = \(directory)
            default_md = sha256
            policy = any
            copy_extensions = copy
            [any]
            commonName = supplied
            """.write(toFile: directory + "/expired.cnf", atomically: true, encoding: .utf8)
            try await Self.openssl([
                "ca", "-batch", "-config", directory + "/expired.cnf", "-cert", ca, "-keyfile", directory + "/ca.key",
                "-in", staging + ".csr", "-out", staging + ".pem", "-startdate", "20200101000000Z", "-enddate",
                "20200102000000Z", "-extfile", directory + "/san.cnf",
            ])
        }

        static func openssl(_ arguments: [String]) async throws {
            let run = try await runProgram("/usr/bin/openssl", arguments)
            guard run.status == 0 else {
                throw TestFailure("openssl \(arguments.joined(separator: " ")): \(run.stderr)")
            }
        }
    }

    /// An agent process serving its API over TLS with the test's server certificate, and its `https://` URL.
    static func httpsAgent(
        _ certificates: Certificates, extraArguments: [String] = []
    ) async throws -> (AgentProcess, String) {
        let agent = try await AgentProcess(
            dataDirectory: nil, dnsAddress: nil,
            extraArguments: ["--tls-cert", certificates.serverCertificate, "--tls-key", certificates.serverKey]
                + extraArguments)
        return (agent, agent.baseURL.replacingOccurrences(of: "http://", with: "https://"))
    }

    static func curl(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
        try await runProgram("/usr/bin/curl", ["-sS", "--max-time", "10"] + arguments)
    }

    @Test func httpsServesTheAPIAndARotatedCertificateReachesNewConnectionsWhileAStreamStaysOpen() async throws {
        let certificates = try await Certificates()
        defer { try? FileManager.default.removeItem(atPath: certificates.directory) }
        let (agent, base) = try await Self.httpsAgent(certificates)
        let info = try await Self.curl(["--cacert", certificates.ca, "\(base)/v1/agent"])
        #expect(info.status == 0 && info.stdout.contains(#""store""#), "\(info)")
        let plain = try await Self.curl(["\(agent.baseURL)/v1/agent"])
        #expect(plain.status != 0 || !plain.stdout.contains(#""store""#), "plain HTTP is not served on a TLS port")

        // A watch stream opened on the first certificate.
        let streamed = certificates.directory + "/stream.txt"
        _ = FileManager.default.createFile(atPath: streamed, contents: nil)
        let stream = Process()
        stream.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        stream.arguments = ["-sN", "--cacert", certificates.ca, "\(base)/v1/watch"]
        stream.standardOutput = FileHandle(forWritingAtPath: streamed)
        try stream.run()
        defer { if stream.isRunning { kill(stream.processIdentifier, SIGKILL) } }
        try await waitUntil(timeout: .seconds(10), "the stream's snapshot") {
            ((try? String(contentsOfFile: streamed, encoding: .utf8)) ?? "").contains("data:")
        }

        try await certificates.issue("server", commonName: "rotated")
        try await waitUntil(timeout: .seconds(15), "new connections to get the rotated certificate") {
            let verbose = try await Self.curl(["-v", "--cacert", certificates.ca, "\(base)/v1/agent"])
            return verbose.status == 0 && verbose.stderr.contains("CN=rotated")
        }
        let registered = try await Self.curl([
            "--cacert", certificates.ca, "-X", "PUT", "-H", "Content-Type: application/json",
            "-d", #"{"address": "10.0.0.1", "port": 80}"#, "\(base)/v1/services/tls-demo/instances/after-rotation",
        ])
        #expect(registered.status == 0, "\(registered)")
        try await waitUntil(timeout: .seconds(10), "the stream opened before the rotation to carry the change") {
            ((try? String(contentsOfFile: streamed, encoding: .utf8)) ?? "").contains("after-rotation")
        }
        #expect(stream.isRunning, "the open stream stayed open")
        #expect(await agent.stop(with: SIGTERM) == 0)
    }

    @Test func clientCertificatesAreRequiredWhenAClientCAIsGiven() async throws {
        let certificates = try await Certificates()
        defer { try? FileManager.default.removeItem(atPath: certificates.directory) }
        let (agent, base) = try await Self.httpsAgent(
            certificates, extraArguments: ["--tls-client-ca", certificates.ca])
        let anonymous = try await Self.curl(["--cacert", certificates.ca, "\(base)/v1/agent"])
        #expect(anonymous.status != 0, "no client certificate, no answer: \(anonymous)")
        let identified = try await Self.curl([
            "--cacert", certificates.ca, "--cert", certificates.clientCertificate, "--key", certificates.clientKey,
            "\(base)/v1/agent",
        ])
        #expect(identified.status == 0 && identified.stdout.contains(#""store""#), "\(identified)")

        // The CLI and the client library, with the CA and the client certificate.
        let registered = try await SwitchboardBinary.run([
            "register", "tls-demo", "--address", "10.0.0.9", "--port", "80", "--agent", base, "--ca-file",
            certificates.ca, "--client-cert", certificates.clientCertificate, "--client-key", certificates.clientKey,
        ])
        #expect(registered.status == 0, "\(registered.stdout)\(registered.stderr)")
        let withoutCertificate = try await SwitchboardBinary.run([
            "services", "--agent", base, "--ca-file", certificates.ca,
        ])
        #expect(withoutCertificate.status != 0, "refused without a client certificate")
        let connection = AgentConnection(
            configuration: AgentConnectionConfiguration(
                agents: [base],
                tls: try AgentTLSConfiguration(
                    caFile: certificates.ca, clientCertificateFile: certificates.clientCertificate,
                    clientKeyFile: certificates.clientKey)))
        do {
            let services = try await AgentClient(connection: connection).services()
            #expect(services.services.map(\.name.rawValue) == ["tls-demo"])
            try await connection.shutdown()
        } catch {
            try? await connection.shutdown()
            throw error
        }
        withExtendedLifetime(agent) {}  // the process ends with the object
    }

    /// An expired client certificate is refused at the handshake, an expired server certificate is refused by the
    /// client library with an error that says so; the agent keeps serving.
    @Test func expiredCertificatesAreRefusedWithAClearErrorAndTheAgentKeepsServing() async throws {
        let certificates = try await Certificates()
        defer { try? FileManager.default.removeItem(atPath: certificates.directory) }
        try await certificates.issueExpired("client")
        try await certificates.issueExpired("server")
        let expiredClient = (
            certificates.directory + "/expired-client.pem", certificates.directory + "/expired-client.key"
        )
        let (agent, base) = try await Self.httpsAgent(
            certificates, extraArguments: ["--tls-client-ca", certificates.ca])
        let refused = try await Self.curl([
            "--cacert", certificates.ca, "--cert", expiredClient.0, "--key", expiredClient.1, "\(base)/v1/agent",
        ])
        #expect(refused.status != 0, "an expired client certificate is refused: \(refused)")
        let valid = try await Self.curl([
            "--cacert", certificates.ca, "--cert", certificates.clientCertificate, "--key", certificates.clientKey,
            "\(base)/v1/agent",
        ])
        #expect(valid.status == 0, "the agent keeps serving: \(valid)")
        withExtendedLifetime(agent) {}

        let expiredAgent = try await AgentProcess(
            dataDirectory: nil, dnsAddress: nil,
            extraArguments: [
                "--tls-cert", certificates.directory + "/expired-server.pem", "--tls-key",
                certificates.directory + "/expired-server.key",
            ])
        let expiredBase = expiredAgent.baseURL.replacingOccurrences(of: "http://", with: "https://")
        let answer = try await SwitchboardBinary.run(["services", "--agent", expiredBase, "--ca-file", certificates.ca])
        #expect(answer.status != 0)
        #expect(
            answer.stderr.lowercased().contains("expired"), "the error says the certificate expired: \(answer.stderr)")
    }

    @Test func theCLITrustsAnAgentsCAOnlyWhenGivenIt() async throws {
        let certificates = try await Certificates()
        defer { try? FileManager.default.removeItem(atPath: certificates.directory) }
        let (agent, base) = try await Self.httpsAgent(certificates)
        let trusted = try await SwitchboardBinary.run([
            "services", "--json", "--agent", base, "--ca-file", certificates.ca,
        ])
        #expect(trusted.status == 0, "\(trusted.stdout)\(trusted.stderr)")
        let untrusted = try await SwitchboardBinary.run(["services", "--agent", base])
        #expect(untrusted.status != 0, "an agent signed by an unknown CA is not trusted")
        let badCA = try await SwitchboardBinary.run(["services", "--agent", base, "--ca-file", certificates.serverKey])
        #expect(badCA.status != 0 && badCA.stderr.contains("is not a PEM certificate"), "\(badCA.stderr)")
        withExtendedLifetime(agent) {}  // the process ends with the object
    }

    @Test func theGatewayTerminatesTLSAndReachesAnHTTPSAgent() async throws {
        let certificates = try await Certificates()
        defer { try? FileManager.default.removeItem(atPath: certificates.directory) }
        let (agent, agentURL) = try await Self.httpsAgent(certificates)
        // A plain HTTP backend, registered through the agent's HTTPS API.
        let backend = try BackendProcess()
        let registered = try await Self.curl([
            "--cacert", certificates.ca, "-X", "PUT", "-H", "Content-Type: application/json", "-d",
            #"{"address": "127.0.0.1", "port": \#(backend.port), "tags": ["public"]}"#,
            "\(agentURL)/v1/services/shop/instances/s1",
        ])
        #expect(registered.status == 0, "\(registered)")
        let port = try freePort()
        let gateway = Process()
        gateway.executableURL = URL(fileURLWithPath: SwitchboardBinary.path)
        gateway.arguments = [
            "gateway", "--listen", "127.0.0.1:\(port)", "--agent", agentURL, "--ca-file", certificates.ca,
            "--tls-cert", certificates.serverCertificate, "--tls-key", certificates.serverKey, "--admin", "off",
            "--access-log", "off",
        ]
        gateway.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        gateway.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try gateway.run()
        defer { if gateway.isRunning { kill(gateway.processIdentifier, SIGKILL) } }
        try await waitUntil(timeout: .seconds(30), "the gateway to route over TLS") {
            let answer = try await Self.curl(["--cacert", certificates.ca, "https://127.0.0.1:\(port)/shop/health"])
            return answer.status == 0 && answer.stdout.hasPrefix("healthy")
        }
        // The instance learns that its caller came over TLS.
        let scheme = try await Self.curl([
            "--cacert", certificates.ca, "https://127.0.0.1:\(port)/shop/forwarded-proto",
        ])
        #expect(scheme.stdout == "https", "\(scheme.stdout)")
        let plain = try await Self.curl(["http://127.0.0.1:\(port)/shop/health"])
        #expect(plain.status != 0 || !plain.stdout.hasPrefix("healthy"), "no plain HTTP on a TLS listener")
        withExtendedLifetime(agent) {}  // the process ends with the object
    }

    @Test func aKeyThatDoesNotMatchTheCertificateStopsTheAgentWithAClearError() async throws {
        let certificates = try await Certificates()
        defer { try? FileManager.default.removeItem(atPath: certificates.directory) }
        let run = try await SwitchboardBinary.run(
            [
                "agent", "--dev", "--dns-disable", "--http-addr", "127.0.0.1:0", "--tls-cert",
                certificates.serverCertificate, "--tls-key", certificates.clientKey,
            ], timeout: .seconds(30))
        #expect(run.status != 0)
        #expect((run.stdout + run.stderr).contains("do not make a TLS context"), "\(run.stdout)\(run.stderr)")
        let missing = try await SwitchboardBinary.run(
            ["agent", "--dev", "--dns-disable", "--tls-cert", certificates.serverCertificate], timeout: .seconds(30))
        #expect(missing.status != 0 && (missing.stdout + missing.stderr).contains("--tls-key"))
    }
}

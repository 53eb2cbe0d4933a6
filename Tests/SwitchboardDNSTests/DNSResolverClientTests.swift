import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardTestSupport
import Testing

@testable import SwitchboardDNS

#if canImport(Glibc)
import Glibc
#endif

/// Runs Debian's `dig` (dnsutils) against the agent's DNS port and returns what it prints.
func dig(_ port: Int, _ arguments: String) async throws -> String {
    let path = "/usr/bin/dig"
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw TestFailure("dig is not installed: `apt-get install dnsutils` (.ci/run installs it)")
    }
    let words = arguments.split(separator: " ").map(String.init)
    let result = try await runProgram(path, ["@127.0.0.1", "-p", "\(port)", "+time=5", "+tries=3"] + words)
    return result.stdout
}

/// The record lines of dig's output (`name ttl class type data`), without comments.
func records(_ output: String) -> [String] {
    output.split(separator: "\n").map(String.init).filter { !$0.hasPrefix(";") && !$0.isEmpty }
}

/// One UDP exchange with a raw socket: what arrives within a second, or nil.
func exchangeDatagram(_ packet: [UInt8], port: Int) async -> [UInt8]? {
    await withCheckedContinuation { continuation in
        DispatchQueue.global().async {
            guard let descriptor = LoopbackSocket.connected(port: port, datagram: true) else {
                return continuation.resume(returning: nil)
            }
            defer { close(descriptor) }
            _ = send(descriptor, packet, packet.count, 0)
            var buffer = [UInt8](repeating: 0, count: 4096)
            let received = recv(descriptor, &buffer, buffer.count, 0)
            continuation.resume(returning: received > 0 ? Array(buffer.prefix(received)) : nil)
        }
    }
}

@Suite("DNS through a real resolver client (dig)", .serialized, .loadsTheMachine)
struct DNSResolverClientTests {
    func register(_ agent: LiveAgent, _ id: String, _ body: String) async throws {
        let answer = try await http(.PUT, "\(agent.baseURL)/v1/services/payment/instances/\(id)", json: body)
        #expect(answer.status == 200 || answer.status == 201, "\(answer.text)")
    }

    @Test func everyNameFormAnswersFromTheCatalog() async throws {
        try await withLiveAgent { agent in
            let port = try #require(agent.dnsPort)
            try await register(agent, "p1", #"{"address": "10.0.0.1", "port": 8080, "tags": ["v2"], "weight": 5}"#)
            try await register(agent, "p2", #"{"address": "::1", "port": 8081}"#)
            try await register(agent, "p3", #"{"address": "db.example.com", "port": 8082}"#)
            // Never heartbeated: critical, so in no answer.
            try await register(
                agent, "p4", #"{"address": "10.0.0.4", "port": 8083, "checks": [{"type": "ttl", "ttl": "30s"}]}"#)

            #expect(records(try await dig(port, "payment.service.switchboard A +short")) == ["10.0.0.1"])
            #expect(records(try await dig(port, "payment.service.switchboard AAAA +short")) == ["::1"])
            #expect(records(try await dig(port, "v2.payment.service.switchboard A +short")) == ["10.0.0.1"])
            #expect(try await dig(port, "v3.payment.service.switchboard A").contains("status: NXDOMAIN"))
            // ANY: one family only (RFC 8482), IPv4 when there is some.
            #expect(records(try await dig(port, "payment.service.switchboard ANY +short")) == ["10.0.0.1"])

            let srv = records(try await dig(port, "_payment._tcp.service.switchboard SRV +noall +answer +additional"))
            #expect(srv.count == 5, "\(srv)")
            #expect(srv.contains { $0.hasSuffix("SRV\t1 5 8080 p1.payment.instance.switchboard.") }, "\(srv)")
            #expect(srv.contains { $0.hasSuffix("SRV\t1 1 8082 db.example.com.") }, "\(srv)")
            #expect(srv.contains { $0.hasPrefix("p1.payment.instance.switchboard.") && $0.hasSuffix("A\t10.0.0.1") })
            #expect(srv.contains { $0.hasPrefix("p2.payment.instance.switchboard.") && $0.hasSuffix("AAAA\t::1") })
            #expect(
                records(try await dig(port, "_payment._v2.service.switchboard SRV +short"))
                    == ["1 5 8080 p1.payment.instance.switchboard."])
            #expect(records(try await dig(port, "payment.service.switchboard SRV +short")).count == 3)

            #expect(records(try await dig(port, "p1.payment.instance.switchboard A +short")) == ["10.0.0.1"])
            #expect(records(try await dig(port, "p3.payment.instance.switchboard A +short")) == ["db.example.com."])
            #expect(try await dig(port, "p4.payment.instance.switchboard A").contains("status: NXDOMAIN"))
            #expect(records(try await dig(port, "0a000001.addr.switchboard A +short")) == ["10.0.0.1"])
            // Names are case-insensitive.
            #expect(records(try await dig(port, "PAYMENT.Service.SwitchBoard A +short")) == ["10.0.0.1"])
            // A name that exists, a type it has no record of: NOERROR, nothing, and the SOA.
            let noData = try await dig(port, "payment.service.switchboard TXT")
            #expect(noData.contains("status: NOERROR") && noData.contains("ANSWER: 0") && noData.contains("SOA"))
        }
    }

    @Test func unknownNamesAreNXDOMAINWithTheSOAAndNamesOutsideTheZoneAreRefused() async throws {
        try await withLiveAgent { agent in
            let port = try #require(agent.dnsPort)
            let missing = try await dig(port, "nothing.service.switchboard A +noall +comments +authority")
            #expect(missing.contains("status: NXDOMAIN"))
            #expect(missing.contains("flags: qr aa"))
            let soa = records(missing)
            #expect(soa.count == 1 && soa[0].contains("SOA\tns.switchboard. hostmaster.switchboard."), "\(soa)")
            #expect(try await dig(port, "a.b.c.service.switchboard A").contains("status: NXDOMAIN"))
            let outside = try await dig(port, "example.com A")
            #expect(outside.contains("status: REFUSED"))
            #expect(!outside.contains(" ra"), "the server must not offer recursion")
        }
    }

    @Test func aLargeAnswerIsTruncatedOverUDPAndWholeOverTCPOrWithEDNS() async throws {
        try await withLiveAgent { agent in
            let port = try #require(agent.dnsPort)
            for index in 1...60 {
                try await register(agent, "b\(index)", #"{"address": "10.1.0.\#(index)", "port": 80}"#)
            }
            // Plain DNS over UDP: 512 bytes, so TC and as many answers as fit.
            let udp = try await dig(port, "payment.service.switchboard A +noedns +ignore")
            #expect(udp.contains("flags: qr aa tc"), "\(udp)")
            let kept = records(udp).count
            #expect(kept > 20 && kept < 60)
            // dig, told TC, asks again over TCP and gets everything.
            let retried = try await dig(port, "payment.service.switchboard A +noedns")
            #expect(retried.contains("Truncated, retrying in TCP mode"))
            #expect(records(retried).count == 60)
            #expect(records(try await dig(port, "payment.service.switchboard A +tcp")).count == 60)
            // With EDNS0 the client takes 1232 bytes over UDP: all 60 fit.
            let edns = try await dig(port, "payment.service.switchboard A +bufsize=4096 +ignore")
            #expect(edns.contains("udp: 1232"))
            #expect(!edns.contains(" tc"))
            #expect(records(edns).count == 60)
            // An EDNS version this server does not speak.
            let badVersion = try await dig(port, "payment.service.switchboard A +edns=1 +noednsnegotiation")
            #expect(badVersion.contains("status: BADVERS"), "\(badVersion)")
            // Answers are shuffled: the first record is not always the same.
            var firsts = Set<String>()
            for _ in 0..<10 {
                firsts.insert(records(try await dig(port, "payment.service.switchboard A +short")).first ?? "")
            }
            #expect(firsts.count > 1)
        }
    }

    @Test func anInstanceThatTurnsCriticalLeavesTheAnswersAtOnce() async throws {
        try await withLiveAgent { agent in
            let port = try #require(agent.dnsPort)
            let url = "\(agent.baseURL)/v1/services/payment/instances/p1"
            try await register(
                agent, "p1", #"{"address": "10.0.0.1", "port": 80, "checks": [{"type": "ttl", "ttl": "30s"}]}"#)
            try await register(agent, "p2", #"{"address": "10.0.0.2", "port": 80}"#)
            _ = try await http(.PUT, "\(url)/heartbeat")
            #expect(
                Set(records(try await dig(port, "payment.service.switchboard A +short"))) == ["10.0.0.1", "10.0.0.2"])
            let critical = try await http(.PUT, "\(url)/heartbeat", json: #"{"status": "critical"}"#)
            #expect(critical.status == 200)
            #expect(records(try await dig(port, "payment.service.switchboard A +short")) == ["10.0.0.2"])
            #expect(try await dig(port, "p1.payment.instance.switchboard A").contains("status: NXDOMAIN"))
            _ = try await http(.PUT, "\(url)/maintenance", json: #"{"enabled": true}"#)
            _ = try await http(
                .PUT, "\(agent.baseURL)/v1/services/payment/instances/p2/maintenance", json: #"{"enabled": true}"#)
            // Known, but nothing healthy behind the name.
            #expect(try await dig(port, "payment.service.switchboard A").contains("status: NXDOMAIN"))
        }
    }

    @Test func malformedPacketsGetFORMERROrNothingAndTheServerKeepsAnswering() async throws {
        try await withLiveAgent { agent in
            let port = try #require(agent.dnsPort)
            try await register(agent, "p1", #"{"address": "10.0.0.1", "port": 80}"#)
            // A question whose name points at itself.
            let loop: [UInt8] = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1]
            let answer = try #require(await exchangeDatagram(loop, port: port))
            let parsed = try DNSMessage(parsing: answer)
            #expect(parsed.id == 0x1234 && parsed.isResponse && parsed.responseCode == .formatError)
            // Shorter than a header: dropped.
            #expect(await exchangeDatagram([1, 2, 3], port: port) == nil)
            // A response sent to the server: dropped (never answer answers).
            var response = loop
            response[2] |= 0x80
            #expect(await exchangeDatagram(response, port: port) == nil)
            // Two questions.
            let two = try DNSMessage(
                id: 7,
                questions: [
                    DNSQuestion(name: try DNSName("payment.service.switchboard"), type: .a),
                    DNSQuestion(name: try DNSName("payment.service.switchboard"), type: .aaaa),
                ]
            ).encoded()
            let twoAnswer = try #require(await exchangeDatagram(Array(two.readableBytesView), port: port))
            #expect(try DNSMessage(parsing: twoAnswer).responseCode == .formatError)
            #expect(records(try await dig(port, "payment.service.switchboard A +short")) == ["10.0.0.1"])
        }
    }
}

@Suite("DNS flags of switchboard agent", .loadsTheMachine)
struct DNSFlagTests {
    @Test func theDomainAndTTLFlagsShapeTheAnswersOfTheAgentProcess() async throws {
        let agent = try await AgentProcess(
            dataDirectory: nil,
            extraArguments: ["--dns-domain", "consul.", "--dns-ttl", "5s", "--dns-answer-limit", "2"])
        let port = try #require(agent.dnsPort)
        let answer = try await http(
            .PUT, "\(agent.baseURL)/v1/services/web/instances/w1", json: #"{"address": "10.2.0.1", "port": 80}"#)
        #expect(answer.status == 201)
        let lines = records(try await dig(port, "web.service.consul A +noall +answer"))
        #expect(lines.count == 1 && lines[0].hasPrefix("web.service.consul.\t5\tIN\tA\t10.2.0.1"), "\(lines)")
        #expect(try await dig(port, "web.service.switchboard A").contains("status: REFUSED"))
        for index in 2...4 {
            _ = try await http(
                .PUT, "\(agent.baseURL)/v1/services/web/instances/w\(index)",
                json: #"{"address": "10.2.0.\#(index)", "port": 80}"#)
        }
        #expect(records(try await dig(port, "web.service.consul A +short")).count == 2)
        await agent.stop(with: SIGTERM)
    }

    @Test func badDNSFlagsAreRefusedNamingTheFlag() async throws {
        let cases: [(arguments: [String], environment: [String: String], message: String)] = [
            (["--dns-addr", "nonsense"], [:], "--dns-addr must be host:port"),
            ([], ["SWITCHBOARD_DNS_TTL": "soon"], "--dns-ttl must be a duration"),
            (["--dns-domain", "bad domain!"], [:], "--dns-domain must be a domain name"),
            (["--dns-answer-limit", "lots"], [:], "--dns-answer-limit must be a whole number"),
        ]
        for (arguments, environment, message) in cases {
            let result = try await SwitchboardBinary.run(
                ["agent", "--dev", "--http-addr", "127.0.0.1:0"] + arguments, environment: environment,
                timeout: .seconds(20))
            #expect(result.status != 0)
            #expect(result.stderr.contains(message), "\(result.stderr)")
        }
    }
}

extension DNSResolverClientTests {
    @Test func tagsAndInstanceIdsWithCapitalsAnswerToLowercaseNames() async throws {
        try await withLiveAgent { agent in
            let port = try #require(agent.dnsPort)
            try await register(agent, "Pay-1", #"{"address": "10.0.0.9", "port": 80, "tags": ["Canary"]}"#)
            #expect(records(try await dig(port, "canary.payment.service.switchboard A +short")) == ["10.0.0.9"])
            let srv = records(try await dig(port, "_payment._canary.service.switchboard SRV +short"))
            #expect(srv == ["1 1 80 pay-1.payment.instance.switchboard."])
            #expect(records(try await dig(port, "pay-1.payment.instance.switchboard A +short")) == ["10.0.0.9"])
        }
    }

    @Test func tcpTakesPipelinedQueriesAndLengthsSplitAcrossSegments() async throws {
        try await withLiveAgent { agent in
            let port = try #require(agent.dnsPort)
            try await register(agent, "p1", #"{"address": "10.0.0.1", "port": 80}"#)
            var stream: [UInt8] = []
            for id in [UInt16(1), 2] {
                let query = try DNSMessage(
                    id: id, questions: [DNSQuestion(name: try DNSName("payment.service.switchboard"), type: .a)]
                ).encoded()
                stream += [UInt8(query.readableBytes >> 8), UInt8(query.readableBytes & 0xFF)]
                stream += Array(query.readableBytesView)
            }
            // The first byte alone, then the rest: two messages in one segment.
            let answers = await LoopbackSocket.exchange(
                [Array(stream.prefix(1)), Array(stream.dropFirst())], port: port)
            var ids: [UInt16] = []
            var rest = answers[...]
            while rest.count >= 2 {
                let length = Int(rest[rest.startIndex]) << 8 | Int(rest[rest.startIndex + 1])
                guard rest.count >= 2 + length else { break }
                let message = try DNSMessage(parsing: Array(rest.dropFirst(2).prefix(length)))
                #expect(message.answers.count == 1)
                ids.append(message.id)
                rest = rest.dropFirst(2 + length)
            }
            #expect(ids == [1, 2])
        }
    }
}

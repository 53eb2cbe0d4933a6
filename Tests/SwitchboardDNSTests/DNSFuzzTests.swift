import Foundation
import NIOCore
import SwitchboardCatalog
import SwitchboardCore
import Testing

@testable import SwitchboardDNS

/// Random and mutated packets through the whole responder: no crash, no hang, and every answer it sends is a
/// well-formed message for the query's id. Runs for a bounded time (`SWITCHBOARD_DNS_FUZZ_SECONDS`, default 3).
@Suite("DNS fuzzing")
struct DNSFuzzTests {
    @Test func randomAndMutatedPacketsNeverCrashTheResponderAndEveryAnswerParses() async throws {
        let catalog = try await Catalog.load(from: InMemoryCatalogStore())
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await catalog.run() }
            defer { group.cancelAll() }
            for (index, address) in ["10.0.0.1", "10.0.0.2", "::1", "db.example.com"].enumerated() {
                _ = try await catalog.register(
                    InstanceDefinition(
                        service: try ServiceName("payment"), id: try InstanceID("p\(index).x"),
                        address: try HostAddress(address), port: 8080 + index, tags: ["v2"], weight: index + 1))
            }
            let responders = [
                DNSResponder(catalog: catalog, configuration: DNSConfiguration()),
                DNSResponder(
                    catalog: catalog, configuration: DNSConfiguration(answerLimit: 1, maximumUDPPayload: 512)),
            ]
            let seconds = Double(ProcessInfo.processInfo.environment["SWITCHBOARD_DNS_FUZZ_SECONDS"] ?? "") ?? 3
            let seed = UInt64.random(in: 0...UInt64.max)
            var random = FastRandom(seed: seed)
            let valid = try Self.validQueries()
            let deadline = ContinuousClock.now + .milliseconds(Int64(seconds * 1000))
            var runs = 0
            var answered = 0
            while ContinuousClock.now < deadline {
                for _ in 0..<200 {
                    runs += 1
                    let packet: [UInt8]
                    if random.next() % 4 == 0 {
                        let length = Int(random.next() % 600)
                        packet = (0..<length).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                    } else {
                        packet = Self.mutate(valid[Int(random.next() % UInt64(valid.count))], with: &random)
                    }
                    let responder = responders[runs % 2]
                    for overTCP in [false, true] {
                        guard let answer = responder.respond(to: ByteBuffer(bytes: packet), overTCP: overTCP) else {
                            continue
                        }
                        answered += 1
                        let parsed = try #require(
                            try? DNSMessage(parsing: answer),
                            "seed \(seed): an answer that does not parse for \(packet)")
                        #expect(parsed.isResponse, "seed \(seed)")
                        #expect(parsed.id == UInt16(packet[0]) << 8 | UInt16(packet[1]), "seed \(seed)")
                        if !overTCP { #expect(answer.readableBytes <= 1232, "seed \(seed)") }
                    }
                }
            }
            #expect(runs > 1000, "only \(runs) packets in \(seconds) s")
            #expect(answered > 0)
        }
    }

    /// Well-formed queries for every name form, to mutate.
    static func validQueries() throws -> [[UInt8]] {
        let names = [
            "payment.service.switchboard.", "v2.payment.service.switchboard.", "_payment._tcp.service.switchboard.",
            "_payment._v2.service.switchboard.", "p0.x.payment.instance.switchboard.", "0a000001.addr.switchboard.",
            "switchboard.", "nothing.service.switchboard.", "example.com.",
        ]
        var queries: [[UInt8]] = []
        for (index, text) in names.enumerated() {
            for type in [DNSRecordType.a, .aaaa, .srv, .any, .txt, .soa] {
                let message = DNSMessage(
                    id: UInt16(index), recursionDesired: true,
                    questions: [DNSQuestion(name: try DNSName(text), type: type)],
                    edns: index % 2 == 0 ? EDNS(udpPayloadSize: 4096) : nil)
                queries.append(Array(try message.encoded().readableBytesView))
            }
        }
        return queries
    }

    /// A few random edits: flipped bits, random bytes, compression pointers, cuts and repeats.
    static func mutate(_ packet: [UInt8], with random: inout FastRandom) -> [UInt8] {
        var bytes = packet
        for _ in 0...(random.next() % 4) {
            guard !bytes.isEmpty else { break }
            let position = Int(random.next() % UInt64(bytes.count))
            switch random.next() % 6 {
            case 0: bytes[position] ^= 1 << UInt8(random.next() % 8)
            case 1: bytes[position] = UInt8(truncatingIfNeeded: random.next())
            case 2:
                let pointer: [UInt8] = [0xC0 | UInt8(random.next() % 4), UInt8(truncatingIfNeeded: random.next())]
                bytes.replaceSubrange(position..<min(bytes.count, position + 2), with: pointer)
            case 3: bytes.removeSubrange(position...)
            case 4:
                let end = min(bytes.count, position + Int(random.next() % 32))
                bytes.insert(contentsOf: bytes[position..<end], at: end)
            default:
                // Counts in the header are what parsers most often trust too far.
                if bytes.count >= 12 { bytes[4 + Int(random.next() % 8)] = UInt8(truncatingIfNeeded: random.next()) }
            }
        }
        return bytes
    }
}

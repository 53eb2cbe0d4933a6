import NIOCore
import SwitchboardCatalog
import SwitchboardCore
import Testing

@testable import SwitchboardDNS

/// The fast path must answer exactly as the general one does, apart from the order of records.
@Suite("The DNS fast path")
struct DNSFastPathTests {
    /// A response with its record sections sorted, so two shuffles of the same answer compare equal.
    func normalized(_ buffer: ByteBuffer?) throws -> DNSMessage? {
        guard let buffer else { return nil }
        var message = try DNSMessage(parsing: buffer)
        let order: (DNSRecord, DNSRecord) -> Bool = { "\($0)" < "\($1)" }
        message.answers.sort(by: order)
        message.additionals.sort(by: order)
        // The general path echoes the question lowercased, the fast one as sent; names compare without case.
        return message
    }

    func query(_ name: String, _ type: DNSRecordType, edns: UInt16? = nil, id: UInt16 = 42) throws -> ByteBuffer {
        try DNSMessage(
            id: id, recursionDesired: true, questions: [DNSQuestion(name: try DNSName(name), type: type)],
            edns: edns.map { EDNS(udpPayloadSize: $0) }
        ).encoded()
    }

    @Test func fastAndGeneralAnswersAgreeForEveryShapeTheFastPathTakes() async throws {
        let catalog = try await Catalog.load(from: InMemoryCatalogStore())
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await catalog.run() }
            defer { group.cancelAll() }
            let payment = try ServiceName("payment")
            func register(_ id: String, _ address: String, tags: [String] = [], weight: Int = 1) async throws {
                _ = try await catalog.register(
                    InstanceDefinition(
                        service: payment, id: try InstanceID(id), address: try HostAddress(address), port: 8080,
                        tags: tags, weight: weight))
            }
            try await register("p1", "10.0.0.1", tags: ["v2"], weight: 5)
            try await register("p2", "::1")
            try await register("p3", "db.example.com")
            for index in 1...70 { try await register("bulk-\(index)", "10.1.0.\(index)", tags: ["bulk"]) }
            let responder = DNSResponder(catalog: catalog, configuration: DNSConfiguration())
            let fastPath = DNSFastPath(catalog: catalog, configuration: DNSConfiguration())
            var random = FastRandom()
            func fast(_ packet: ByteBuffer, overTCP: Bool) -> ByteBuffer? {
                fastPath.respond(to: packet, overTCP: overTCP, random: &random)
            }
            let names = [
                "payment.service.switchboard", "v2.payment.service.switchboard",
                "bulk.payment.service.switchboard", "_payment._tcp.service.switchboard",
                "_payment._v2.service.switchboard", "_payment._bulk.service.switchboard",
            ]
            var compared = 0
            for name in names {
                for type in [DNSRecordType.a, .aaaa, .srv, .any] {
                    for edns: UInt16? in [nil, 4096] {
                        for overTCP in [false, true] {
                            let packet = try query(name, type, edns: edns)
                            let general = try normalized(
                                responder.respondInGeneral(to: packet, overTCP: overTCP, random: &random))
                            guard let fastAnswer = fast(packet, overTCP: overTCP) else { continue }
                            compared += 1
                            let quick = try normalized(fastAnswer)
                            let label = "\(name) \(type) edns \(edns.map(String.init) ?? "-") tcp \(overTCP)"
                            // A truncated answer keeps the records that fit, which differ between two shuffles (and
                            // so may count one fewer when AAAA and A records mix).
                            if quick?.isTruncated == true {
                                #expect(general?.isTruncated == true, "\(label)")
                                let difference = (quick?.answers.count ?? 0) - (general?.answers.count ?? 0)
                                #expect(abs(difference) <= 1, "\(label)")
                                #expect(fastAnswer.readableBytes <= (edns == nil ? 512 : 1232), "\(label)")
                            } else {
                                #expect(quick == general, "\(label)")
                            }
                        }
                    }
                }
            }
            #expect(compared > 60)
            // Names the fast path leaves to the general one.
            for (name, type) in [
                ("nothing.service.switchboard", DNSRecordType.a), ("payment.service.switchboard", .txt),
                ("p1.payment.instance.switchboard", .a), ("example.com", .a), ("0a000001.addr.switchboard", .a),
            ] {
                #expect(fast(try query(name, type), overTCP: false) == nil, "\(name) \(type)")
            }

            // The DO bit comes back on both paths.
            var withDO = try DNSMessage(parsing: try query("payment.service.switchboard", .a, edns: 4096))
            withDO.edns?.dnssecOK = true
            let doPacket = try withDO.encoded()
            #expect(try DNSMessage(parsing: try #require(fast(doPacket, overTCP: false))).edns?.dnssecOK == true)
            #expect(
                try DNSMessage(
                    parsing: try #require(responder.respondInGeneral(to: doPacket, overTCP: false, random: &random))
                ).edns?.dnssecOK == true)

            // The answer limit holds on both paths, with the addresses of the SRV targets kept only.
            var limited = DNSConfiguration()
            limited.answerLimit = 3
            let limitedResponder = DNSResponder(catalog: catalog, configuration: limited)
            for (name, type) in [
                ("payment.service.switchboard", DNSRecordType.a), ("_payment._bulk.service.switchboard", .srv),
            ] {
                let packet = try query(name, type, edns: 4096)
                let viaFast = try #require(try normalized(limitedResponder.respond(to: packet, overTCP: false)))
                let viaGeneral = try #require(
                    try normalized(limitedResponder.respondInGeneral(to: packet, overTCP: false, random: &random)))
                for answer in [viaFast, viaGeneral] {
                    #expect(answer.answers.count == 3 && !answer.isTruncated, "\(name)")
                    #expect(answer.additionals.count == (type == .srv ? 3 : 0), "\(name)")
                }
            }

            // A change to the service reaches the next answer.
            let before = try normalized(fast(try query("v2.payment.service.switchboard", .a), overTCP: false))
            #expect(before?.answers.count == 1)
            _ = try await catalog.setMaintenance(service: payment, id: try InstanceID("p1"), enabled: true)
            #expect(fast(try query("v2.payment.service.switchboard", .a), overTCP: false) == nil)
            #expect(
                try normalized(responder.respond(to: try query("v2.payment.service.switchboard", .a), overTCP: false))?
                    .responseCode == .nameError)
        }
    }
}

extension DNSFastPathTests {
    @Test func bothPathsEchoTheQuestionInTheCaseItWasSent() async throws {
        let catalog = try await Catalog.load(from: InMemoryCatalogStore())
        let responder = DNSResponder(catalog: catalog, configuration: DNSConfiguration())
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await catalog.run() }
            defer { group.cancelAll() }
            _ = try await catalog.register(
                InstanceDefinition(
                    service: try ServiceName("payment"), id: try InstanceID("p1"), address: try HostAddress("10.0.0.1"),
                    port: 80))
            // One name the fast path takes, one it leaves to the general path, one that does not exist.
            for text in [
                "PaYmEnT.sErViCe.SwitchBoard", "P1.Payment.Instance.Switchboard", "NoThInG.service.switchboard",
            ] {
                // The encoder lowercases names: write the mixed-case labels over the encoded question.
                var packet = try query(text, .a)
                var position = 12
                for label in text.split(separator: ".") {
                    packet.setBytes(Array(label.utf8), at: position + 1)
                    position += 1 + label.utf8.count
                }
                #expect(packet.getBytes(at: 13, length: 2) == Array(text.utf8.prefix(2)))
                let answer = try #require(responder.respond(to: packet, overTCP: false))
                let sentName = Array(packet.readableBytesView)[12..<(12 + text.utf8.count + 2)]
                let echoed = Array(answer.readableBytesView)[12..<(12 + text.utf8.count + 2)]
                #expect(Array(sentName) == Array(echoed), "\(text)")
            }
        }
    }
}

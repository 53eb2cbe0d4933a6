import NIOCore
import Testing

@testable import SwitchboardDNS

@Suite("The DNS message codec")
struct DNSCodecTests {
    func name(_ text: String) -> DNSName { try! DNSName(text) }

    var sample: DNSMessage {
        DNSMessage(
            id: 0xBEEF, isResponse: true, isAuthoritative: true, recursionDesired: true,
            questions: [DNSQuestion(name: name("_payment._tcp.service.switchboard."), type: .srv)],
            answers: [
                DNSRecord(
                    name: name("_payment._tcp.service.switchboard."), ttl: 5,
                    data: .srv(priority: 1, weight: 10, port: 8080, target: name("p1.payment.instance.switchboard."))),
                DNSRecord(
                    name: name("p1.payment.instance.switchboard."), ttl: 5, data: .cname(name("db.example.com."))),
            ],
            authorities: [
                DNSRecord(
                    name: name("switchboard."), ttl: 0,
                    data: .soa(
                        primary: name("ns.switchboard."), mailbox: name("hostmaster.switchboard."), serial: 7,
                        refresh: 3600, retry: 600, expire: 86400, minimum: 0))
            ],
            additionals: [
                DNSRecord(name: name("p1.payment.instance.switchboard."), ttl: 5, data: .a([10, 0, 0, 1])),
                DNSRecord(
                    name: name("p2.payment.instance.switchboard."), ttl: 5,
                    data: .aaaa([0x20, 0x01, 0x0D, 0xB8] + [UInt8](repeating: 0, count: 11) + [1])),
                DNSRecord(
                    name: name("x.switchboard."), ttl: 1, data: .other(type: .txt, bytes: [3, 0x61, 0x62, 0x63])),
            ],
            edns: EDNS(udpPayloadSize: 1232, dnssecOK: true))
    }

    @Test func everyRecordTypeSurvivesARoundTripAndNamesAreCompressed() throws {
        let message = sample
        let wire = try message.encoded()
        #expect(try DNSMessage(parsing: wire) == message)
        // Every repeated suffix is a two-byte pointer: far smaller than the names written out in full.
        func dataLength(_ data: DNSRecordData) -> Int {
            switch data {
            case .a: 4
            case .aaaa: 16
            case .cname(let target): target.wireLength
            case .srv(_, _, _, let target): 6 + target.wireLength
            case .soa(let primary, let mailbox, _, _, _, _, _): primary.wireLength + mailbox.wireLength + 20
            case .other(_, let bytes): bytes.count
            }
        }
        let records = message.answers + message.authorities + message.additionals
        let uncompressed =
            12 + message.questions.map { $0.name.wireLength + 4 }.reduce(0, +)
            + records.map { $0.name.wireLength + 10 + dataLength($0.data) }.reduce(0, +) + 11
        #expect(wire.readableBytes < uncompressed * 2 / 3, "\(wire.readableBytes) of \(uncompressed)")
    }

    @Test func namesCompareWithoutRegardToCase() throws {
        #expect(try DNSName("Payment.SERVICE.switchboard") == DNSName("payment.service.switchboard."))
        var query = DNSMessage(id: 1, questions: [DNSQuestion(name: name("a.b."), type: .a)])
        var wire = Array(try query.encoded().readableBytesView)
        wire[13] = UInt8(ascii: "A")  // the first label's byte
        query = try DNSMessage(parsing: wire)
        #expect(query.questions.first?.name == name("a.b."))
    }

    @Test func malformedNamesAreRefused() throws {
        let header: [UInt8] = [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        let question: [UInt8] = [0, 1, 0, 1]
        let cases: [(bytes: [UInt8], code: DNSWireError.Code)] = [
            // A pointer to itself, and one pointing forward.
            (header + [0xC0, 12] + question, .badPointer),
            (header + [0xC0, 20] + question + [0, 0, 0, 0], .badPointer),
            // Two pointers pointing at each other: the second points backwards into the first, which points forward.
            (header + [1, 0x61, 0xC0, 18, 0xC0, 12] + question, .badPointer),
            // A label of 64 bytes (the length byte 0x40 uses a reserved form).
            (header + [0x40] + [UInt8](repeating: 0x61, count: 64) + [0] + question, .badLabel),
            // A name over 255 bytes.
            (
                header + Array([[63] + [UInt8](repeating: 0x61, count: 63)].joined())
                    + Array(repeating: [63] + [UInt8](repeating: 0x62, count: 63), count: 4).flatMap { $0 } + [0]
                    + question, .nameTooLong
            ),
            // Ends inside a label, and before the question's type.
            (header + [5, 0x61], .truncated),
            (header + [0], .truncated),
        ]
        for (bytes, code) in cases {
            #expect(throws: DNSWireError(code), "\(bytes)") { try DNSMessage(parsing: bytes) }
        }
        #expect(DNSMessage.header(of: ByteBuffer(bytes: header + [0xC0, 12])) != nil)
        #expect(DNSMessage.header(of: ByteBuffer(bytes: [0, 1, 2])) == nil)
    }

    @Test func recordsMustHaveTheShapeOfTheirTypeAndOPTOnlyOnceInTheAdditionalSection() throws {
        var message = DNSMessage(id: 1, answers: [DNSRecord(name: .root, ttl: 0, data: .a([1, 2, 3, 4]))])
        var wire = Array(try message.encoded().readableBytesView)
        wire[wire.count - 5] = 3  // A's length 4 -> 3
        #expect(throws: DNSWireError(.badRecordData)) { try DNSMessage(parsing: wire) }

        message = DNSMessage(id: 1, edns: EDNS(udpPayloadSize: 512))
        wire = Array(try message.encoded().readableBytesView)
        // The same OPT record twice.
        var twice = wire + wire[12...]
        twice[11] = 2
        #expect(throws: DNSWireError(.badOPT)) { try DNSMessage(parsing: twice) }
        // OPT as an answer.
        var asAnswer = wire
        asAnswer[7] = 1
        asAnswer[11] = 0
        #expect(throws: DNSWireError(.badOPT)) { try DNSMessage(parsing: asAnswer) }
    }

    @Test func anAnswerTooLargeForItsLimitDropsAdditionalsThenKeepsTheAnswersThatFitWithTC() throws {
        let owner = name("big.service.switchboard.")
        var message = DNSMessage(id: 9, isResponse: true, questions: [DNSQuestion(name: owner, type: .a)])
        message.answers = (0..<60).map { DNSRecord(name: owner, ttl: 0, data: .a([10, 0, 0, UInt8($0)])) }
        message.additionals = [DNSRecord(name: name("x.switchboard."), ttl: 0, data: .a([1, 1, 1, 1]))]
        let whole = try message.encoded()
        #expect(whole.readableBytes > 512)

        let truncated = try DNSMessage(parsing: try message.encoded(limit: 512))
        #expect(truncated.isTruncated)
        #expect(truncated.additionals.isEmpty)
        #expect(truncated.answers.count > 20 && truncated.answers.count < 60)
        #expect(try message.encoded(limit: 512).readableBytes <= 512)

        // Dropping the additional section alone is enough: no TC.
        message.answers = Array(message.answers.prefix(29))
        message.additionals = (0..<20).map {
            DNSRecord(name: name("a\($0).switchboard."), ttl: 0, data: .a([1, 1, 1, 1]))
        }
        let lighter = try DNSMessage(parsing: try message.encoded(limit: 512))
        #expect(!lighter.isTruncated && lighter.answers.count == 29 && lighter.additionals.isEmpty)
    }

    @Test func anAnswerTooLargeForDNSItselfIsTruncatedNotFailed() throws {
        let owner = name("huge.service.switchboard.")
        var message = DNSMessage(id: 9, isResponse: true, questions: [DNSQuestion(name: owner, type: .a)])
        message.answers = (0..<5000).map {
            DNSRecord(name: owner, ttl: 0, data: .a([10, UInt8($0 >> 8), UInt8($0 & 0xFF), 1]))
        }
        #expect(throws: DNSWireError(.tooLarge)) { try message.encoded() }
        let encoded = try message.encoded(limit: 65535)
        #expect(encoded.readableBytes <= 65535)
        let parsed = try DNSMessage(parsing: encoded)
        #expect(parsed.isTruncated && parsed.answers.count > 4000 && parsed.answers.count < 5000)
    }

    @Test func theExtendedResponseCodeTravelsInTheOPTRecord() throws {
        let message = DNSMessage(id: 3, isResponse: true, responseCode: .badVersion, edns: EDNS(udpPayloadSize: 1232))
        let parsed = try DNSMessage(parsing: try message.encoded())
        #expect(parsed.responseCode == .badVersion)
        #expect(parsed.edns?.extendedResponseCode == 1)
    }
}

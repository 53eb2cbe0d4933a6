import NIOCore

extension DNSMessage {
    /// The fixed header's length.
    public static let headerLength = 12

    /// Parses a whole message, strictly: every announced record must be present, every name well formed, every
    /// compression pointer must point backwards (so a pointer loop cannot exist), and records must have the shape
    /// their type requires. Bytes after the last record are ignored, as most servers do.
    public init(parsing buffer: ByteBuffer) throws(DNSWireError) {
        let result: Result<DNSMessage, DNSWireError> = buffer.withUnsafeReadableBytes { bytes in
            var reader = DNSMessageReader(bytes: bytes)
            do throws(DNSWireError) {
                return .success(try reader.readMessage())
            } catch {
                return .failure(error)
            }
        }
        self = try result.get()
    }

    /// Parses a whole message from bytes; see ``init(parsing:)-(ByteBuffer)``.
    public init(parsing bytes: [UInt8]) throws(DNSWireError) {
        try self.init(parsing: ByteBuffer(bytes: bytes))
    }

    /// The id and flags of a message too broken to parse, so that a FORMERR answer can still name the query it
    /// refuses; nil when even the header is not there.
    public static func header(of buffer: ByteBuffer) -> (id: UInt16, flags: UInt16)? {
        guard let id = buffer.getInteger(at: buffer.readerIndex, as: UInt16.self),
            let flags = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt16.self),
            buffer.readableBytes >= headerLength
        else { return nil }
        return (id, flags)
    }
}

/// Reads the wire form; works on the message's bytes in place.
struct DNSMessageReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0

    /// The most compression pointers one name may follow.
    static let maximumPointers = 64

    init(bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    mutating func readMessage() throws(DNSWireError) -> DNSMessage {
        let id = try readUInt16()
        let flags = try readUInt16()
        let questionCount = try readUInt16()
        let answerCount = try readUInt16()
        let authorityCount = try readUInt16()
        let additionalCount = try readUInt16()
        var message = DNSMessage(
            id: id, isResponse: flags & 0x8000 != 0, opcode: UInt8((flags >> 11) & 0xF),
            isAuthoritative: flags & 0x0400 != 0, isTruncated: flags & 0x0200 != 0,
            recursionDesired: flags & 0x0100 != 0, recursionAvailable: flags & 0x0080 != 0,
            responseCode: DNSResponseCode(rawValue: flags & 0xF))
        for _ in 0..<questionCount {
            let name = try readName()
            let type = try readUInt16()
            let recordClass = try readUInt16()
            message.questions.append(
                DNSQuestion(name: name, type: DNSRecordType(rawValue: type), recordClass: recordClass))
        }
        for _ in 0..<answerCount { message.answers.append(try readRecord(inAdditional: false, into: &message)!) }
        for _ in 0..<authorityCount {
            message.authorities.append(try readRecord(inAdditional: false, into: &message)!)
        }
        for _ in 0..<additionalCount {
            if let record = try readRecord(inAdditional: true, into: &message) { message.additionals.append(record) }
        }
        if let edns = message.edns {
            // The OPT record carries the response code's high bits.
            message.responseCode.rawValue |= UInt16(edns.extendedResponseCode) << 4
        }
        return message
    }

    /// A record; nil for the OPT record, which goes to `message.edns`.
    private mutating func readRecord(
        inAdditional: Bool, into message: inout DNSMessage
    ) throws(DNSWireError) -> DNSRecord? {
        let name = try readName()
        let type = DNSRecordType(rawValue: try readUInt16())
        let recordClass = try readUInt16()
        let ttl = try readUInt32()
        let length = Int(try readUInt16())
        let end = offset + length
        guard end <= bytes.count else { throw DNSWireError(.truncated) }
        if type == .opt {
            guard inAdditional, message.edns == nil, name.labels.isEmpty else { throw DNSWireError(.badOPT) }
            message.edns = EDNS(
                udpPayloadSize: recordClass, extendedResponseCode: UInt8(ttl >> 24), version: UInt8((ttl >> 16) & 0xFF),
                dnssecOK: ttl & 0x8000 != 0, options: try readBytes(length))
            return nil
        }
        let data: DNSRecordData
        switch type {
        case .a:
            guard length == 4 else { throw DNSWireError(.badRecordData) }
            data = .a(try readBytes(4))
        case .aaaa:
            guard length == 16 else { throw DNSWireError(.badRecordData) }
            data = .aaaa(try readBytes(16))
        case .cname:
            data = .cname(try readName())
        case .srv:
            guard length >= 7 else { throw DNSWireError(.badRecordData) }
            data = .srv(
                priority: try readUInt16(), weight: try readUInt16(), port: try readUInt16(), target: try readName())
        case .soa:
            data = .soa(
                primary: try readName(), mailbox: try readName(), serial: try readUInt32(), refresh: try readUInt32(),
                retry: try readUInt32(), expire: try readUInt32(), minimum: try readUInt32())
        default:
            data = .other(type: type, bytes: try readBytes(length))
        }
        // The data must fill its announced length exactly.
        guard offset == end else { throw DNSWireError(.badRecordData) }
        return DNSRecord(name: name, ttl: ttl, data: data, recordClass: recordClass)
    }

    /// A name, following compression pointers. Each pointer must point before the run of labels it ends (so every
    /// jump goes strictly backwards and the walk ends), and the expanded name must fit 255 bytes.
    mutating func readName() throws(DNSWireError) -> DNSName {
        var labels: [[UInt8]] = []
        var position = offset
        var runStart = offset
        var followed = 0
        var wireLength = 1
        while true {
            guard position < bytes.count else { throw DNSWireError(.truncated) }
            let length = bytes[position]
            switch length >> 6 {
            case 0:
                if length == 0 {
                    if followed == 0 { offset = position + 1 }
                    return DNSName(validatedLabels: labels)
                }
                let start = position + 1
                let end = start + Int(length)
                guard end <= bytes.count else { throw DNSWireError(.truncated) }
                wireLength += 1 + Int(length)
                guard wireLength <= DNSName.maximumWireLength else { throw DNSWireError(.nameTooLong) }
                var label = [UInt8](repeating: 0, count: Int(length))
                for index in 0..<Int(length) { label[index] = DNSName.fold(bytes[start + index]) }
                labels.append(label)
                position = end
            case 3:
                guard position + 1 < bytes.count else { throw DNSWireError(.truncated) }
                let target = Int(length & 0x3F) << 8 | Int(bytes[position + 1])
                guard target < runStart, followed < Self.maximumPointers else { throw DNSWireError(.badPointer) }
                if followed == 0 { offset = position + 2 }
                followed += 1
                position = target
                runStart = target
            default:
                // 01 and 10 are reserved (the extended label types of RFC 6891 were never deployed).
                throw DNSWireError(.badLabel)
            }
        }
    }

    mutating func readUInt16() throws(DNSWireError) -> UInt16 {
        guard offset + 2 <= bytes.count else { throw DNSWireError(.truncated) }
        defer { offset += 2 }
        return UInt16(bytes[offset]) << 8 | UInt16(bytes[offset + 1])
    }

    mutating func readUInt32() throws(DNSWireError) -> UInt32 {
        UInt32(try readUInt16()) << 16 | UInt32(try readUInt16())
    }

    mutating func readBytes(_ count: Int) throws(DNSWireError) -> [UInt8] {
        guard offset + count <= bytes.count else { throw DNSWireError(.truncated) }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }
}

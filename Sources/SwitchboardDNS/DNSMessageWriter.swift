import NIOCore

extension DNSMessage {
    /// The wire form, with names compressed (RFC 1035 section 4.1.4).
    public func encoded() throws(DNSWireError) -> ByteBuffer {
        var writer = DNSMessageWriter()
        try writer.write(self)
        return writer.buffer
    }

    /// The wire form in at most `limit` bytes (a UDP answer's size).
    ///
    /// When the whole message is too large, the additional section goes first (the client can ask for those
    /// records itself, so no TC is needed: RFC 2181 section 9); when the answers alone are too large, as many whole
    /// answers as fit are kept, the authority section is dropped and TC is set, so the client asks again over TCP.
    public func encoded(limit: Int) throws(DNSWireError) -> ByteBuffer {
        // Past 65,535 bytes the whole message cannot be written at all: that too means "does not fit".
        if let whole = try? encoded(), whole.readableBytes <= limit { return whole }
        var lighter = self
        lighter.additionals = []
        if let withoutAdditionals = try? lighter.encoded(), withoutAdditionals.readableBytes <= limit {
            return withoutAdditionals
        }
        lighter.authorities = []
        lighter.isTruncated = true
        // The most answers that fit: a binary search over how many are kept (0 always fits a sane limit).
        var fits = 0
        var tooMany = answers.count
        while tooMany - fits > 1 {
            let middle = (fits + tooMany) / 2
            lighter.answers = Array(answers.prefix(middle))
            if let attempt = try? lighter.encoded(), attempt.readableBytes <= limit {
                fits = middle
            } else {
                tooMany = middle
            }
        }
        lighter.answers = Array(answers.prefix(fits))
        return try lighter.encoded()
    }
}

/// Writes the wire form, remembering where each name suffix was written so later names can point at it.
struct DNSMessageWriter {
    var buffer = ByteBuffer()
    /// Wire-form suffixes (lowercase) and the offset they were written at; only offsets a pointer can hold.
    private var suffixes: [[UInt8]: Int] = [:]

    init() {
        buffer.reserveCapacity(512)
    }

    mutating func write(_ message: DNSMessage) throws(DNSWireError) {
        var flags: UInt16 = 0
        if message.isResponse { flags |= 0x8000 }
        flags |= UInt16(message.opcode & 0xF) << 11
        if message.isAuthoritative { flags |= 0x0400 }
        if message.isTruncated { flags |= 0x0200 }
        if message.recursionDesired { flags |= 0x0100 }
        if message.recursionAvailable { flags |= 0x0080 }
        flags |= message.responseCode.rawValue & 0xF
        let additionalCount = message.additionals.count + (message.edns == nil ? 0 : 1)
        for count in [message.questions.count, message.answers.count, message.authorities.count, additionalCount] {
            guard count <= Int(UInt16.max) else { throw DNSWireError(.tooLarge) }
        }
        buffer.writeInteger(message.id)
        buffer.writeInteger(flags)
        buffer.writeInteger(UInt16(message.questions.count))
        buffer.writeInteger(UInt16(message.answers.count))
        buffer.writeInteger(UInt16(message.authorities.count))
        buffer.writeInteger(UInt16(additionalCount))
        for question in message.questions {
            writeName(question.name)
            buffer.writeInteger(question.type.rawValue)
            buffer.writeInteger(question.recordClass)
        }
        for record in message.answers { try write(record) }
        for record in message.authorities { try write(record) }
        for record in message.additionals { try write(record) }
        if let edns = message.edns {
            buffer.writeInteger(UInt8(0))  // the root name
            buffer.writeInteger(DNSRecordType.opt.rawValue)
            buffer.writeInteger(edns.udpPayloadSize)
            let extended = UInt8(truncatingIfNeeded: message.responseCode.rawValue >> 4)
            var ttl = UInt32(extended) << 24 | UInt32(edns.version) << 16
            if edns.dnssecOK { ttl |= 0x8000 }
            buffer.writeInteger(ttl)
            guard edns.options.count <= Int(UInt16.max) else { throw DNSWireError(.tooLarge) }
            buffer.writeInteger(UInt16(edns.options.count))
            buffer.writeBytes(edns.options)
        }
        guard buffer.readableBytes <= Int(UInt16.max) else { throw DNSWireError(.tooLarge) }
    }

    private mutating func write(_ record: DNSRecord) throws(DNSWireError) {
        writeName(record.name)
        buffer.writeInteger(record.type.rawValue)
        buffer.writeInteger(record.recordClass)
        buffer.writeInteger(record.ttl)
        let lengthAt = buffer.writerIndex
        buffer.writeInteger(UInt16(0))
        let start = buffer.writerIndex
        switch record.data {
        case .a(let address), .aaaa(let address):
            buffer.writeBytes(address)
        case .cname(let target):
            writeName(target)
        case .srv(let priority, let weight, let port, let target):
            buffer.writeInteger(priority)
            buffer.writeInteger(weight)
            buffer.writeInteger(port)
            // RFC 2782 forbids compressing the target; resolvers accept it, but stay strict.
            writeName(target, compress: false)
        case .soa(let primary, let mailbox, let serial, let refresh, let retry, let expire, let minimum):
            writeName(primary)
            writeName(mailbox)
            for value in [serial, refresh, retry, expire, minimum] { buffer.writeInteger(value) }
        case .other(_, let bytes):
            buffer.writeBytes(bytes)
        }
        let length = buffer.writerIndex - start
        guard length <= Int(UInt16.max) else { throw DNSWireError(.tooLarge) }
        buffer.setInteger(UInt16(length), at: lengthAt)
    }

    /// Writes `name`, pointing at an earlier copy of its longest known suffix.
    mutating func writeName(_ name: DNSName, compress: Bool = true) {
        let labels = name.labels
        for index in labels.indices {
            let suffix = Self.wireForm(labels[index...])
            if compress, let earlier = suffixes[suffix] {
                buffer.writeInteger(UInt16(0xC000 | earlier))
                return
            }
            if buffer.writerIndex < 0x4000, suffixes[suffix] == nil { suffixes[suffix] = buffer.writerIndex }
            buffer.writeInteger(UInt8(labels[index].count))
            buffer.writeBytes(labels[index])
        }
        buffer.writeInteger(UInt8(0))
    }

    private static func wireForm(_ labels: ArraySlice<[UInt8]>) -> [UInt8] {
        var bytes: [UInt8] = []
        for label in labels {
            bytes.append(UInt8(label.count))
            bytes.append(contentsOf: label)
        }
        return bytes
    }
}

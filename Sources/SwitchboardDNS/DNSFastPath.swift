import NIOCore
import SwitchboardCatalog
import SwitchboardCore
import Synchronization

/// The hot path of DNS: queries for a service's addresses or SRV records, answered from records encoded once per
/// change of the service instead of once per query.
///
/// A query takes this path when it is the plain shape resolvers send (one uncompressed question of class IN, type
/// A, AAAA, SRV or ANY, for a `<service>.service`, `<tag>.<service>.service` or `_<service>._<tag>.service` name,
/// and at most an EDNS0 version 0 OPT record) and the service has records of that type; everything else goes the
/// general way (``DNSResponder/answer(_:)``), which gives the same answers. Each entry keeps the service index it
/// was built at and is rebuilt when the service changes, so an instance turning critical leaves the next answer.
/// Records are shuffled per response, as on the general path.
final class DNSFastPath: Sendable {
    /// One answer, encoded: each record without its owner name (always the question's, a pointer to offset 12).
    struct Entry: Sendable {
        var service: ServiceName
        /// The service's index when the entry was built.
        var version: UInt64
        /// Type, class, TTL, length and data of each answer record.
        var answers: [[UInt8]]
        /// For each answer: an SRV target's address record after its name (type to data), or empty.
        var additionals: [[UInt8]]
        /// Each SRV answer's target in wire form: additionals point at its copy in the answer, or repeat it when
        /// that copy lies beyond what a pointer can reach (16 KiB).
        var targets: [[UInt8]]
    }

    private struct Key: Hashable {
        /// The name's labels in front of the domain, in wire form, lowercased.
        var relativeName: [UInt8]
        var type: UInt16
    }

    private let catalog: Catalog
    private let configuration: DNSConfiguration
    private let domainWire: [UInt8]
    private let entries = Mutex<[Key: Entry]>([:])
    /// Whether DNS may tell of a service (checked on every answer: the ACLs can change).
    private let visible: @Sendable (ServiceName) -> Bool
    /// Bounds the table; only names of services with healthy instances ever get an entry.
    private static let capacity = 4096

    init(
        catalog: Catalog, configuration: DNSConfiguration,
        visible: @escaping @Sendable (ServiceName) -> Bool = { _ in true }
    ) {
        self.visible = visible
        self.catalog = catalog
        self.configuration = configuration
        var wire: [UInt8] = []
        for label in configuration.domain.labels {
            wire.append(UInt8(label.count))
            wire += label
        }
        domainWire = wire + [0]
    }

    /// The encoded answer to `query`, or nil when the query is not one this path takes.
    func respond(to query: ByteBuffer, overTCP: Bool, random: inout FastRandom) -> ByteBuffer? {
        query.withUnsafeReadableBytes { bytes -> ByteBuffer? in
            guard let parsed = SimpleQuery(bytes, domain: domainWire) else { return nil }
            let key = Key(relativeName: parsed.relativeName, type: parsed.type)
            guard let entry = currentEntry(for: key, parsed: parsed), visible(entry.service) else { return nil }
            let limit =
                overTCP
                ? Int(UInt16.max)
                : parsed.udpPayloadSize.map { max(512, min(Int($0), configuration.maximumUDPPayload)) } ?? 512
            return assemble(entry, query: bytes, parsed: parsed, limit: limit, random: &random)
        }
    }

    private func currentEntry(for key: Key, parsed: SimpleQuery) -> Entry? {
        if let entry = entries.withLock({ $0[key] }), entry.version == catalog.serviceIndex(entry.service) {
            return entry
        }
        guard let entry = build(parsed) else { return nil }
        entries.withLock { entries in
            if entries.count >= Self.capacity { entries.removeAll(keepingCapacity: true) }
            entries[key] = entry
        }
        return entry
    }

    /// Encodes the records the general path would answer with.
    private func build(_ parsed: SimpleQuery) -> Entry? {
        guard let service = try? ServiceName(String(decoding: parsed.serviceLabel, as: UTF8.self)) else { return nil }
        // The index first: a change landing before the instances are read makes the entry stale at once, never wrong.
        let version = catalog.serviceIndex(service)
        guard
            let (_, instances) = DNSResponder.healthyInstances(
                in: catalog, service: parsed.serviceLabel, tag: parsed.tag, visible: visible)
        else { return nil }
        let wantedAddress = DNSResponder.addressType(answering: DNSRecordType(rawValue: parsed.type), among: instances)
        let ttl = configuration.ttl
        var entry = Entry(service: service, version: version, answers: [], additionals: [], targets: [])
        for instance in instances {
            guard let address = DNSResponder.addressBytes(instance.definition.address) else {
                guard parsed.type == DNSRecordType.srv.rawValue else { continue }
                // A hostname instance: its SRV record names the host, with no address to add.
                var record = Self.fixedPart(type: .srv, ttl: ttl)
                let target = DNSResponder.targetName(of: instance, configuration: configuration)
                Self.appendSRVData(instance, target: target, to: &record)
                entry.answers.append(record)
                entry.additionals.append([])
                entry.targets.append(Self.wireForm(target))
                continue
            }
            let addressType: DNSRecordType = address.count == 4 ? .a : .aaaa
            switch parsed.type {
            case DNSRecordType.srv.rawValue:
                var record = Self.fixedPart(type: .srv, ttl: ttl)
                let target = DNSResponder.targetName(of: instance, configuration: configuration)
                Self.appendSRVData(instance, target: target, to: &record)
                var additional = Self.fixedPart(type: addressType, ttl: ttl)
                Self.appendData(address, to: &additional)
                entry.answers.append(record)
                entry.additionals.append(additional)
                entry.targets.append(Self.wireForm(target))
            case _ where addressType == wantedAddress:
                var record = Self.fixedPart(type: addressType, ttl: ttl)
                Self.appendData(address, to: &record)
                entry.answers.append(record)
                entry.additionals.append([])
                entry.targets.append([])
            default:
                continue
            }
        }
        return entry.answers.isEmpty ? nil : entry
    }

    /// The response: the query's header and question, then the records in a fresh random order.
    private func assemble(
        _ entry: Entry, query: UnsafeRawBufferPointer, parsed: SimpleQuery, limit: Int, random: inout FastRandom
    ) -> ByteBuffer {
        var order = Array(entry.answers.indices)
        order.shuffle(using: &random)
        if let answerLimit = configuration.answerLimit, order.count > max(1, answerLimit) {
            order.removeLast(order.count - max(1, answerLimit))
        }
        let opt = parsed.udpPayloadSize == nil ? 0 : 11
        let fixed = parsed.questionEnd + opt
        // The answers that fit, and where each SRV target will be (just past the name pointer, type to port).
        var answerBytes = 0
        var targetOffsets: [Int] = []
        targetOffsets.reserveCapacity(order.count)
        for index in order {
            guard fixed + answerBytes + 2 + entry.answers[index].count <= limit else { break }
            targetOffsets.append(parsed.questionEnd + answerBytes + 18)
            answerBytes += 2 + entry.answers[index].count
        }
        let kept = targetOffsets.count
        let truncated = kept < order.count
        var additionalBytes = 0
        var additionalCount = 0
        for (position, index) in order.prefix(kept).enumerated() where !entry.additionals[index].isEmpty {
            let name = targetOffsets[position] < 0x4000 ? 2 : entry.targets[index].count
            additionalBytes += name + entry.additionals[index].count
            additionalCount += 1
        }
        // Additional records only when all of them fit with every answer (RFC 2181 section 9).
        let withAdditionals = !truncated && additionalCount > 0 && fixed + answerBytes + additionalBytes <= limit
        var buffer = ByteBuffer()
        buffer.reserveCapacity(fixed + answerBytes + (withAdditionals ? additionalBytes : 0))
        // Header: the query's id, QR and AA set, its opcode (0) and RD kept, TC when not all answers fit.
        buffer.writeInteger(parsed.id)
        var flags: UInt16 = 0x8400 | (parsed.flags & 0x0100)
        if truncated { flags |= 0x0200 }
        buffer.writeInteger(flags)
        buffer.writeInteger(UInt16(1))
        buffer.writeInteger(UInt16(kept))
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(UInt16((withAdditionals ? additionalCount : 0) + (opt > 0 ? 1 : 0)))
        buffer.writeBytes(UnsafeRawBufferPointer(rebasing: query[12..<parsed.questionEnd]))
        for index in order.prefix(kept) {
            buffer.writeInteger(UInt16(0xC00C))
            buffer.writeBytes(entry.answers[index])
        }
        if withAdditionals {
            for (position, index) in order.prefix(kept).enumerated() where !entry.additionals[index].isEmpty {
                // The owner is the SRV target written above: point at it when a pointer reaches.
                if targetOffsets[position] < 0x4000 {
                    buffer.writeInteger(UInt16(0xC000 | targetOffsets[position]))
                } else {
                    buffer.writeBytes(entry.targets[index])
                }
                buffer.writeBytes(entry.additionals[index])
            }
        }
        if opt > 0 {
            buffer.writeInteger(UInt8(0))
            buffer.writeInteger(DNSRecordType.opt.rawValue)
            buffer.writeInteger(UInt16(clamping: configuration.maximumUDPPayload))
            // RFC 3225: the DO bit is copied from the query.
            buffer.writeInteger(parsed.dnssecOK ? UInt32(0x8000) : 0)
            buffer.writeInteger(UInt16(0))
        }
        return buffer
    }

    private static func wireForm(_ name: DNSName) -> [UInt8] {
        var bytes: [UInt8] = []
        for label in name.labels {
            bytes.append(UInt8(label.count))
            bytes += label
        }
        bytes.append(0)
        return bytes
    }

    /// Type, class IN, TTL and a zero length, to be followed by the data.
    private static func fixedPart(type: DNSRecordType, ttl: UInt32) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64)
        bytes += [UInt8(type.rawValue >> 8), UInt8(type.rawValue & 0xFF), 0, 1]
        bytes += [UInt8(ttl >> 24), UInt8((ttl >> 16) & 0xFF), UInt8((ttl >> 8) & 0xFF), UInt8(ttl & 0xFF)]
        bytes += [0, 0]
        return bytes
    }

    private static func appendData(_ data: [UInt8], to record: inout [UInt8]) {
        record[8] = UInt8(data.count >> 8)
        record[9] = UInt8(data.count & 0xFF)
        record += data
    }

    /// Priority 1, the weight and port, and the target written out in full (RFC 2782: no compression).
    private static func appendSRVData(_ instance: Instance, target: DNSName, to record: inout [UInt8]) {
        let weight = UInt16(clamping: instance.definition.weight)
        let port = UInt16(clamping: instance.definition.port)
        var data: [UInt8] = [0, 1, UInt8(weight >> 8), UInt8(weight & 0xFF), UInt8(port >> 8), UInt8(port & 0xFF)]
        for label in target.labels {
            data.append(UInt8(label.count))
            data += label
        }
        data.append(0)
        appendData(data, to: &record)
    }
}

/// A query of the plain shape the fast path takes, read without building a ``DNSMessage``.
struct SimpleQuery {
    var id: UInt16
    var flags: UInt16
    /// The offset just past the question.
    var questionEnd: Int
    var type: UInt16
    /// The UDP size offered by an EDNS0 OPT record, when there is one.
    var udpPayloadSize: UInt16?
    /// The OPT record's DO bit.
    var dnssecOK = false
    /// The labels before the domain, in wire form, lowercased.
    var relativeName: [UInt8]
    var serviceLabel: [UInt8]
    var tag: [UInt8]?

    init?(_ bytes: UnsafeRawBufferPointer, domain: [UInt8]) {
        guard bytes.count >= 17 else { return nil }
        func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }
        id = u16(0)
        flags = u16(2)
        // A query (QR clear), opcode 0, one question, no answers or authority, at most one additional (OPT).
        guard flags & 0xF800 == 0, u16(4) == 1, u16(6) == 0, u16(8) == 0, u16(10) <= 1 else { return nil }
        // The question's name: plain labels (no pointer), lowercased as they are copied.
        var position = 12
        var name: [UInt8] = []
        name.reserveCapacity(64)
        var labelStarts: [Int] = []
        while true {
            guard position < bytes.count else { return nil }
            let length = Int(bytes[position])
            if length == 0 { break }
            guard length <= 63, position + 1 + length <= bytes.count, name.count + 1 + length <= 254 else {
                return nil
            }
            labelStarts.append(name.count)
            name.append(UInt8(length))
            for offset in 1...length { name.append(DNSName.fold(bytes[position + offset])) }
            position += 1 + length
        }
        name.append(0)
        position += 1
        guard position + 4 <= bytes.count else { return nil }
        type = u16(position)
        guard u16(position + 2) == DNSClass.internet,
            type == DNSRecordType.a.rawValue || type == DNSRecordType.aaaa.rawValue
                || type == DNSRecordType.srv.rawValue || type == DNSRecordType.any.rawValue
        else { return nil }
        position += 4
        questionEnd = position
        if u16(10) == 1 {
            // Exactly an OPT record at the root, version 0, ending the message.
            guard position + 11 <= bytes.count, bytes[position] == 0, u16(position + 1) == DNSRecordType.opt.rawValue,
                bytes[position + 6] == 0, position + 11 + Int(u16(position + 9)) == bytes.count
            else { return nil }
            udpPayloadSize = u16(position + 3)
            dnssecOK = bytes[position + 7] & 0x80 != 0
        } else {
            guard position == bytes.count else { return nil }
            udpPayloadSize = nil
        }
        // The domain must end the name; `service` must come right before it.
        guard name.count > domain.count, name.suffix(domain.count).elementsEqual(domain) else { return nil }
        let relativeEnd = name.count - domain.count
        let relativeStarts = labelStarts.filter { $0 < relativeEnd }
        guard relativeStarts.count == 2 || relativeStarts.count == 3 else { return nil }
        func label(_ index: Int) -> ArraySlice<UInt8> {
            let start = relativeStarts[index]
            return name[(start + 1)..<(start + 1 + Int(name[start]))]
        }
        guard label(relativeStarts.count - 1).elementsEqual("service".utf8) else { return nil }
        relativeName = Array(name[..<relativeEnd])
        if relativeStarts.count == 2 {
            serviceLabel = Array(label(0))
            tag = nil
        } else if label(0).first == UInt8(ascii: "_"), label(1).first == UInt8(ascii: "_") {
            serviceLabel = Array(label(0).dropFirst())
            tag = label(1).elementsEqual("_tcp".utf8) ? nil : Array(label(1).dropFirst())
        } else {
            serviceLabel = Array(label(1))
            tag = Array(label(0))
        }
    }
}

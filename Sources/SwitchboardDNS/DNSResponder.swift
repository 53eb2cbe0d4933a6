import NIOCore
import SwitchboardCatalog
import SwitchboardCore

/// Answers DNS queries for the agent's zone from the catalog in memory (no store round trip per query).
///
/// Names, under the configured domain (`switchboard.` by default):
/// - `<service>.service` and `<tag>.<service>.service`: A and AAAA records of the service's healthy instances
///   (instances registered with a hostname have no address to give here; they appear in SRV answers);
/// - `_<service>._tcp.service` and `_<service>._<tag>.service` (RFC 2782), and the two forms above: SRV records,
///   priority 1, the instance's weight, its port, and a target whose address goes in the additional section;
/// - `<id>.<service>.instance`: one healthy instance (a CNAME when it was registered with a hostname);
/// - `<node>.node`: the address of an agent (a Consul node: Consul's clients and tools ask for these names);
/// - `<hex address>.addr`: the address spelled in hex (8 digits for IPv4, 32 for IPv6), the target of SRV records
///   whose instance id cannot be a DNS name.
///
/// "Healthy" is the catalog's own definition (passing or warning), the one the API and the client library use.
/// A name under the zone with nothing healthy behind it is NXDOMAIN, with the zone's SOA in the authority
/// section; a name outside the zone is REFUSED (this server never recurses). Answers are shuffled every time.
public struct DNSResponder: Sendable {
    public let catalog: Catalog
    public let configuration: DNSConfiguration
    /// The agents as nodes: each one's name and IP address, asked for each `.node` query (they come and go).
    public let nodes: @Sendable () -> [DNSNode]
    /// Whether DNS may tell of a service (the agent's ACLs for DNS: its DNS token's or the anonymous rights); a
    /// service it may not is answered as if it did not exist.
    public let visible: @Sendable (ServiceName) -> Bool
    private let fastPath: DNSFastPath
    private let serviceLabel = Array("service".utf8)
    private let instanceLabel = Array("instance".utf8)
    private let addressLabel = Array("addr".utf8)
    private let tcpLabel = Array("_tcp".utf8)
    private let nodeLabel = Array("node".utf8)

    public init(
        catalog: Catalog, configuration: DNSConfiguration, nodes: @escaping @Sendable () -> [DNSNode] = { [] },
        visible: @escaping @Sendable (ServiceName) -> Bool = { _ in true }
    ) {
        self.catalog = catalog
        self.configuration = configuration
        self.nodes = nodes
        self.visible = visible
        fastPath = DNSFastPath(catalog: catalog, configuration: configuration, visible: visible)
    }

    /// The answer to the message in `query`, ready to send; nil when nothing should be sent (no header at all, or
    /// a response sent to us).
    public func respond(to query: ByteBuffer, overTCP: Bool) -> ByteBuffer? {
        var random = FastRandom()
        return respond(to: query, overTCP: overTCP, random: &random)
    }

    /// ``respond(to:overTCP:)`` shuffling with `random`: servers keep one generator per event loop, since asking
    /// the kernel for randomness on every query would cost more than the rest of the answer.
    public func respond(to query: ByteBuffer, overTCP: Bool, random: inout FastRandom) -> ByteBuffer? {
        if let answer = fastPath.respond(to: query, overTCP: overTCP, random: &random) { return answer }
        return respondInGeneral(to: query, overTCP: overTCP, random: &random)
    }

    /// ``respond(to:overTCP:)`` without the fast path: every query parsed into a ``DNSMessage`` and answered by
    /// ``answer(_:)``.
    func respondInGeneral(to query: ByteBuffer, overTCP: Bool, random: inout FastRandom) -> ByteBuffer? {
        // The header alone settles most malformed queries, before any of the (possibly huge) body is parsed: a
        // query has one question, no answer or authority records, and at most an OPT record in the additional
        // section. A response sent to a server is never answered (two servers would answer each other forever).
        guard let (id, flags) = DNSMessage.header(of: query), flags & 0x8000 == 0 else { return nil }
        func refusal(_ code: DNSResponseCode) -> ByteBuffer? {
            let message = DNSMessage(
                id: id, isResponse: true, opcode: UInt8((flags >> 11) & 0xF), recursionDesired: flags & 0x0100 != 0,
                responseCode: code)
            return try? message.encoded()
        }
        guard (flags >> 11) & 0xF == 0 else { return refusal(.notImplemented) }
        let counts = (0..<4).map { query.getInteger(at: query.readerIndex + 4 + 2 * $0, as: UInt16.self) ?? 0 }
        guard counts[0] == 1, counts[1] == 0, counts[2] == 0, counts[3] <= 1 else { return refusal(.formatError) }
        let message: DNSMessage
        do {
            message = try DNSMessage(parsing: query)
        } catch {
            return refusal(.formatError)
        }
        guard !message.isResponse else { return nil }
        let response = answer(message, random: &random)
        let limit: Int
        if overTCP {
            limit = Int(UInt16.max)
        } else if let edns = message.edns {
            limit = max(512, min(Int(edns.udpPayloadSize), configuration.maximumUDPPayload))
        } else {
            limit = 512
        }
        if var encoded = try? response.encoded(limit: limit) {
            Self.echoQuestionAsSent(from: query, into: &encoded)
            return encoded
        }
        var failure = response
        failure.answers = []
        failure.authorities = []
        failure.additionals = []
        failure.responseCode = .serverFailure
        return try? failure.encoded()
    }

    /// Puts the question's name back as the client wrote it: parsing lowercased it, and resolvers that randomise
    /// the case of their queries (the "0x20" defence against spoofing) check that the answer echoes it exactly.
    /// The question is the first name of both messages and never compressed there, so the bytes line up.
    static func echoQuestionAsSent(from query: ByteBuffer, into response: inout ByteBuffer) {
        guard let sent = query.getBytes(at: query.readerIndex, length: query.readableBytes), sent.count > 12,
            response.readableBytes > 12
        else { return }
        var end = 12
        while end < sent.count, sent[end] != 0 {
            // A pointer or a reserved length: not a plain name, leave the answer as it is.
            guard sent[end] & 0xC0 == 0 else { return }
            end += 1 + Int(sent[end])
        }
        guard end < sent.count, end < response.readableBytes,
            let written = response.getBytes(at: response.readerIndex + 12, length: end + 1 - 12),
            written.elementsEqual(sent[12...end].map(DNSName.fold))
        else { return }
        response.setBytes(sent[12...end], at: response.readerIndex + 12)
    }

    /// The response to a parsed query.
    public func answer(_ query: DNSMessage) -> DNSMessage {
        var random = FastRandom()
        return answer(query, random: &random)
    }

    /// ``answer(_:)`` shuffling with `random`.
    public func answer(_ query: DNSMessage, random: inout FastRandom) -> DNSMessage {
        var response = DNSMessage(
            id: query.id, isResponse: true, opcode: query.opcode, recursionDesired: query.recursionDesired,
            questions: query.questions)
        if let edns = query.edns {
            // RFC 3225: the DO bit is copied into the answer (there are no signatures to go with it here).
            response.edns = EDNS(
                udpPayloadSize: UInt16(clamping: configuration.maximumUDPPayload), dnssecOK: edns.dnssecOK)
        }
        if let version = query.edns?.version, version > 0 {
            response.responseCode = .badVersion
            return response
        }
        guard query.opcode == 0 else {
            response.responseCode = .notImplemented
            return response
        }
        guard query.questions.count == 1, let question = query.questions.first else {
            response.responseCode = .formatError
            return response
        }
        guard question.recordClass == DNSClass.internet || question.recordClass == DNSClass.any,
            question.name.isSubdomain(of: configuration.domain)
        else {
            response.responseCode = .refused
            return response
        }
        response.isAuthoritative = true
        switch resolve(question) {
        case .records(var answers, let additionals):
            answers.shuffle(using: &random)
            if let limit = configuration.answerLimit, answers.count > max(1, limit) {
                answers.removeLast(answers.count - max(1, limit))
            }
            response.answers = answers
            // Only the addresses of targets still in the answer.
            let targets = Set(
                answers.compactMap { record -> DNSName? in
                    if case .srv(_, _, _, let target) = record.data { return target }
                    return nil
                })
            response.additionals = additionals.filter { targets.contains($0.name) }
        case .noData:
            response.authorities = [startOfAuthority()]
        case .noSuchName:
            response.responseCode = .nameError
            response.authorities = [startOfAuthority()]
        }
        return response
    }

    private enum Resolution {
        case records([DNSRecord], additionals: [DNSRecord])
        /// The name exists but has no record of the asked type.
        case noData
        case noSuchName
    }

    private func resolve(_ question: DNSQuestion) -> Resolution {
        let labels = question.name.labels(before: configuration.domain)
        guard let kind = labels.last else {
            // The zone's apex.
            return question.type == .soa || question.type == .any
                ? .records([startOfAuthority()], additionals: []) : .noData
        }
        let start = labels.startIndex
        switch (kind, labels.count) {
        case (serviceLabel, 2):
            return service(labels[start], tag: nil, question: question)
        case (serviceLabel, 3)
        where labels[start].first == UInt8(ascii: "_") && labels[start + 1].first == UInt8(ascii: "_"):
            // RFC 2782: _<service>._<protocol or tag>; _tcp means any instance.
            let tag = labels[start + 1] == tcpLabel ? nil : Array(labels[start + 1].dropFirst())
            return service(Array(labels[start].dropFirst()), tag: tag, question: question)
        case (serviceLabel, 3):
            return service(labels[start + 1], tag: labels[start], question: question)
        case (instanceLabel, 3...):
            let id = labels[start..<labels.endIndex - 2].map { String(decoding: $0, as: UTF8.self) }.joined(
                separator: ".")
            return instance(id: id, service: labels[labels.endIndex - 2], question: question)
        case (nodeLabel, 2):
            let name = String(decoding: labels[start], as: UTF8.self)
            guard let node = nodes().first(where: { $0.name.lowercased() == name }) else { return .noSuchName }
            guard let address = Self.addressBytes(node.address) else { return .noData }
            let record = DNSRecord(
                name: question.name, ttl: configuration.ttl, data: address.count == 4 ? .a(address) : .aaaa(address))
            switch question.type {
            case record.type, .any: return .records([record], additionals: [])
            default: return .noData
            }
        case (addressLabel, 2):
            guard let address = Self.address(fromHex: labels[start]) else { return .noSuchName }
            let record = DNSRecord(
                name: question.name, ttl: configuration.ttl, data: address.count == 4 ? .a(address) : .aaaa(address))
            switch question.type {
            case record.type, .any: return .records([record], additionals: [])
            default: return .noData
            }
        default:
            return .noSuchName
        }
    }

    /// The healthy instances of the service named by `label`, with `tag` when given. DNS names are lowercase (they
    /// compare without case), while tags may not be: tags match here without regard to case.
    static func healthyInstances(
        in catalog: Catalog, service label: [UInt8], tag: [UInt8]?, visible: (ServiceName) -> Bool
    ) -> (ServiceName, [Instance])? {
        guard let service = try? ServiceName(String(decoding: label, as: UTF8.self)), visible(service) else {
            return nil
        }
        var instances = catalog.unorderedInstances(of: service)
        if let tag {
            let wanted = String(decoding: tag, as: UTF8.self)
            instances.removeAll { instance in !instance.definition.tags.contains { $0.lowercased() == wanted } }
        }
        return (service, instances)
    }

    /// Which address records answer `type` for these instances: A or AAAA as asked; for ANY, one set only (RFC
    /// 8482: a minimal answer), the IPv4 addresses when there are any.
    static func addressType(answering type: DNSRecordType, among instances: [Instance]) -> DNSRecordType? {
        switch type {
        case .a, .aaaa: return type
        case .any:
            return instances.contains { $0.definition.address.kind == .ipv4 } ? .a : .aaaa
        default: return nil
        }
    }

    private func service(_ label: [UInt8], tag: [UInt8]?, question: DNSQuestion) -> Resolution {
        guard let (_, instances) = Self.healthyInstances(in: catalog, service: label, tag: tag, visible: visible),
            !instances.isEmpty
        else { return .noSuchName }
        var answers: [DNSRecord] = []
        var additionals: [DNSRecord] = []
        switch question.type {
        case .srv:
            for instance in instances {
                let target = Self.targetName(of: instance, configuration: configuration)
                answers.append(serviceRecord(instance, name: question.name, target: target))
                if let address = addressData(of: instance) {
                    additionals.append(DNSRecord(name: target, ttl: configuration.ttl, data: address))
                }
            }
        case .a, .aaaa, .any:
            let wanted = Self.addressType(answering: question.type, among: instances)
            for instance in instances {
                guard let address = addressData(of: instance), address.type == wanted else { continue }
                answers.append(DNSRecord(name: question.name, ttl: configuration.ttl, data: address))
            }
        default:
            break
        }
        return answers.isEmpty ? .noData : .records(answers, additionals: additionals)
    }

    private func instance(id: String, service label: [UInt8], question: DNSQuestion) -> Resolution {
        guard let service = try? ServiceName(String(decoding: label, as: UTF8.self)), visible(service) else {
            return .noSuchName
        }
        // Ids may hold capitals; the name asked is lowercase: the exact id first, else one equal without case.
        let exact = (try? InstanceID(id)).flatMap { catalog.instance(service: service, id: $0).instance }
        guard
            let instance = exact
                ?? catalog.unorderedInstances(of: service, matching: InstanceQuery(status: .any)).first(where: {
                    $0.id.rawValue.lowercased() == id
                }),
            instance.status.isHealthy
        else { return .noSuchName }
        if instance.definition.address.kind == .hostname {
            guard let target = try? DNSName(instance.definition.address.rawValue) else { return .noData }
            return .records(
                [DNSRecord(name: question.name, ttl: configuration.ttl, data: .cname(target))], additionals: [])
        }
        switch question.type {
        case .srv:
            let address = addressData(of: instance).map {
                [DNSRecord(name: question.name, ttl: configuration.ttl, data: $0)]
            }
            return .records(
                [serviceRecord(instance, name: question.name, target: question.name)], additionals: address ?? [])
        case .a, .aaaa, .any:
            guard let address = addressData(of: instance), question.type == .any || question.type == address.type
            else { return .noData }
            return .records([DNSRecord(name: question.name, ttl: configuration.ttl, data: address)], additionals: [])
        default:
            return .noData
        }
    }

    private func serviceRecord(_ instance: Instance, name: DNSName, target: DNSName) -> DNSRecord {
        DNSRecord(
            name: name, ttl: configuration.ttl,
            data: .srv(
                priority: 1, weight: UInt16(clamping: instance.definition.weight),
                port: UInt16(clamping: instance.definition.port), target: target))
    }

    /// Where an SRV record sends the client: the instance's hostname, its `<id>.<service>.instance` name, or, when
    /// the id cannot be a DNS name (a piece longer than 63 bytes), its `<hex>.addr` name.
    static func targetName(of instance: Instance, configuration: DNSConfiguration) -> DNSName {
        let address = instance.definition.address
        if address.kind == .hostname, let name = try? DNSName(address.rawValue) { return name }
        let idLabels = instance.id.rawValue.split(separator: ".", omittingEmptySubsequences: false).map {
            Array($0.utf8)
        }
        if let name = try? configuration.domain.prepending(
            idLabels + [Array(instance.service.rawValue.utf8), Array("instance".utf8)])
        {
            return name
        }
        let bytes = Self.addressBytes(address) ?? []
        let hex = bytes.map { byte in
            let digits = Array("0123456789abcdef".utf8)
            return [digits[Int(byte >> 4)], digits[Int(byte & 0xF)]]
        }.flatMap { $0 }
        return (try? configuration.domain.prepending([hex, Array("addr".utf8)])) ?? configuration.domain
    }

    private func addressData(of instance: Instance) -> DNSRecordData? {
        guard let bytes = Self.addressBytes(instance.definition.address) else { return nil }
        return bytes.count == 4 ? .a(bytes) : .aaaa(bytes)
    }

    /// The zone's SOA: what negative answers carry, with the negative TTL as both its TTL and its minimum.
    func startOfAuthority() -> DNSRecord {
        let domain = configuration.domain
        return DNSRecord(
            name: domain, ttl: configuration.negativeTTL,
            data: .soa(
                primary: (try? domain.prepending([Array("ns".utf8)])) ?? domain,
                mailbox: (try? domain.prepending([Array("hostmaster".utf8)])) ?? domain,
                serial: UInt32(truncatingIfNeeded: catalog.index), refresh: 3600, retry: 600, expire: 86400,
                minimum: configuration.negativeTTL))
    }

    /// The 4 or 16 bytes of an IP address; nil for a hostname.
    static func addressBytes(_ address: HostAddress) -> [UInt8]? {
        switch address.kind {
        case .hostname: return nil
        case .ipv4: return IPAddressBytes.parse(address.rawValue, family: .ipv4)
        case .ipv6: return IPAddressBytes.parse(address.rawValue, family: .ipv6)
        }
    }

    /// An address from its hex spelling (8 or 32 digits).
    static func address(fromHex label: [UInt8]) -> [UInt8]? {
        guard label.count == 8 || label.count == 32 else { return nil }
        var bytes: [UInt8] = []
        var index = 0
        while index < label.count {
            guard let high = hexValue(label[index]), let low = hexValue(label[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        default: nil
        }
    }
}

/// An agent as DNS answers for it under `<name>.node.<domain>`.
public struct DNSNode: Sendable, Hashable {
    public var name: String
    public var address: HostAddress

    public init(name: String, address: HostAddress) {
        self.name = name
        self.address = address
    }
}

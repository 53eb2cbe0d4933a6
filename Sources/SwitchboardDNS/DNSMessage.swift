/// A DNS message (RFC 1035 section 4): the header, the question and the three record sections.
///
/// Only what an authoritative server for service names needs is modelled: the record types it answers (A, AAAA,
/// CNAME, SRV, SOA) have typed data, every other type is carried as opaque bytes, and the EDNS0 OPT pseudo-record
/// (RFC 6891) is lifted out of the additional section into ``edns``.
public struct DNSMessage: Hashable, Sendable {
    public var id: UInt16
    /// QR: a response rather than a query.
    public var isResponse: Bool
    public var opcode: UInt8
    /// AA: the answer comes from the zone's own data.
    public var isAuthoritative: Bool
    /// TC: the answer did not fit; ask again over TCP.
    public var isTruncated: Bool
    /// RD: the client would like recursion (echoed; this server never recurses).
    public var recursionDesired: Bool
    /// RA: recursion is available (never, here).
    public var recursionAvailable: Bool
    /// The low four bits of the response code; with EDNS, ``EDNS/extendedResponseCode`` holds the high eight.
    public var responseCode: DNSResponseCode
    public var questions: [DNSQuestion]
    public var answers: [DNSRecord]
    public var authorities: [DNSRecord]
    /// The additional section without the OPT record.
    public var additionals: [DNSRecord]
    /// The EDNS0 OPT record, when the message has one.
    public var edns: EDNS?

    public init(
        id: UInt16, isResponse: Bool = false, opcode: UInt8 = 0, isAuthoritative: Bool = false,
        isTruncated: Bool = false, recursionDesired: Bool = false, recursionAvailable: Bool = false,
        responseCode: DNSResponseCode = .noError, questions: [DNSQuestion] = [], answers: [DNSRecord] = [],
        authorities: [DNSRecord] = [], additionals: [DNSRecord] = [], edns: EDNS? = nil
    ) {
        self.id = id
        self.isResponse = isResponse
        self.opcode = opcode
        self.isAuthoritative = isAuthoritative
        self.isTruncated = isTruncated
        self.recursionDesired = recursionDesired
        self.recursionAvailable = recursionAvailable
        self.responseCode = responseCode
        self.questions = questions
        self.answers = answers
        self.authorities = authorities
        self.additionals = additionals
        self.edns = edns
    }
}

/// A response code (RCODE), including the extended codes EDNS allows.
public struct DNSResponseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let noError = DNSResponseCode(rawValue: 0)
    public static let formatError = DNSResponseCode(rawValue: 1)
    public static let serverFailure = DNSResponseCode(rawValue: 2)
    public static let nameError = DNSResponseCode(rawValue: 3)
    public static let notImplemented = DNSResponseCode(rawValue: 4)
    public static let refused = DNSResponseCode(rawValue: 5)
    /// BADVERS (RFC 6891): an EDNS version this server does not speak; needs EDNS to be sent.
    public static let badVersion = DNSResponseCode(rawValue: 16)

    public var description: String {
        switch self {
        case .noError: "NOERROR"
        case .formatError: "FORMERR"
        case .serverFailure: "SERVFAIL"
        case .nameError: "NXDOMAIN"
        case .notImplemented: "NOTIMP"
        case .refused: "REFUSED"
        case .badVersion: "BADVERS"
        default: "RCODE\(rawValue)"
        }
    }
}

/// A record type (TYPE and QTYPE values).
public struct DNSRecordType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let a = DNSRecordType(rawValue: 1)
    public static let ns = DNSRecordType(rawValue: 2)
    public static let cname = DNSRecordType(rawValue: 5)
    public static let soa = DNSRecordType(rawValue: 6)
    public static let txt = DNSRecordType(rawValue: 16)
    public static let aaaa = DNSRecordType(rawValue: 28)
    public static let srv = DNSRecordType(rawValue: 33)
    public static let opt = DNSRecordType(rawValue: 41)
    public static let any = DNSRecordType(rawValue: 255)

    public var description: String {
        switch self {
        case .a: "A"
        case .ns: "NS"
        case .cname: "CNAME"
        case .soa: "SOA"
        case .txt: "TXT"
        case .aaaa: "AAAA"
        case .srv: "SRV"
        case .opt: "OPT"
        case .any: "ANY"
        default: "TYPE\(rawValue)"
        }
    }
}

/// The class of every record here: IN (ANY, 255, is accepted in questions).
public enum DNSClass {
    public static let internet: UInt16 = 1
    public static let any: UInt16 = 255
}

/// A question: a name and the type of records wanted.
public struct DNSQuestion: Hashable, Sendable {
    public var name: DNSName
    public var type: DNSRecordType
    public var recordClass: UInt16

    public init(name: DNSName, type: DNSRecordType, recordClass: UInt16 = DNSClass.internet) {
        self.name = name
        self.type = type
        self.recordClass = recordClass
    }
}

/// A resource record.
public struct DNSRecord: Hashable, Sendable {
    public var name: DNSName
    public var recordClass: UInt16
    /// Seconds a resolver may cache the record.
    public var ttl: UInt32
    public var data: DNSRecordData

    public init(name: DNSName, ttl: UInt32, data: DNSRecordData, recordClass: UInt16 = DNSClass.internet) {
        self.name = name
        self.recordClass = recordClass
        self.ttl = ttl
        self.data = data
    }

    public var type: DNSRecordType { data.type }
}

/// A record's data, typed for the records this server answers with.
public enum DNSRecordData: Hashable, Sendable {
    /// An IPv4 address (4 bytes, network order).
    case a([UInt8])
    /// An IPv6 address (16 bytes, network order).
    case aaaa([UInt8])
    case cname(DNSName)
    case srv(priority: UInt16, weight: UInt16, port: UInt16, target: DNSName)
    case soa(
        primary: DNSName, mailbox: DNSName, serial: UInt32, refresh: UInt32, retry: UInt32, expire: UInt32,
        minimum: UInt32)
    /// Any other type, as its bytes (names inside are not decompressed: such records are only passed over).
    case other(type: DNSRecordType, bytes: [UInt8])

    public var type: DNSRecordType {
        switch self {
        case .a: .a
        case .aaaa: .aaaa
        case .cname: .cname
        case .srv: .srv
        case .soa: .soa
        case .other(let type, _): type
        }
    }
}

/// The EDNS0 OPT pseudo-record (RFC 6891).
public struct EDNS: Hashable, Sendable {
    /// The largest UDP payload the sender can take.
    public var udpPayloadSize: UInt16
    /// The high eight bits of the response code.
    public var extendedResponseCode: UInt8
    public var version: UInt8
    /// DO: the sender wants DNSSEC records (there are none here).
    public var dnssecOK: Bool
    /// Options as code and data, passed over.
    public var options: [UInt8]

    public init(
        udpPayloadSize: UInt16, extendedResponseCode: UInt8 = 0, version: UInt8 = 0, dnssecOK: Bool = false,
        options: [UInt8] = []
    ) {
        self.udpPayloadSize = udpPayloadSize
        self.extendedResponseCode = extendedResponseCode
        self.version = version
        self.dnssecOK = dnssecOK
        self.options = options
    }
}

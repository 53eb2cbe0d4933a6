import NIOCore
import Synchronization

/// Queries answered, by question type and response code, for the agent's `/metrics`.
///
/// DNS's path is benchmarked, so counting must cost it next to nothing: each socket's handler counts in a plain
/// ``DNSQueryCounts`` of its own, touched only on its event loop (no lock, no atomic per query), and ``totals()``
/// reads each one on its loop and adds them up when a scrape asks. A TCP connection's counts, when it closes, are
/// folded into a running total (one lock per connection, not per query).
public final class DNSQueryStatistics: Sendable {
    /// Reads one live handler's counts on its event loop.
    typealias Reader = @Sendable () -> EventLoopFuture<DNSQueryCounts>

    private struct State {
        var live: [Int: Reader] = [:]
        var retired = DNSQueryCounts()
        var next = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Every query answered so far: the closed connections' counts plus each live handler's, read on its loop.
    public func totals() async -> DNSQueryCounts {
        // Taken together, so a handler that retires meanwhile is counted once: either in `retired` or through its
        // reader (which then reads the same, final counts).
        let (readers, retired) = state.withLock { (Array($0.live.values), $0.retired) }
        var total = retired
        for read in readers {
            if let counts = try? await read().get() { total.add(counts) }
        }
        return total
    }

    /// Registers a handler's reader; returns the id it retires with.
    func register(_ reader: @escaping Reader) -> Int {
        state.withLock { state in
            defer { state.next += 1 }
            state.live[state.next] = reader
            return state.next
        }
    }

    /// A handler is gone: its reader is dropped and its final counts kept.
    func retire(_ id: Int, counts: DNSQueryCounts) {
        state.withLock { state in
            guard state.live.removeValue(forKey: id) != nil else { return }
            state.retired.add(counts)
        }
    }
}

/// Counts of DNS answers by question type and response code: a fixed table, so the labels a scrape shows stay few
/// (the types this server answers, the six classic codes, and `other` for the rest).
public struct DNSQueryCounts: Sendable, Equatable {
    /// The question types counted by name; any other is `other`.
    public static let types: [DNSRecordType] = [.a, .aaaa, .srv, .any, .cname, .soa, .ns, .txt]
    /// The response codes counted by name; any other is `other`.
    public static let codes: [DNSResponseCode] = [
        .noError, .formatError, .serverFailure, .nameError, .notImplemented, .refused,
    ]

    private var counts = [UInt64](repeating: 0, count: (types.count + 1) * (codes.count + 1))

    public init() {}

    /// Counts one answer to a question of `type` (nil: the query had none that could be read) with `code`.
    mutating func record(type: UInt16?, code: UInt16) {
        let row = type.flatMap { raw in Self.types.firstIndex { $0.rawValue == raw } } ?? Self.types.count
        let column = Self.codes.firstIndex { $0.rawValue == code } ?? Self.codes.count
        counts[row * (Self.codes.count + 1) + column] &+= 1
    }

    /// Counts the answer `answer` to `query`: the type of the query's question (its first), and the answer's
    /// header code (EDNS's extended bits, BADVERS alone here, are not read: such an answer counts by its low bits).
    mutating func record(query: ByteBuffer, answer: ByteBuffer) {
        let code = UInt16(answer.getInteger(at: answer.readerIndex + 3, as: UInt8.self) ?? 0) & 0x0F
        record(type: Self.questionType(of: query), code: code)
    }

    /// The type of the first question of the message in `buffer`, nil when there is none or its name is not plain.
    static func questionType(of buffer: ByteBuffer) -> UInt16? {
        guard buffer.getInteger(at: buffer.readerIndex + 4, as: UInt16.self) ?? 0 > 0 else { return nil }
        var offset = buffer.readerIndex + 12
        while let length = buffer.getInteger(at: offset, as: UInt8.self) {
            if length == 0 { return buffer.getInteger(at: offset + 1, as: UInt16.self) }
            // A pointer or a reserved length: not what a query's first name is.
            guard length & 0xC0 == 0 else { return nil }
            offset += 1 + Int(length)
        }
        return nil
    }

    /// Adds `other`'s counts to these.
    mutating func add(_ other: DNSQueryCounts) {
        for position in counts.indices { counts[position] &+= other.counts[position] }
    }

    /// The counts that are not zero, with their labels (`A`, `NOERROR`; `other` for the rest).
    public var nonZero: [(type: String, code: String, count: UInt64)] {
        var result: [(type: String, code: String, count: UInt64)] = []
        for row in 0...Self.types.count {
            for column in 0...Self.codes.count {
                let count = counts[row * (Self.codes.count + 1) + column]
                guard count > 0 else { continue }
                let type = row < Self.types.count ? Self.types[row].description : "other"
                let code = column < Self.codes.count ? Self.codes[column].description : "other"
                result.append((type, code, count))
            }
        }
        return result
    }

    /// The count of answers to `type` questions with `code`.
    public func count(type: DNSRecordType, code: DNSResponseCode) -> UInt64 {
        guard let row = Self.types.firstIndex(of: type), let column = Self.codes.firstIndex(of: code) else { return 0 }
        return counts[row * (Self.codes.count + 1) + column]
    }
}

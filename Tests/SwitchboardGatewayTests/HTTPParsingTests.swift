import NIOCore
import SwitchboardCore
import Testing

@testable import SwitchboardGateway

@Suite("The gateway's HTTP/1.1 head parser and body framer")
struct HTTPParsingTests {
    private func request(_ text: String) throws(HTTPParseError) -> RequestHead {
        try HTTPHeadParser.request(ByteBuffer(string: text))
    }

    private func refusal(_ text: String) -> HTTPParseError? {
        do {
            _ = try request(text)
            return nil
        } catch {
            return error
        }
    }

    @Test func aPlainRequestIsReadWithItsFieldsAndFraming() throws {
        let head = try request(
            "POST /shop/cart?id=1 HTTP/1.1\r\nHost: a\r\nContent-Length:  12 \r\nX-Thing:\tv1, v2\r\n\r\n")
        #expect(head.method == "POST" && head.target == "/shop/cart?id=1" && head.minorVersion == 1)
        #expect(head.framing == .length(12))
        #expect(head.fields.first("x-thing") == "v1, v2")
        #expect(head.fields.listItems("x-thing") == ["v1", "v2"])
        #expect(head.keepAlive && !head.expectsContinue)
        let chunked = try request("PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n")
        #expect(chunked.framing == .chunked)
        let old = try request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        #expect(old.keepAlive && old.framing == .none)
        #expect(try !request("GET / HTTP/1.0\r\n\r\n").keepAlive)
        #expect(try !request("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keepAlive)
    }

    @Test func headsThatCouldBeReadTwoWaysAreRefused() {
        let cases: [(String, Int)] = [
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\n Folded: yes\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\u{0}b\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            ("GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400),
            ("GET / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", 417),
        ]
        for (text, status) in cases {
            #expect(refusal(text)?.status == status, "\(text.debugDescription)")
        }
    }

    @Test func theEndOfAHeadIsFoundWhereverTheBytesSplit() {
        let text = Array("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next".utf8)
        let end = 27
        for split in 0...text.count {
            var buffer = ByteBuffer(bytes: text[0..<split])
            let early = HTTPHeadParser.headEnd(in: buffer, searchingFrom: 0)
            #expect(early == (split >= end ? end : nil))
            buffer.writeBytes(text[split...])
            // A search that found nothing resumes three bytes before where it stopped.
            let resumed = early == nil ? max(split - 3, 0) : 0
            #expect(HTTPHeadParser.headEnd(in: buffer, searchingFrom: resumed) == end)
        }
    }

    @Test func responseFramingFollowsRFC9112() throws {
        func framing(_ text: String, toHEAD: Bool = false) throws -> BodyFraming {
            try HTTPHeadParser.framing(of: HTTPHeadParser.response(ByteBuffer(string: text)), toHEAD: toHEAD)
        }
        #expect(try framing("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n") == .length(2))
        #expect(try framing("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", toHEAD: true) == .none)
        #expect(try framing("HTTP/1.1 204 No Content\r\n\r\n") == .none)
        #expect(try framing("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n") == .none)
        #expect(try framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n") == .chunked)
        // Codings other than chunked alone would reach the caller mislabelled: refused.
        #expect(throws: HTTPParseError.self) { try framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n") }
        #expect(throws: HTTPParseError.self) {
            try framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
        }
        #expect(throws: HTTPParseError.self) { try framing("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") }
        #expect(try framing("HTTP/1.1 200 OK\r\n\r\n") == .untilClose)
        #expect(try framing("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n") == .length(0))
        #expect(throws: HTTPParseError.self) { try framing("HTTP/1.1 2000 OK\r\n\r\n") }
        #expect(throws: HTTPParseError.self) { try framing("HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n") }
    }

    @Test func chunkedBodiesEndWhereTheirLastChunkAndTrailersEnd() throws {
        let body = "5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n"
        let next = "GET / HTTP/1.1\r\n"
        // Delivered a byte at a time and all at once, the framer takes exactly the body.
        for step in [1, 3, body.utf8.count + next.utf8.count] {
            var framer = BodyFramer(.chunked)
            var taken: [UInt8] = []
            var pending = ByteBuffer()
            let all = Array((body + next).utf8)
            var offset = 0
            while offset < all.count {
                pending.writeBytes(all[offset..<min(offset + step, all.count)])
                offset += step
                while let part = try framer.next(from: &pending) { taken += Array(part.readableBytesView) }
            }
            #expect(framer.isComplete)
            #expect(String(decoding: taken, as: UTF8.self) == body)
            #expect(String(decoding: pending.readableBytesView, as: UTF8.self) == next)
        }
        var framer = BodyFramer(.chunked)
        var pending = ByteBuffer(string: body)
        var data = ByteBuffer()
        while var part = try framer.dechunking(from: &pending) { data.writeBuffer(&part) }
        #expect(String(buffer: data) == "hello0123456789" && framer.isComplete)
    }

    @Test func malformedChunksAreRefused() {
        for body in [
            "x\r\n", "5 junk\r\nhello\r\n", "5\r\nhelloX\r\n", "5\nhello", "\r\n", "1234567890abcdef0\r\n",
            "5\r\nhello\r\n0\r\nT\n",
        ] {
            var framer = BodyFramer(.chunked)
            var pending = ByteBuffer(string: body)
            #expect(throws: HTTPParseError.self, "\(body.debugDescription)") {
                while try framer.next(from: &pending) != nil {}
            }
        }
    }

    /// Random and mutated heads must give an answer or an error, never a crash (an out-of-range index traps).
    @Test func anyBytesGiveAHeadOrAnErrorNeverACrash() {
        var random = FastRandom()
        let seeds = [
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: close, te\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n",
        ]
        let alphabet = Array(" :\r\n\t,0aA-/1.HTTP".utf8) + [0, 0x7F, 0xFF]
        for round in 0..<20_000 {
            var bytes = Array(seeds[round % 2].utf8)
            for _ in 0..<Int.random(in: 1...6, using: &random) {
                let position = Int.random(in: 0..<bytes.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: bytes[position] = alphabet.randomElement(using: &random)!
                case 1: bytes.remove(at: position)
                default: bytes.insert(alphabet.randomElement(using: &random)!, at: position)
                }
            }
            let buffer = ByteBuffer(bytes: bytes)
            guard let end = HTTPHeadParser.headEnd(in: buffer, searchingFrom: 0) else { continue }
            let head = buffer.getSlice(at: 0, length: end)!
            _ = try? HTTPHeadParser.request(head)
            if let response = try? HTTPHeadParser.response(head) {
                _ = try? HTTPHeadParser.framing(of: response, toHEAD: false)
            }
            var framer = BodyFramer(.chunked)
            var rest = ByteBuffer(bytes: bytes)
            while (try? framer.next(from: &rest)) ?? nil != nil {}
        }
    }
}

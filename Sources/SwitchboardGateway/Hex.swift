import NIOCore
import SwitchboardCore

/// Hexadecimal digits as HTTP uses them: chunk sizes and percent escapes read, ids written.
enum Hex {
    /// The value of one hex digit (either case), or nil.
    static func value(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }

    /// 32 hex digits from two random numbers, in one string: a request id or a trace id.
    static func id128(_ random: inout FastRandom) -> String {
        id128(random.next(), random.next())
    }

    /// `high` then `low` as 32 hex digits, in one string.
    static func id128(_ high: UInt64, _ low: UInt64) -> String {
        String(unsafeUninitializedCapacity: 32) { digits in
            write(high, count: 16, into: digits, at: 0)
            write(low, count: 16, into: digits, at: 16)
            return 32
        }
    }

    /// Writes `high` then `low` as 32 hex digits.
    static func write(_ high: UInt64, _ low: UInt64, to buffer: inout ByteBuffer) {
        write(high, count: 16, to: &buffer)
        write(low, count: 16, to: &buffer)
    }

    /// Writes the low `count` hex digits of `value`, lower case, most significant first.
    static func write(_ value: UInt64, count: Int, to buffer: inout ByteBuffer) {
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw in
            write(value, count: count, into: raw.bindMemory(to: UInt8.self), at: 0)
            return count
        }
    }

    /// Writes the low `count` hex digits of `value` into `digits` from `start` on, lower case, most significant first.
    @inline(__always)
    static func write(_ value: UInt64, count: Int, into digits: UnsafeMutableBufferPointer<UInt8>, at start: Int) {
        let hex: StaticString = "0123456789abcdef"
        let table = hex.utf8Start
        var value = value
        var position = start + count - 1
        while position >= start {
            digits[position] = table[Int(value & 0xF)]
            value >>= 4
            position -= 1
        }
    }
}

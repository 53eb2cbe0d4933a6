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

    /// The low `count` hex digits of `value`, lower case, most significant first (ids and trace contexts).
    static func digits(_ value: UInt64, count: Int) -> String {
        let hex: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: count) { digits in
            hex.withUTF8Buffer { hex in
                var value = value
                for position in stride(from: count - 1, through: 0, by: -1) {
                    digits[position] = hex[Int(value & 0xF)]
                    value >>= 4
                }
            }
            return count
        }
    }
}

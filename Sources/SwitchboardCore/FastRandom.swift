/// A small, fast, seedable random number generator (SplitMix64) for balancing decisions and answer shuffling.
///
/// `SystemRandomNumberGenerator` asks the kernel on every call on Linux, which costs more than a whole pick (or a
/// whole DNS answer); spreading load needs spread, not secrecy. Seeded from the system generator by default, or from a fixed seed so
/// tests can replay a sequence of picks.
public struct FastRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64? = nil) {
        var system = SystemRandomNumberGenerator()
        state = seed ?? system.next()
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        return StableHash.mix(state)
    }

    /// A number in `0..<upperBound` (`upperBound` > 0), with negligible bias for the sizes balancing uses.
    public mutating func below(_ upperBound: Int) -> Int {
        Int(next().multipliedFullWidth(by: UInt64(upperBound)).high)
    }
}

/// A hash that is the same in every process and on every run, unlike `Hasher`, so that every client of a service
/// maps a key to the same instance.
public enum StableHash {
    /// FNV-1a over the UTF-8 bytes, then a finaliser that spreads nearby inputs across the whole range.
    public static func of(_ text: String) -> UInt64 {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01B3
        }
        return mix(hash)
    }

    /// SplitMix64's finaliser.
    public static func mix(_ value: UInt64) -> UInt64 {
        var z = value
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

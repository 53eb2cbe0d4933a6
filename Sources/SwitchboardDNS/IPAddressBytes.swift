#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The network-order bytes of a textual IP address (A and AAAA records carry bytes, the catalog keeps text).
enum IPAddressBytes {
    enum Family {
        case ipv4
        case ipv6
    }

    /// The 4 or 16 bytes of `text`, or nil when it is not an address of `family`.
    static func parse(_ text: String, family: Family) -> [UInt8]? {
        switch family {
        case .ipv4:
            var address = in_addr()
            guard inet_pton(AF_INET, text, &address) == 1 else { return nil }
            return withUnsafeBytes(of: &address) { Array($0) }
        case .ipv6:
            var address = in6_addr()
            guard inet_pton(AF_INET6, text, &address) == 1 else { return nil }
            return withUnsafeBytes(of: &address) { Array($0) }
        }
    }
}

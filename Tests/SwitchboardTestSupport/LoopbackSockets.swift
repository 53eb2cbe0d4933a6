import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Raw sockets on 127.0.0.1 for tests that must speak below the HTTP and DNS clients (malformed packets,
/// pipelining, a port that refuses or resets). Blocking calls: run them on a Dispatch thread, never on the
/// concurrency pool.
public enum LoopbackSocket {
    /// 127.0.0.1:`port`.
    public static func address(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }

    /// Binds `descriptor` to 127.0.0.1:`port` (0: a free one); returns the bound port, or nil.
    public static func bind(_ descriptor: Int32, port: Int) -> Int? {
        var address = address(port: port)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                Glibc.bind(descriptor, pointer, length) == 0 && getsockname(descriptor, pointer, &length) == 0
            }
        }
        return bound ? Int(UInt16(bigEndian: address.sin_port)) : nil
    }

    /// A stream (TCP) or datagram (UDP) socket connected to 127.0.0.1:`port`, whose reads give up after
    /// `receiveTimeout` seconds; nil when the connection cannot be made. The caller closes it.
    public static func connected(port: Int, datagram: Bool = false, receiveTimeout: Int = 1) -> Int32? {
        let descriptor = socket(AF_INET, Int32(datagram ? SOCK_DGRAM.rawValue : SOCK_STREAM.rawValue), 0)
        var timeout = timeval(tv_sec: receiveTimeout, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = address(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else {
            close(descriptor)
            return nil
        }
        return descriptor
    }

    /// Writes `segments` to a TCP connection (pausing 100 ms after each, so they arrive apart) and returns what
    /// arrives until the connection closes or `quiet` seconds pass without a byte.
    public static func exchange(_ segments: [[UInt8]], port: Int, quiet: Int = 1) async -> [UInt8] {
        await withCheckedContinuation { continuation in
            DispatchQueue.global().async {
                guard let descriptor = connected(port: port, receiveTimeout: quiet) else {
                    return continuation.resume(returning: [])
                }
                defer { close(descriptor) }
                for segment in segments {
                    _ = send(descriptor, segment, segment.count, 0)
                    usleep(100_000)
                }
                continuation.resume(returning: readUntilQuiet(descriptor))
            }
        }
    }

    /// Everything read from `descriptor` until it closes or its receive timeout passes.
    public static func readUntilQuiet(_ descriptor: Int32) -> [UInt8] {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(descriptor, &buffer, buffer.count, 0)
            guard count > 0 else { break }
            received += buffer.prefix(count)
        }
        return received
    }
}

/// A port nothing listens on right now (bound, read, released).
public func freePort() throws -> Int {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(descriptor) }
    guard let port = LoopbackSocket.bind(descriptor, port: 0) else { throw TestFailure("could not find a free port") }
    return port
}

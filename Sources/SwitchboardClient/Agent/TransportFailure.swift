import AsyncHTTPClient
import NIOCore
import NIOPosix
import NIOSSL

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What an HTTP client's error says about the connection, in the few cases callers act on.
///
/// AsyncHTTPClient and SwiftNIO report connection failures as several error types (the client's own codes, NIO's
/// channel errors, POSIX errors, a connection error per address tried). This reads them by type, the same way for
/// the client library's retries, its messages and the gateway's.
public enum TransportFailure: Sendable, Hashable, CustomStringConvertible {
    /// Nothing listens there: the request never left.
    case refused
    /// The connection was not made in time: the request never left either.
    case connectTimedOut
    /// Connected, but no (complete) answer in time: the request may have been received.
    case timedOut
    /// The TLS handshake failed because the server's certificate was not accepted (expired or not yet valid, not
    /// signed by a trusted CA, or not issued for the address): the request never left.
    case certificateRejected(String)
    /// Anything else, as the error describes itself.
    case other(String)

    public init(_ error: any Error) {
        self = Self.classify(error) ?? .other(String(describing: error))
    }

    private static func classify(_ error: any Error) -> TransportFailure? {
        switch error {
        case let error as HTTPClientError:
            switch error {
            case .connectTimeout: return .connectTimedOut
            case .deadlineExceeded, .readTimeout, .writeTimeout: return .timedOut
            default: return nil
            }
        case let error as ChannelError:
            switch error {
            case .connectTimeout: return .connectTimedOut
            default: return nil
            }
        case let error as IOError:
            return error.errnoCode == ECONNREFUSED ? .refused : nil
        case let error as NIOSSLError:
            if case .handshakeFailed(let reason) = error, "\(reason)".contains("CERTIFICATE_VERIFY_FAILED") {
                return .certificateRejected("\(reason)")
            }
            return nil
        case let error as NIOSSLExtraError where error == .failedToValidateHostname:
            return .certificateRejected("\(error)")
        case let error as NIOConnectionError:
            // One failure per address tried: refused only if every one was.
            let failures = error.connectionErrors.map { classify($0.error) }
            if !failures.isEmpty, failures.allSatisfy({ $0 == .refused }) { return .refused }
            if failures.contains(.connectTimedOut) { return .connectTimedOut }
            return failures.compactMap { $0 }.first
        default:
            return nil
        }
    }

    /// Whether the request certainly never reached the server, so it is safe to send elsewhere whatever its method.
    public var requestNeverLeft: Bool {
        switch self {
        case .refused, .connectTimedOut, .certificateRejected: true
        case .timedOut, .other: false
        }
    }

    /// In a few words, for messages.
    public var description: String {
        switch self {
        case .refused: "connection refused"
        case .connectTimedOut: "no connection in time"
        case .timedOut: "no answer in time"
        case .certificateRejected:
            "its TLS certificate was not accepted: it has expired (or is not valid yet), is not signed by a CA this"
                + " client trusts (--ca-file), or was not issued for this address"
        case .other(let text): text
        }
    }
}

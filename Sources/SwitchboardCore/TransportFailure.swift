/// What an HTTP client's error says about the connection, in the few cases callers act on.
///
/// AsyncHTTPClient and SwiftNIO report connection failures as several error types (their channel errors, POSIX
/// errors, the client's own codes) that share no public classification, so the CLI, the client library and its
/// retries all read the error's description the same way here.
public enum TransportFailure: Sendable, Hashable, CustomStringConvertible {
    /// Nothing listens there: the request never left.
    case refused
    /// The connection was not made in time: the request never left either.
    case connectTimedOut
    /// Connected, but no (complete) answer in time: the request may have been received.
    case timedOut
    /// Anything else, as the error describes itself.
    case other(String)

    public init(_ error: any Error) {
        let text = String(describing: error)
        if text.contains("connectionRefused") || text.contains("Connection refused") || text.contains("ECONNREFUSED") {
            self = .refused
        } else if text.contains("connectTimeout") {
            self = .connectTimedOut
        } else if text.contains("deadlineExceeded") || text.contains("readTimeout") || text.contains("timeout") {
            self = .timedOut
        } else {
            self = .other(text)
        }
    }

    /// Whether the request certainly never reached the server, so it is safe to send elsewhere whatever its method.
    public var requestNeverLeft: Bool { self == .refused || self == .connectTimedOut }

    /// In a few words, for messages.
    public var description: String {
        switch self {
        case .refused: "connection refused"
        case .connectTimedOut: "no connection in time"
        case .timedOut: "no answer in time"
        case .other(let text): text
        }
    }
}

import NIOHTTP1
import SwitchboardCore

/// Why a Switchboard client call failed: a code to switch on, and a message a person can act on.
///
/// A struct wrapping a code (as swift-service-lifecycle's errors are), so codes can be added without breaking
/// callers that switch over them with a default.
public struct SwitchboardClientError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kinds of failure.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate enum Value: Sendable, Hashable {
            case agentUnreachable, refused, invalidAnswer, unknownService, timedOut, noInstance, rejected,
                instanceFailed, invalidConfiguration
        }
        fileprivate let value: Value

        /// No agent answered (all down, refused connections or did not answer in time).
        public static let agentUnreachable = Code(value: .agentUnreachable)
        /// An agent answered with an error status (bad input, unknown instance...).
        public static let refused = Code(value: .refused)
        /// An agent's answer could not be read.
        public static let invalidAnswer = Code(value: .invalidAnswer)
        /// A lookup found no such service (nothing ever registered under that name).
        public static let unknownService = Code(value: .unknownService)
        /// A lookup or call did not finish before its deadline.
        public static let timedOut = Code(value: .timedOut)
        /// A call found no instance to send to (none healthy, or all ejected or with open circuits).
        public static let noInstance = Code(value: .noInstance)
        /// A resilience policy refused the call (rate limit reached, bulkhead full).
        public static let rejected = Code(value: .rejected)
        /// The instance called refused the connection or failed while answering.
        public static let instanceFailed = Code(value: .instanceFailed)
        /// The client's own configuration cannot be used (a TLS file that does not load, say).
        public static let invalidConfiguration = Code(value: .invalidConfiguration)

        public var description: String { "\(value)" }
    }

    /// What went wrong.
    public let code: Code
    /// The whole story, in words.
    public let message: String
    /// The HTTP status an agent answered with, for ``Code/refused`` (and for ``Code/agentUnreachable`` when the
    /// last agent tried answered with a server error).
    public let status: HTTPResponseStatus?
    /// The agent's error body, when it sent one: its code, its message and the field at fault.
    public let apiError: APIErrorBody?
    /// What went wrong with the connection to the last agent tried, when that is why the call failed.
    public let transport: TransportFailure?

    init(
        _ code: Code, _ message: String, status: HTTPResponseStatus? = nil, apiError: APIErrorBody? = nil,
        transport: TransportFailure? = nil
    ) {
        self.code = code
        self.message = message
        self.status = status
        self.apiError = apiError
        self.transport = transport
    }

    public var description: String { message }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.code == rhs.code && lhs.message == rhs.message && lhs.status?.code == rhs.status?.code
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(code)
        hasher.combine(message)
        hasher.combine(status?.code)
    }
}

/// A value that breaks one of the catalog's rules, with the field it came from.
///
/// Every rejection of user input names the offending field (as a JSON path such as `checks[0].interval`)
/// and states the rule in words a person can act on, so an API error or a CLI message never leaves the user
/// guessing which part of a request was wrong.
public struct ValidationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The JSON path of the rejected field, for example `port` or `checks[1].timeout`.
    public var field: String
    /// The rule that was broken, phrased so the user knows what to send instead.
    public var message: String

    /// Creates an error for `field` breaking the rule described by `message`.
    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    /// The same error, reported under a parent path (`checks[0]` + `interval` gives `checks[0].interval`).
    public func nested(under parent: String) -> ValidationError {
        ValidationError(field: field.isEmpty ? parent : "\(parent).\(field)", message: message)
    }

    public var description: String { "\(field): \(message)" }
}

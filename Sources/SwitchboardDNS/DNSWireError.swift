/// A DNS message that could not be read or written, with what was wrong.
public struct DNSWireError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What was wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// The message ends before a field it announces.
        public static let truncated = Code(name: "truncated")
        /// A label is empty where it may not be, longer than 63 bytes, or uses a reserved length form.
        public static let badLabel = Code(name: "badLabel")
        /// A compression pointer points forward, at itself, or past the message, or pointers chain too long.
        public static let badPointer = Code(name: "badPointer")
        /// A name is longer than 255 bytes.
        public static let nameTooLong = Code(name: "nameTooLong")
        /// A record's data does not have the length or shape its type requires.
        public static let badRecordData = Code(name: "badRecordData")
        /// More than one OPT record, or one outside the additional section or not at the root.
        public static let badOPT = Code(name: "badOPT")
        /// A message to write does not fit the 65,535 bytes DNS allows.
        public static let tooLarge = Code(name: "tooLarge")

        public var description: String { name }
    }

    public let code: Code

    public init(_ code: Code) {
        self.code = code
    }

    public var description: String { "malformed DNS message: \(code)" }
}

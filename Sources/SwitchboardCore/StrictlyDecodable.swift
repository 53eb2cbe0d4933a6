/// A request body that rejects fields it does not know.
///
/// A typo such as `"adress"` would otherwise be dropped silently and the registration would fail later with a
/// confusing "address is required" (or, worse, succeed without the field the user meant to set). Like Consul,
/// Switchboard names the unknown field instead.
package protocol StrictlyDecodable {
    /// The JSON keys this body accepts.
    static var knownKeys: Set<String> { get }
}

extension StrictlyDecodable {
    /// Throws a ``ValidationError`` naming the first key of the object in `decoder` that is not in ``knownKeys``.
    package static func rejectUnknownKeys(in decoder: any Decoder) throws {
        // Not an object: leave it to the typed decode, which reports the type mismatch.
        guard let container = try? decoder.container(keyedBy: AnyCodingKey.self) else { return }
        for key in container.allKeys where !knownKeys.contains(key.stringValue) {
            throw ValidationError(
                field: JSONPath.render(decoder.codingPath + [key]),
                message:
                    "unknown field '\(key.stringValue)'; known fields are \(knownKeys.sorted().joined(separator: ", "))"
            )
        }
    }
}

/// A coding key for any string or integer, used to inspect objects whose keys are not known in advance.
package struct AnyCodingKey: CodingKey, Sendable {
    package var stringValue: String
    package var intValue: Int?

    package init(stringValue: String) {
        self.stringValue = stringValue
        self.intValue = nil
    }

    package init(intValue: Int) {
        self.stringValue = String(intValue)
        self.intValue = intValue
    }
}

/// Renders decoding paths the way users write them in JSON: `checks[0].interval`.
package enum JSONPath {
    /// The path of `codingPath` as `a.b[2].c`.
    package static func render(_ codingPath: [any CodingKey]) -> String {
        var text = ""
        for key in codingPath {
            if let index = key.intValue, key.stringValue == String(index) || key.stringValue.hasPrefix("Index ") {
                text += "[\(index)]"
            } else {
                text += text.isEmpty ? key.stringValue : ".\(key.stringValue)"
            }
        }
        return text
    }
}

import Yams

/// Why a gateway configuration file was refused: the field, as a path into the file, and the rule it breaks.
public struct GatewayConfigurationError: Error, CustomStringConvertible, Sendable {
    /// Where in the file, such as `routes[2].match.prefix`; empty for the file as a whole.
    public var field: String
    /// The rule broken, in words a user can act on.
    public var message: String

    /// An error about `field` (empty for the whole file).
    public init(field: String, message: String) {
        self.field = field
        self.message = message
    }

    /// `field: message`, as printed when the gateway refuses a file.
    public var description: String { field.isEmpty ? message : "\(field): \(message)" }
}

/// A node of a YAML configuration file with its path, read strictly: a key the schema does not know, or a value of
/// the wrong kind, is an error naming the field (a typo in a route must not silently leave it open).
struct ConfigurationNode {
    let node: Node
    let path: String

    /// The whole document of `text`; an empty file is an empty mapping.
    static func document(_ text: String) throws(GatewayConfigurationError) -> ConfigurationNode {
        do {
            let node = try Yams.compose(yaml: text) ?? Node.mapping([:])
            return ConfigurationNode(node: node, path: "")
        } catch {
            throw GatewayConfigurationError(field: "", message: "not valid YAML: \(error)")
        }
    }

    func error(_ message: String) -> GatewayConfigurationError {
        GatewayConfigurationError(field: path, message: message)
    }

    private func child(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// The mapping's entries; keys outside `allowed` are refused.
    func mapping(allowed: Set<String>) throws(GatewayConfigurationError) -> [String: ConfigurationNode] {
        guard case .mapping(let mapping) = node else { throw error("must be a mapping of keys to values") }
        var entries: [String: ConfigurationNode] = [:]
        for (key, value) in mapping {
            guard let name = key.string else { throw error("keys must be strings") }
            guard allowed.contains(name) else {
                throw GatewayConfigurationError(
                    field: child(name),
                    message: "unknown key; allowed here: \(allowed.sorted().joined(separator: ", "))")
            }
            guard entries[name] == nil else {
                throw GatewayConfigurationError(field: child(name), message: "given twice")
            }
            entries[name] = ConfigurationNode(node: value, path: child(name))
        }
        return entries
    }

    func list() throws(GatewayConfigurationError) -> [ConfigurationNode] {
        guard case .sequence(let sequence) = node else { throw error("must be a list") }
        return sequence.enumerated().map { ConfigurationNode(node: $1, path: "\(path)[\($0)]") }
    }

    func string() throws(GatewayConfigurationError) -> String {
        guard case .scalar(let scalar) = node else { throw error("must be a single value") }
        return scalar.string
    }

    func nonEmptyString() throws(GatewayConfigurationError) -> String {
        let text = try string()
        guard !text.isEmpty else { throw error("must not be empty") }
        return text
    }

    func int(in range: ClosedRange<Int>) throws(GatewayConfigurationError) -> Int {
        guard let value = Int(try string()), range.contains(value) else {
            throw error("must be a whole number from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    func double(in range: ClosedRange<Double>) throws(GatewayConfigurationError) -> Double {
        guard let value = Double(try string()), range.contains(value) else {
            throw error("must be a number from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    func bool() throws(GatewayConfigurationError) -> Bool {
        switch try string().lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw error("must be true or false")
        }
    }

    /// A duration such as `250ms`, `5s`, `2m` or `1h`, between `range`'s bounds.
    func duration(in range: ClosedRange<Duration>) throws(GatewayConfigurationError) -> Duration {
        let text = try string().trimmingWhitespace
        let units: [(String, Duration)] = [
            ("ms", .milliseconds(1)), ("s", .seconds(1)), ("m", .seconds(60)), ("h", .seconds(3600)),
        ]
        for (suffix, unit) in units where text.hasSuffix(suffix) {
            let number = text.dropLast(suffix.count)
            guard let value = Double(number), value >= 0 else { break }
            let duration = unit * value
            guard range.contains(duration) else {
                throw error("must be from \(range.lowerBound) to \(range.upperBound)")
            }
            return duration
        }
        throw error("must be a duration such as 250ms, 5s, 2m or 1h")
    }

    /// A list of strings; a single value counts as a list of one.
    func strings() throws(GatewayConfigurationError) -> [String] {
        if case .scalar = node { return [try string()] }
        return try list().map { (item) throws(GatewayConfigurationError) -> String in try item.string() }
    }

    /// A mapping of strings to strings.
    func stringMap() throws(GatewayConfigurationError) -> [String: String] {
        guard case .mapping(let mapping) = node else { throw error("must be a mapping of names to values") }
        var result: [String: String] = [:]
        for (key, value) in mapping {
            guard let name = key.string, case .scalar(let scalar) = value else {
                throw error("must map names to single values")
            }
            result[name] = scalar.string
        }
        return result
    }
}

extension String {
    var trimmingWhitespace: String {
        String(self.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}

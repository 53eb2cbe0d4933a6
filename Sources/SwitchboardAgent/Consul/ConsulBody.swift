import Foundation

/// A JSON object from a Consul client, read the way Consul reads it: field names match whatever their case and
/// with or without underscores (`Name`, `name`, `DeregisterCriticalServiceAfter`,
/// `deregister_critical_service_after`).
///
/// Consul's clients lean on that leniency (py-consul sends `name`, `http`, `interval` in lower case; the Go client
/// sends `Name`), so a Codable type with fixed keys would refuse half of them.
struct ConsulBody {
    private let fields: [String: JSONValue]
    /// Where this object sits in the request, for error messages (`Check`, `Checks[1]`).
    let path: String

    init(fields: [String: JSONValue], path: String = "") {
        var normalized: [String: JSONValue] = [:]
        for (key, value) in fields { normalized[Self.normalized(key)] = value }
        self.fields = normalized
        self.path = path
    }

    /// The request body as an object; a ``ConsulError`` (400) when it is not JSON or not an object.
    init(json data: Data) throws(ConsulError) {
        let parsed: JSONValue
        do {
            parsed = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw .badRequest("Request decode failed: the body is not valid JSON")
        }
        guard case .object(let object) = parsed else {
            throw .badRequest("Request decode failed: the body must be a JSON object")
        }
        self.init(fields: object)
    }

    static func normalized(_ key: String) -> String {
        key.lowercased().replacingOccurrences(of: "_", with: "")
    }

    private func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    /// Whether the field is present and not null.
    func has(_ key: String) -> Bool { value(key) != nil }

    private func value(_ key: String) -> JSONValue? {
        guard let value = fields[Self.normalized(key)], value != .null else { return nil }
        return value
    }

    func string(_ key: String) throws(ConsulError) -> String? {
        guard let value = value(key) else { return nil }
        guard case .string(let text) = value else { throw .badRequest("\(name(key)) must be a string") }
        return text
    }

    /// A whole number; Consul takes one written as a number only.
    func integer(_ key: String) throws(ConsulError) -> Int? {
        guard let value = value(key) else { return nil }
        guard case .number(let number) = value, let whole = Int(exactly: number) else {
            throw .badRequest("\(name(key)) must be a whole number")
        }
        return whole
    }

    func bool(_ key: String) throws(ConsulError) -> Bool? {
        guard let value = value(key) else { return nil }
        guard case .bool(let flag) = value else { throw .badRequest("\(name(key)) must be true or false") }
        return flag
    }

    func strings(_ key: String) throws(ConsulError) -> [String]? {
        guard let value = value(key) else { return nil }
        guard case .array(let list) = value, let texts = Self.strings(list) else {
            throw .badRequest("\(name(key)) must be a list of strings")
        }
        return texts
    }

    func stringMap(_ key: String) throws(ConsulError) -> [String: String]? {
        guard let value = value(key) else { return nil }
        guard case .object(let map) = value else { throw .badRequest("\(name(key)) must be an object of strings") }
        var texts: [String: String] = [:]
        for (name, element) in map {
            guard case .string(let text) = element else {
                throw .badRequest("\(self.name(key)).\(name) must be a string")
            }
            texts[name] = text
        }
        return texts
    }

    /// Consul's HTTP check headers: each name to a list of values.
    func stringListMap(_ key: String) throws(ConsulError) -> [String: [String]]? {
        guard let value = value(key) else { return nil }
        guard case .object(let map) = value else {
            throw .badRequest("\(name(key)) must be an object of string lists")
        }
        var lists: [String: [String]] = [:]
        for (name, element) in map {
            guard case .array(let list) = element, let texts = Self.strings(list) else {
                throw .badRequest("\(self.name(key)).\(name) must be a list of strings")
            }
            lists[name] = texts
        }
        return lists
    }

    func object(_ key: String) throws(ConsulError) -> ConsulBody? {
        guard let value = value(key) else { return nil }
        guard case .object(let object) = value else { throw .badRequest("\(name(key)) must be an object") }
        return ConsulBody(fields: object, path: name(key))
    }

    func objects(_ key: String) throws(ConsulError) -> [ConsulBody]? {
        guard let value = value(key) else { return nil }
        guard case .array(let list) = value else { throw .badRequest("\(name(key)) must be a list of objects") }
        var objects: [ConsulBody] = []
        for (position, element) in list.enumerated() {
            guard case .object(let object) = element else {
                throw .badRequest("\(name(key))[\(position)] must be an object")
            }
            objects.append(ConsulBody(fields: object, path: "\(name(key))[\(position)]"))
        }
        return objects
    }

    private static func strings(_ list: [JSONValue]) -> [String]? {
        var texts: [String] = []
        for element in list {
            guard case .string(let text) = element else { return nil }
            texts.append(text)
        }
        return texts
    }

    /// Any JSON value, as decoded: Consul's bodies are read field by field, whatever their keys' case.
    enum JSONValue: Decodable, Equatable {
        case null
        case bool(Bool)
        case number(Double)
        case string(String)
        case array([JSONValue])
        case object([String: JSONValue])

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if container.decodeNil() {
                self = .null
            } else if let flag = try? container.decode(Bool.self) {
                self = .bool(flag)
            } else if let number = try? container.decode(Double.self) {
                self = .number(number)
            } else if let text = try? container.decode(String.self) {
                self = .string(text)
            } else if let list = try? container.decode([JSONValue].self) {
                self = .array(list)
            } else {
                self = .object(try container.decode([String: JSONValue].self))
            }
        }
    }
}

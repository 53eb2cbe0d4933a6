/// A health check as a client sends it, before validation.
///
/// Everything is optional and durations are raw strings, so that every mistake (a missing TTL, `10x` as an
/// interval, a URL on a TCP check) is reported by ``validated(field:)`` with the field and the rule, rather than
/// surfacing as an opaque decoding failure.
public struct CheckRequest: Sendable, Hashable, Codable, StrictlyDecodable {
    public static let knownKeys: Set<String> = [
        "type", "name", "ttl", "url", "method", "headers", "expectBody", "target", "interval", "timeout",
        "successesBeforePassing", "failuresBeforeCritical", "initialStatus", "deregisterAfterCritical",
    ]

    public var type: String?
    public var name: String?
    public var ttl: String?
    public var url: String?
    public var method: String?
    public var headers: [String: String]?
    public var expectBody: String?
    public var target: String?
    public var interval: String?
    public var timeout: String?
    public var successesBeforePassing: Int?
    public var failuresBeforeCritical: Int?
    public var initialStatus: String?
    public var deregisterAfterCritical: String?

    public init(type: String?) {
        self.type = type
    }

    public init(from decoder: any Decoder) throws {
        try Self.rejectUnknownKeys(in: decoder)
        let c = try decoder.container(keyedBy: CodingKeys.self)
        type = try c.decodeIfPresent(String.self, forKey: .type)
        name = try c.decodeIfPresent(String.self, forKey: .name)
        ttl = try c.decodeIfPresent(String.self, forKey: .ttl)
        url = try c.decodeIfPresent(String.self, forKey: .url)
        method = try c.decodeIfPresent(String.self, forKey: .method)
        headers = try c.decodeIfPresent([String: String].self, forKey: .headers)
        expectBody = try c.decodeIfPresent(String.self, forKey: .expectBody)
        target = try c.decodeIfPresent(String.self, forKey: .target)
        interval = try c.decodeIfPresent(String.self, forKey: .interval)
        timeout = try c.decodeIfPresent(String.self, forKey: .timeout)
        successesBeforePassing = try c.decodeIfPresent(Int.self, forKey: .successesBeforePassing)
        failuresBeforeCritical = try c.decodeIfPresent(Int.self, forKey: .failuresBeforeCritical)
        initialStatus = try c.decodeIfPresent(String.self, forKey: .initialStatus)
        deregisterAfterCritical = try c.decodeIfPresent(String.self, forKey: .deregisterAfterCritical)
    }

    private enum CodingKeys: String, CodingKey {
        case type, name, ttl, url, method, headers, expectBody, target, interval, timeout
        case successesBeforePassing, failuresBeforeCritical, initialStatus, deregisterAfterCritical
    }

    /// The shortest interval, timeout or TTL accepted: shorter probes would cost more than they tell.
    public static let shortest = HumanDuration(milliseconds: 100)
    /// The longest interval, timeout or TTL accepted.
    public static let longest = HumanDuration.seconds(24 * 3600)

    /// Checks every rule and fills in defaults; errors name fields under `field` (such as `checks[0]`).
    public func validated(field: String) throws(ValidationError) -> CheckDefinition {
        func fail(_ key: String, _ message: String) -> ValidationError {
            ValidationError(field: "\(field).\(key)", message: message)
        }
        guard let typeText = type else { throw fail("type", "type is required: one of ttl, http, tcp") }
        guard let kind = CheckKind(rawValue: typeText) else {
            throw fail("type", "type must be one of ttl, http, tcp, not '\(typeText)'")
        }
        func duration(_ key: String, _ text: String?) throws(ValidationError) -> HumanDuration? {
            guard let text else { return nil }
            let value = try HumanDuration(parsing: text, field: "\(field).\(key)")
            guard value >= Self.shortest, value <= Self.longest else {
                throw fail(key, "\(key) must be between 100ms and 24h")
            }
            return value
        }
        func forbid(_ key: String, _ value: (some Any)?) throws(ValidationError) {
            if value != nil { throw fail(key, "\(key) does not apply to \(kind.rawValue) checks") }
        }
        var definition = CheckDefinition(type: kind)
        if let name {
            guard name.utf8.count <= 128, !name.contains(where: \.isControlCharacter) else {
                throw fail("name", "name must be at most 128 characters, without control characters")
            }
            definition.name = name
        }
        switch kind {
        case .ttl:
            guard ttl != nil else { throw fail("ttl", "ttl is required for ttl checks, for example \"10s\"") }
            definition.ttl = try duration("ttl", ttl)
            try forbid("url", url)
            try forbid("method", method)
            try forbid("headers", headers)
            try forbid("expectBody", expectBody)
            try forbid("target", target)
            try forbid("interval", interval)
            try forbid("timeout", timeout)
        case .http:
            try forbid("ttl", ttl)
            try forbid("target", target)
            definition.url = try Self.validatedURL(url, field: "\(field).url")
            let verb = method ?? "GET"
            guard ["GET", "HEAD", "POST", "PUT", "OPTIONS"].contains(verb) else {
                throw fail("method", "method must be one of GET, HEAD, POST, PUT, OPTIONS")
            }
            definition.method = verb
            if let headers {
                guard headers.count <= 32 else { throw fail("headers", "at most 32 headers") }
                for (name, value) in headers {
                    let validName = !name.isEmpty && name.utf8.count <= 128 && name.utf8.allSatisfy(Self.isTokenByte)
                    guard validName, value.utf8.count <= 1024, !value.contains(where: \.isControlCharacter) else {
                        throw fail(
                            "headers",
                            "header '\(name)' must be a token of at most 128 characters with a value of at most"
                                + " 1024 characters and no control characters"
                        )
                    }
                }
                definition.headers = headers
            }
            if let expectBody {
                guard !expectBody.isEmpty, expectBody.utf8.count <= 1024 else {
                    throw fail("expectBody", "expectBody must be 1..1024 characters")
                }
                definition.expectBody = expectBody
            }
        case .tcp:
            try forbid("ttl", ttl)
            try forbid("url", url)
            try forbid("method", method)
            try forbid("headers", headers)
            try forbid("expectBody", expectBody)
            definition.target = try Self.validatedTarget(target, field: "\(field).target")
        }
        if kind != .ttl {
            let interval = try duration("interval", interval) ?? .seconds(10)
            let timeout = try duration("timeout", timeout) ?? min(.seconds(5), interval)
            guard timeout <= interval else {
                throw fail("timeout", "timeout must not be longer than interval (\(interval))")
            }
            definition.interval = interval
            definition.timeout = timeout
        }
        for (key, value) in [
            ("successesBeforePassing", successesBeforePassing), ("failuresBeforeCritical", failuresBeforeCritical),
        ] {
            if let value, !(1...100).contains(value) { throw fail(key, "\(key) must be 1..100") }
        }
        definition.successesBeforePassing = successesBeforePassing ?? 1
        definition.failuresBeforeCritical = failuresBeforeCritical ?? 1
        if let initialStatus {
            guard let status = HealthStatus(rawValue: initialStatus), status != .maintenance else {
                throw fail("initialStatus", "initialStatus must be one of passing, warning, critical")
            }
            definition.initialStatus = status
        }
        if let after = deregisterAfterCritical {
            let value = try HumanDuration(parsing: after, field: "\(field).deregisterAfterCritical")
            guard value >= .seconds(1) else {
                throw fail("deregisterAfterCritical", "deregisterAfterCritical must be at least 1s")
            }
            definition.deregisterAfterCritical = value
        }
        return definition
    }

    private static func isTokenByte(_ byte: UInt8) -> Bool {
        (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x30 && byte <= 0x39)
            || "!#$%&'*+-.^_`|~".utf8.contains(byte)
    }

    private static func validatedURL(_ url: String?, field: String) throws(ValidationError) -> String {
        let rule = "url must be an absolute http:// or https:// URL with a host, at most 2048 characters"
        guard let url else { throw ValidationError(field: field, message: "url is required for http checks") }
        guard url.utf8.count <= 2048, !url.contains(where: { $0.isWhitespace || $0.isControlCharacter }) else {
            throw ValidationError(field: field, message: rule)
        }
        let rest: Substring
        if url.hasPrefix("http://") {
            rest = url.dropFirst(7)
        } else if url.hasPrefix("https://") {
            rest = url.dropFirst(8)
        } else {
            throw ValidationError(field: field, message: rule)
        }
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard !authority.isEmpty, !authority.hasPrefix(":") else { throw ValidationError(field: field, message: rule) }
        return url
    }

    private static func validatedTarget(_ target: String?, field: String) throws(ValidationError) -> String {
        let rule = "target must be host:port (or [ipv6]:port) with a port of 1..65535"
        guard let target else { throw ValidationError(field: field, message: "target is required for tcp checks") }
        let host: Substring
        let portText: Substring
        if target.hasPrefix("[") {
            guard let close = target.firstIndex(of: "]"), target[target.index(after: close)...].hasPrefix(":") else {
                throw ValidationError(field: field, message: rule)
            }
            host = target[target.index(after: target.startIndex)..<close]
            portText = target[target.index(close, offsetBy: 2)...]
        } else {
            guard let colon = target.lastIndex(of: ":") else { throw ValidationError(field: field, message: rule) }
            host = target[..<colon]
            portText = target[target.index(after: colon)...]
        }
        guard let port = Int(portText), (1...65535).contains(port) else {
            throw ValidationError(field: field, message: rule)
        }
        do {
            _ = try HostAddress(String(host), field: field)
        } catch {
            throw ValidationError(field: field, message: rule)
        }
        return target
    }
}

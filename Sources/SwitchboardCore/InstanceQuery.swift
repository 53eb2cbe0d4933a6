/// The filters of a service lookup: which statuses, which tags, which meta values.
///
/// The same query shape serves the HTTP API, watches and (later) DNS, so "healthy" and "tagged v2" mean the same
/// thing everywhere.
public struct InstanceQuery: Hashable, Sendable {
    /// Which statuses a lookup returns.
    public enum StatusFilter: Hashable, Sendable {
        /// Passing or warning: the instances that should receive traffic (the default).
        case healthy
        /// Every instance, whatever its status.
        case any
        /// Only instances in this status.
        case only(HealthStatus)

        /// Parses the `status` query parameter.
        public init(parsing text: String, field: String = "status") throws(ValidationError) {
            switch text {
            case "healthy": self = .healthy
            case "any": self = .any
            default:
                guard let status = HealthStatus(rawValue: text) else {
                    throw ValidationError(
                        field: field,
                        message: "status must be one of healthy, any, passing, warning, critical, maintenance"
                    )
                }
                self = .only(status)
            }
        }

        /// The `status` query parameter that parses back to this filter.
        public var parameter: String {
            switch self {
            case .healthy: "healthy"
            case .any: "any"
            case .only(let status): status.rawValue
            }
        }

        func admits(_ status: HealthStatus) -> Bool {
            switch self {
            case .healthy: status.isHealthy
            case .any: true
            case .only(let wanted): status == wanted
            }
        }
    }

    /// One `meta=key:value` condition.
    public struct MetaCondition: Hashable, Sendable {
        public var key: String
        public var value: String

        public init(key: String, value: String) {
            self.key = key
            self.value = value
        }

        /// Parses `key:value` (the value may itself contain ':').
        public init(parsing text: String, field: String = "meta") throws(ValidationError) {
            // Split on the first ':' byte, not Character: a combining mark after the ':' would hide it otherwise.
            let bytes = text.utf8
            guard let colon = bytes.firstIndex(of: 0x3A), colon != bytes.startIndex else {
                throw ValidationError(field: field, message: "meta filter must be key:value, got '\(text)'")
            }
            self.key = String(decoding: bytes[..<colon], as: UTF8.self)
            self.value = String(decoding: bytes[bytes.index(after: colon)...], as: UTF8.self)
        }
    }

    public var status: StatusFilter
    /// Every tag listed must be present.
    public var tags: [String]
    /// Every condition listed must hold.
    public var meta: [MetaCondition]

    public init(status: StatusFilter = .healthy, tags: [String] = [], meta: [MetaCondition] = []) {
        self.status = status
        self.tags = tags
        self.meta = meta
    }

    /// The query parameters of this query (`status=healthy&tag=v2&meta=zone:a`), percent-encoded, for the URLs of
    /// lookups and watches.
    public var parameters: String {
        let escape = PercentEncoding.component
        var items = ["status=" + escape(status.parameter)]
        items += tags.map { "tag=" + escape($0) }
        items += meta.map { "meta=" + escape("\($0.key):\($0.value)") }
        return items.joined(separator: "&")
    }

    /// Whether `instance` passes every filter.
    public func matches(_ instance: Instance) -> Bool {
        guard status.admits(instance.status) else { return false }
        for tag in tags where !instance.definition.tags.contains(tag) { return false }
        for condition in meta where instance.definition.meta[condition.key] != condition.value { return false }
        return true
    }
}

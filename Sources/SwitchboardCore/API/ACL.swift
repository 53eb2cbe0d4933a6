import struct Foundation.Date

/// How much a policy lets a token do with a resource. Ordered: `write` includes `read`.
public enum ACLAccess: String, Codable, Sendable, Hashable, Comparable, CaseIterable {
    /// Nothing, even where the agent's default policy is `allow`.
    case deny
    /// Look at it: lookups, watches, listings.
    case read
    /// Change it, and read it.
    case write

    private var rank: Int {
        switch self {
        case .deny: 0
        case .read: 1
        case .write: 2
        }
    }

    public static func < (lhs: ACLAccess, rhs: ACLAccess) -> Bool { lhs.rank < rhs.rank }

    /// Reads `read`, `write` or `deny`, naming `field` when it is none of them.
    public init(parsing text: String, field: String) throws(ValidationError) {
        guard let access = ACLAccess(rawValue: text) else {
            throw ValidationError(field: field, message: "\(field) must be read, write or deny, not \"\(text)\"")
        }
        self = access
    }
}

/// What a permission is about: services by name prefix, or one of the agent's own areas.
public enum ACLResource: Sendable, Hashable, CustomStringConvertible {
    /// The instances, checks and events of one service.
    case service(ServiceName)
    /// The agent itself: its members, its metrics, maintenance of the agent.
    case agent
    /// Tokens and policies.
    case acl
    /// The event log and its audit trail.
    case events

    public var description: String {
        switch self {
        case .service(let name): "service:\(name.rawValue)"
        case .agent: "agent"
        case .acl: "acl"
        case .events: "events"
        }
    }
}

/// A permission a request needs: an access level on a resource (`service:payment:write`).
public struct ACLPermission: Sendable, Hashable, CustomStringConvertible {
    public var resource: ACLResource
    public var access: ACLAccess

    public init(_ access: ACLAccess, on resource: ACLResource) {
        self.resource = resource
        self.access = access
    }

    public var description: String { "\(resource):\(access.rawValue)" }
}

/// A named set of grants, attached to tokens by name.
///
/// `services` maps service names to access levels: a name (`payment`) is that service exactly, a name ending in `*`
/// (`pay*`) every service it starts, and `*` every service. An exact name beats any prefix, and the longest prefix
/// beats shorter ones, so `{"*": "read", "payment": "write"}` reads everything and writes `payment` (not
/// `payment-admin`). `agent`, `acl` and `events` grant the agent's own areas; left out, they grant nothing.
///
/// ```json
/// {"name": "order-service", "services": {"order": "write", "payment": "read"}, "events": "read"}
/// ```
public struct ACLPolicy: Codable, Sendable, Hashable, StrictlyDecodable {
    /// Unique; letters, digits, `-` and `_`, 1 to 128 characters.
    public var name: String
    public var description: String
    public var services: [String: ACLAccess]
    public var agent: ACLAccess?
    public var acl: ACLAccess?
    public var events: ACLAccess?

    public init(
        name: String, description: String = "", services: [String: ACLAccess] = [:], agent: ACLAccess? = nil,
        acl: ACLAccess? = nil, events: ACLAccess? = nil
    ) {
        self.name = name
        self.description = description
        self.services = services
        self.agent = agent
        self.acl = acl
        self.events = events
    }

    enum CodingKeys: String, CodingKey {
        case name, description, services, agent, acl, events
    }

    package static let knownKeys: Set<String> = ["name", "description", "services", "agent", "acl", "events"]

    public init(from decoder: any Decoder) throws {
        try Self.rejectUnknownKeys(in: decoder)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decode(String.self, forKey: .name)
        description = try container.decodeUnlessNull(String.self, forKey: .description) ?? ""
        services = try container.decodeUnlessNull([String: ACLAccess].self, forKey: .services) ?? [:]
        agent = try container.decodeUnlessNull(ACLAccess.self, forKey: .agent)
        acl = try container.decodeUnlessNull(ACLAccess.self, forKey: .acl)
        events = try container.decodeUnlessNull(ACLAccess.self, forKey: .events)
    }

    /// The policy every bootstrap token holds: write on everything.
    public static let globalManagementName = "global-management"
    public static let globalManagement = ACLPolicy(
        name: globalManagementName, description: "Write on every service, the agent, the ACLs and the events.",
        services: ["*": .write], agent: .write, acl: .write, events: .write)

    /// Checks the name, the prefixes and the description; throws naming the field at fault.
    public func validate() throws(ValidationError) {
        try Self.validateName(name, field: "name")
        guard description.utf8.count <= 1024 else {
            throw ValidationError(field: "description", message: "description must be at most 1024 bytes")
        }
        guard services.count <= 256 else {
            throw ValidationError(field: "services", message: "a policy holds at most 256 service prefixes")
        }
        for rule in services.keys {
            // What a service name may hold (lowercase letters, digits, '-'), with an optional `*` at the end.
            let name = rule.hasSuffix("*") ? rule.dropLast() : Substring(rule)
            guard name.utf8.count <= 63, !rule.isEmpty,
                name.utf8.allSatisfy({ $0 == 0x2D || (0x30...0x39).contains($0) || (0x61...0x7A).contains($0) })
            else {
                throw ValidationError(
                    field: "services.\(rule)",
                    message: "\"\(rule)\" must be a service name (lowercase letters, digits, '-'), a prefix of one"
                        + " followed by '*', or '*' for every service")
            }
        }
    }

    /// A policy or token name: letters, digits, `-` and `_`, 1 to 128 characters.
    public static func validateName(_ name: String, field: String) throws(ValidationError) {
        guard !name.isEmpty, name.utf8.count <= 128,
            name.utf8.allSatisfy({
                $0 == 0x2D || $0 == 0x5F || (0x30...0x39).contains($0)
                    || (0x61...0x7A).contains($0) || (0x41...0x5A).contains($0)
            })
        else {
            throw ValidationError(field: field, message: "\(field) must be 1 to 128 letters, digits, '-' or '_'")
        }
    }

    /// What this policy grants on `resource`, if it says anything about it.
    public func access(to resource: ACLResource) -> ACLAccess? {
        switch resource {
        case .agent: return agent
        case .acl: return acl
        case .events: return events
        case .service(let name):
            if let exact = services[name.rawValue] { return exact }
            var best: (length: Int, access: ACLAccess)?
            for (rule, access) in services where rule.hasSuffix("*") {
                let prefix = rule.dropLast()
                guard name.rawValue.hasPrefix(prefix) else { continue }
                if let current = best, current.length >= prefix.utf8.count { continue }
                best = (prefix.utf8.count, access)
            }
            return best?.access
        }
    }
}

/// A token as the API shows it: its public accessor id and its policies. The secret appears only in the answer
/// that created the token (``secretID``), and never again: the agent keeps only its hash.
public struct ACLToken: Codable, Sendable, Hashable {
    /// The token's public name, safe to log and to show (the audit trail records it).
    public var accessorID: String
    /// The secret a caller presents; set only in the answer that created the token.
    public var secretID: String?
    public var description: String
    public var policies: [String]
    public var createdAt: Date

    public init(
        accessorID: String, secretID: String? = nil, description: String, policies: [String], createdAt: Date
    ) {
        self.accessorID = accessorID
        self.secretID = secretID
        self.description = description
        self.policies = policies
        self.createdAt = createdAt
    }

    /// The accessor id of the token that stands for callers who present none: its policies are what they may do
    /// (nothing, when none are attached and the default policy is `deny`).
    public static let anonymousAccessorID = "anonymous"
}

/// The body of `POST /v1/acl/tokens` and `PUT /v1/acl/tokens/{accessor}`.
public struct ACLTokenRequest: Codable, Sendable, Hashable, StrictlyDecodable {
    public var description: String
    public var policies: [String]

    public init(description: String = "", policies: [String]) {
        self.description = description
        self.policies = policies
    }

    enum CodingKeys: String, CodingKey { case description, policies }

    package static let knownKeys: Set<String> = ["description", "policies"]

    public init(from decoder: any Decoder) throws {
        try Self.rejectUnknownKeys(in: decoder)
        let container = try decoder.container(keyedBy: CodingKeys.self)
        description = try container.decodeUnlessNull(String.self, forKey: .description) ?? ""
        policies = try container.decodeUnlessNull([String].self, forKey: .policies) ?? []
    }

    /// Checks the description and the policy names.
    public func validate() throws(ValidationError) {
        guard description.utf8.count <= 1024 else {
            throw ValidationError(field: "description", message: "description must be at most 1024 bytes")
        }
        guard policies.count <= 64 else {
            throw ValidationError(field: "policies", message: "a token holds at most 64 policies")
        }
        for (position, name) in policies.enumerated() {
            try ACLPolicy.validateName(name, field: "policies[\(position)]")
        }
    }
}

/// `GET /v1/acl/tokens`.
public struct ACLTokenList: Codable, Sendable, Hashable {
    public var tokens: [ACLToken]

    public init(tokens: [ACLToken]) { self.tokens = tokens }
}

/// `GET /v1/acl/rights`: what the caller's own token may do, so a user interface can say why a button is off before
/// the user presses it (Consul's UI asks its agent the same way).
public struct ACLRights: Codable, Sendable, Hashable {
    /// Whether the agent enforces ACLs; when it does not, every access is `write`.
    public var enforced: Bool
    /// The token's accessor id (`anonymous` for a caller without one); nil with ACLs off.
    public var accessorID: String?
    public var agent: ACLAccess
    public var acl: ACLAccess
    public var events: ACLAccess
    /// The access to each service the request named (`?service=`, repeatable).
    public var services: [String: ACLAccess]

    public init(
        enforced: Bool, accessorID: String?, agent: ACLAccess, acl: ACLAccess, events: ACLAccess,
        services: [String: ACLAccess]
    ) {
        self.enforced = enforced
        self.accessorID = accessorID
        self.agent = agent
        self.acl = acl
        self.events = events
        self.services = services
    }
}

/// `GET /v1/acl/policies`.
public struct ACLPolicyList: Codable, Sendable, Hashable {
    public var policies: [ACLPolicy]

    public init(policies: [ACLPolicy]) { self.policies = policies }
}

/// Who made a write, as the audit trail records it: never the token's secret.
public struct AuditRecord: Codable, Sendable, Hashable {
    /// The accessor id of the token presented; nil for a caller without one (ACLs off, or anonymous).
    public var accessorID: String?
    /// The client's address as the agent saw it (`127.0.0.1:53122`).
    public var address: String?
    /// The request's `X-Request-ID`, or the id the agent gave it.
    public var requestID: String?

    public init(accessorID: String?, address: String?, requestID: String?) {
        self.accessorID = accessorID
        self.address = address
        self.requestID = requestID
    }
}

/// A change to the ACLs, in the audit trail: what was done, to what, by whom, when.
public struct ACLChangeEvent: Codable, Sendable, Hashable {
    /// What was done.
    public enum Action: String, Codable, Sendable, Hashable {
        case bootstrapped, tokenCreated, tokenUpdated, tokenDeleted, policyCreated, policyUpdated, policyDeleted
    }

    /// Increases with every ACL change (its own sequence, apart from the catalog's index).
    public var sequence: UInt64
    public var at: Date
    public var action: Action
    /// The token's accessor id or the policy's name.
    public var target: String
    public var by: AuditRecord

    public init(sequence: UInt64, at: Date, action: Action, target: String, by: AuditRecord) {
        self.sequence = sequence
        self.at = at
        self.action = action
        self.target = target
        self.by = by
    }
}

extension KeyedDecodingContainer {
    /// The value at `key` when present; a `null` there is refused naming the field (leave the field out instead).
    fileprivate func decodeUnlessNull<Value: Decodable>(_ type: Value.Type, forKey key: Key) throws -> Value? {
        guard contains(key) else { return nil }
        if try decodeNil(forKey: key) {
            throw ValidationError(
                field: JSONPath.render(codingPath + [key]),
                message: "\(key.stringValue) must not be null: leave it out instead")
        }
        return try decode(type, forKey: key)
    }
}

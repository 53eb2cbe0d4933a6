import HTTPTypes
import SwitchboardCore

/// What the caller of one request may do: its token's policies over the agent's default policy.
///
/// With ACLs off every caller is ``unrestricted``. With them on, each policy of the token says what it grants on a
/// resource (for a service, by its exact name, else its longest matching prefix); a `deny` from any of the token's
/// policies wins over their grants, then the highest grant counts; a resource no policy mentions gets the default
/// policy (`deny`, or `write` for `allow`), except the ACLs themselves, which only an explicit grant opens: under
/// `allow`, a caller without a token must not be able to make itself a management token.
public struct ACLAuthority: Sendable {
    /// The token's accessor id (nil without ACLs; `anonymous` for a caller without a token).
    public var accessorID: String?
    var policies: [ACLPolicy]
    /// What a resource no policy mentions gets.
    var fallback: ACLAccess
    /// Whether ACLs are on: off, nothing is checked and nothing filtered.
    public var enforced: Bool

    init(accessorID: String?, policies: [ACLPolicy], fallback: ACLAccess, enforced: Bool) {
        self.accessorID = accessorID
        self.policies = policies
        self.fallback = fallback
        self.enforced = enforced
    }

    /// ACLs off: everything allowed.
    public static let unrestricted = ACLAuthority(accessorID: nil, policies: [], fallback: .write, enforced: false)

    /// The access this caller has to `resource`.
    public func access(to resource: ACLResource) -> ACLAccess {
        guard enforced else { return .write }
        var granted: ACLAccess?
        for policy in policies {
            guard let access = policy.access(to: resource) else { continue }
            if access == .deny { return .deny }
            granted = max(granted ?? .deny, access)
        }
        if case .acl = resource { return granted ?? .deny }
        return granted ?? fallback
    }

    /// Whether the caller has at least `access` on `resource`.
    public func allows(_ access: ACLAccess, on resource: ACLResource) -> Bool {
        guard enforced else { return true }
        let held = self.access(to: resource)
        return held != .deny && held >= access
    }

    /// Whether the caller may read `service` (what lookups, watches and listings filter by).
    public func canRead(_ service: ServiceName) -> Bool { allows(.read, on: .service(service)) }

    /// Throws ``ACLError/denied(_:accessorID:)`` (403) unless the caller has `access` on `resource`.
    public func require(_ access: ACLAccess, on resource: ACLResource) throws(ACLError) {
        guard allows(access, on: resource) else {
            // A caller without a token is told to present one, not that "anonymous" lacks the permission.
            if accessorID == ACLToken.anonymousAccessorID { throw .missingToken }
            throw .denied(ACLPermission(access, on: resource), accessorID: accessorID)
        }
    }
}

/// Why an ACL check or an ACL write was refused; each knows its status and tells the caller what to do.
public enum ACLError: Error, Sendable, Hashable, CustomStringConvertible, APIReportableError {
    /// No token, where the default policy gives an anonymous caller nothing (401).
    case missingToken
    /// A token the agent does not know (401).
    case unknownToken
    /// The token lacks a permission (403).
    case denied(ACLPermission, accessorID: String?)
    /// A second bootstrap (409).
    case alreadyBootstrapped
    /// ACLs are off on this agent (409).
    case disabled
    /// No such token or policy (404).
    case notFound(String, String)
    /// A token or policy of that name exists (409).
    case exists(String, String)
    /// A policy still held by tokens (409).
    case policyInUse(String, tokens: [String])
    /// A built-in token or policy cannot be changed that way (409).
    case reserved(String)
    /// A token names a policy that does not exist (422).
    case unknownPolicy(String, field: String)

    package var apiStatus: Int {
        switch self {
        case .missingToken, .unknownToken: 401
        case .denied: 403
        case .notFound: 404
        case .unknownPolicy: 422
        case .alreadyBootstrapped, .disabled, .exists, .policyInUse, .reserved: 409
        }
    }

    package var apiErrorBody: APIErrorBody {
        switch self {
        case .missingToken, .unknownToken: APIErrorBody(error: .unauthorized, message: description)
        case .denied: APIErrorBody(error: .permissionDenied, message: description)
        case .notFound: APIErrorBody(error: .notFound, message: description)
        case .unknownPolicy(_, let field): APIErrorBody(error: .invalidArgument, message: description, field: field)
        default: APIErrorBody(error: .conflict, message: description)
        }
    }

    public var description: String {
        switch self {
        case .missingToken:
            "this agent requires an ACL token: send it as X-Switchboard-Token or Authorization: Bearer"
                + " (switchboard --token, SWITCHBOARD_TOKEN)"
        case .unknownToken:
            "the ACL token presented is not known to this agent (deleted, or mistyped)"
        case .denied(let permission, let accessor):
            "permission denied: this request needs \(permission), which the token"
                + (accessor.map { " \($0)" } ?? "") + " does not grant"
        case .alreadyBootstrapped:
            "the ACLs were bootstrapped already: the first management token exists; create more tokens with it"
        case .disabled:
            "ACLs are off on this agent: start it with --acl-default-policy deny (or allow) to use them"
        case .notFound(let kind, let name): "no \(kind) \"\(name)\""
        case .exists(let kind, let name): "a \(kind) \"\(name)\" exists already"
        case .policyInUse(let name, let tokens):
            "policy \"\(name)\" is held by \(tokens.count) token(s) (\(tokens.prefix(5).joined(separator: ", "))):"
                + " take it off them first"
        case .reserved(let what): "\(what) is built in and cannot be changed that way"
        case .unknownPolicy(let name, _): "no policy \"\(name)\": create it first (switchboard acl policy create)"
        }
    }
}

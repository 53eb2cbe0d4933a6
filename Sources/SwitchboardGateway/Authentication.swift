import Foundation
import JWTKit
import NIOCore
import SwitchboardCore
import Synchronization

/// Who a request comes from, once the gateway has checked it: sent to instances as `X-User-ID` and
/// `X-User-Roles`, and any copies of those headers a caller sent are dropped first.
struct Identity: Sendable, Equatable {
    var user: String
    var roles: [String]
    /// How it was proven: `jwt` or `api-key`.
    var method: String
}

/// What a route asks of callers.
struct AuthenticationRequirement: Sendable {
    enum Method: String, Sendable {
        case jwt
        case apiKey = "api-key"
        /// Either a token or a key.
        case any
    }

    var method: Method
    /// A caller needs one of these roles; empty: any authenticated caller.
    var roles: Set<String>
    /// The keys of the route file the route came from (a reload cannot leave a route checking nothing).
    var keys: Authentication
}

/// Why a caller was not let through: 401 (who are you?) or 403 (not you).
struct AuthenticationFailure: Error, Sendable {
    var status: Int
    var message: String
    /// For 401s to token holders: the `WWW-Authenticate` challenge.
    var challenge: String?
}

/// The gateway's keys: JWT verification keys (HS256 secrets, RS256 and ES256 public keys) with the claims every
/// token must carry, and API keys with the identity each stands for.
final class Authentication: Sendable {
    struct APIKey: Sendable {
        var identity: Identity
    }

    struct TokenRules: Sendable {
        var issuer: String?
        var audience: String?
        /// The claim that lists a token's roles (an array of strings, or one space-separated string).
        var rolesClaim: String
        /// Tolerated clock difference for `exp` and `nbf`.
        var leeway: Duration
    }

    private let keys: JWTKeyCollection?
    private let rules: TokenRules
    private let apiKeys: [String: APIKey]
    /// Tokens already verified, until they expire: a repeated token skips the signature check (and the hop to the
    /// key collection's actor). Bounded; cleared when full.
    private let verified = Mutex<[String: (identity: Identity, expires: Date)]>([:])
    private static let verifiedLimit = 4096

    init(
        keys: JWTKeyCollection? = nil, rules: TokenRules = TokenRules(rolesClaim: "roles", leeway: .seconds(0)),
        apiKeys: [String: APIKey] = [:]
    ) {
        self.keys = keys
        self.rules = rules
        self.apiKeys = apiKeys
    }

    var hasTokenKeys: Bool { keys != nil }
    var hasAPIKeys: Bool { !apiKeys.isEmpty }

    /// The caller's identity under `requirement`, synchronously when it can be told at once (an API key, a token
    /// seen before, a missing credential); else the future of checking a token.
    func authenticate(
        _ request: RequestHead, requirement: AuthenticationRequirement, on loop: any EventLoop
    ) -> EventLoopFuture<Identity> {
        let bearer = request.fields.first("authorization").flatMap(Self.bearerToken)
        let key = request.fields.first("x-api-key")
        var result: EventLoopFuture<Identity>
        switch (requirement.method, bearer, key) {
        case (.apiKey, _, let key?), (.any, nil, let key?):
            result = loop.makeCompletedFuture(Result { try identify(apiKey: key) })
        case (.jwt, let token?, _), (.any, let token?, _):
            if let known = knownToken(token) {
                result = loop.makeSucceededFuture(known)
            } else {
                result = verify(token, on: loop)
            }
        case (.apiKey, _, nil):
            result = loop.makeFailedFuture(
                AuthenticationFailure(status: 401, message: "an API key is required (X-API-Key header)"))
        case (.jwt, nil, _), (.any, nil, nil):
            result = loop.makeFailedFuture(
                AuthenticationFailure(
                    status: 401,
                    message: "a bearer token is required (Authorization: Bearer <JWT>)"
                        + (requirement.method == .any ? " or an API key (X-API-Key)" : ""),
                    challenge: "Bearer"))
        }
        guard !requirement.roles.isEmpty else { return result }
        return result.flatMapThrowing { identity in
            guard identity.roles.contains(where: requirement.roles.contains) else {
                throw AuthenticationFailure(
                    status: 403,
                    message:
                        "\(identity.user) lacks a role this route allows: \(requirement.roles.sorted().joined(separator: ", "))"
                )
            }
            return identity
        }
    }

    private func identify(apiKey: String) throws -> Identity {
        guard let known = apiKeys[apiKey] else {
            throw AuthenticationFailure(status: 401, message: "the API key is not known")
        }
        return known.identity
    }

    private func knownToken(_ token: String) -> Identity? {
        verified.withLock { verified in
            guard let entry = verified[token] else { return nil }
            guard entry.expires.timeIntervalSinceNow + rules.leeway.seconds > 0 else {
                verified[token] = nil
                return nil
            }
            return entry.identity
        }
    }

    private func verify(_ token: String, on loop: any EventLoop) -> EventLoopFuture<Identity> {
        guard let keys else {
            return loop.makeFailedFuture(
                AuthenticationFailure(status: 401, message: "this gateway has no token keys configured"))
        }
        let rules = self.rules
        return loop.makeFutureWithTask { [self] in
            let claims: GatewayClaims
            do {
                claims = try await keys.verify(token, as: GatewayClaims.self)
            } catch let error as JWTError {
                throw AuthenticationFailure(
                    status: 401, message: "the token was refused: \(Self.reason(error))",
                    challenge: #"Bearer error="invalid_token""#)
            } catch {
                throw AuthenticationFailure(
                    status: 401, message: "the token was refused: \(error)", challenge: #"Bearer error="invalid_token""#
                )
            }
            let now = Date()
            guard let expiry = claims.exp?.value else {
                throw AuthenticationFailure(
                    status: 401, message: "the token has no exp claim", challenge: #"Bearer error="invalid_token""#)
            }
            guard expiry.timeIntervalSince(now) + rules.leeway.seconds > 0 else {
                throw AuthenticationFailure(
                    status: 401, message: "the token expired at \(expiry)", challenge: #"Bearer error="invalid_token""#)
            }
            if let notBefore = claims.nbf?.value, notBefore.timeIntervalSince(now) - rules.leeway.seconds > 0 {
                throw AuthenticationFailure(
                    status: 401, message: "the token is not valid before \(notBefore)",
                    challenge: #"Bearer error="invalid_token""#)
            }
            if let issuer = rules.issuer, claims.iss != issuer {
                throw AuthenticationFailure(
                    status: 401, message: "the token's issuer is not \(issuer)",
                    challenge: #"Bearer error="invalid_token""#)
            }
            if let audience = rules.audience, !(claims.aud?.value.contains(audience) ?? false) {
                throw AuthenticationFailure(
                    status: 401, message: "the token is not meant for audience \(audience)",
                    challenge: #"Bearer error="invalid_token""#)
            }
            guard let subject = claims.sub, !subject.isEmpty else {
                throw AuthenticationFailure(
                    status: 401, message: "the token has no sub claim", challenge: #"Bearer error="invalid_token""#)
            }
            let identity = Identity(user: subject, roles: claims.roles(named: rules.rolesClaim), method: "jwt")
            verified.withLock { verified in
                if verified.count >= Self.verifiedLimit { verified.removeAll(keepingCapacity: true) }
                verified[token] = (identity, expiry)
            }
            return identity
        }
    }

    private static func reason(_ error: JWTError) -> String {
        switch error.errorType {
        case .signatureVerificationFailed: "its signature does not verify"
        case .malformedToken: "it is not a well-formed JWT"
        case .missingKIDHeader, .unknownKID: "it names no key this gateway knows"
        case .claimVerificationFailure: "a claim does not hold: \(error.reason ?? "")"
        default: "\(error.reason ?? "\(error.errorType)")"
        }
    }

    static func bearerToken(_ header: String) -> String? {
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return nil }
        return String(parts[1]).trimmingWhitespace
    }
}

/// The claims the gateway reads; `exp`, `nbf`, `aud` and `iss` are checked by ``Authentication`` against its
/// rules (jwt-kit checks the signature), and the roles claim is read by name.
struct GatewayClaims: JWTPayload {
    var sub: String?
    var exp: ExpirationClaim?
    var nbf: NotBeforeClaim?
    var iss: String?
    var aud: AudienceClaim?
    var other: [String: ClaimValue]

    enum ClaimValue: Codable, Sendable {
        case strings([String])
        case string(String)
        case other

        init(from decoder: any Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let list = try? container.decode([String].self) {
                self = .strings(list)
            } else if let text = try? container.decode(String.self) {
                self = .string(text)
            } else {
                self = .other
            }
        }

        func encode(to encoder: any Encoder) throws {}
    }

    private struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: Key.self)
        sub = try? container.decode(String.self, forKey: Key(stringValue: "sub"))
        exp = try? container.decode(ExpirationClaim.self, forKey: Key(stringValue: "exp"))
        nbf = try? container.decode(NotBeforeClaim.self, forKey: Key(stringValue: "nbf"))
        iss = try? container.decode(String.self, forKey: Key(stringValue: "iss"))
        aud = try? container.decode(AudienceClaim.self, forKey: Key(stringValue: "aud"))
        var other: [String: ClaimValue] = [:]
        for key in container.allKeys where !["sub", "exp", "nbf", "iss", "aud"].contains(key.stringValue) {
            other[key.stringValue] = try container.decode(ClaimValue.self, forKey: key)
        }
        self.other = other
    }

    func encode(to encoder: any Encoder) throws {}

    /// Checked by ``Authentication`` with the gateway's rules.
    func verify(using algorithm: some JWTAlgorithm) async throws {}

    func roles(named claim: String) -> [String] {
        switch other[claim] {
        case .strings(let roles): roles
        case .string(let roles): roles.split(separator: " ").map(String.init)
        default: []
        }
    }
}

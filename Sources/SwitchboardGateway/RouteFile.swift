import Foundation
import JWTKit
import SwitchboardCore

/// Reads a gateway route file (YAML) into a ``RouteTable``; every rule broken is reported with the field's path.
///
/// ```yaml
/// authentication:
///   jwt:
///     issuer: https://auth.shop.local
///     audience: shop-api
///     keys:
///       - { kid: main, algorithm: HS256, secret: "..." }
///       - { kid: rsa, algorithm: RS256, publicKey: "-----BEGIN PUBLIC KEY-----..." }
///   apiKeys:
///     - { key: "k-123", user: reporting, roles: [reader] }
/// routes:
///   - name: cart
///     match: { prefix: /api/cart, host: shop.local, methods: [GET, POST], headers: { X-Canary: "yes" } }
///     service: cart
///     tags: [v2]
///     rewrite: /
///     timeout: 2s
///     retries: 1
///     auth: { method: jwt, roles: [shopper] }
///     rateLimit: { key: user, rate: 10, burst: 20 }
/// ```
enum RouteFile {
    static func parse(_ text: String, source: String) async throws(GatewayConfigurationError) -> RouteTable {
        let document = try ConfigurationNode.document(text)
        let top = try document.mapping(allowed: ["routes", "authentication"])
        var authentication = Authentication()
        if let node = top["authentication"] { authentication = try await parseAuthentication(node) }
        guard let routesNode = top["routes"] else {
            throw GatewayConfigurationError(field: "routes", message: "the file must list routes")
        }
        var routes: [Route] = []
        var names: Set<String> = []
        for (index, node) in try routesNode.list().enumerated() {
            let route = try parseRoute(node, index: index, authentication: authentication)
            guard names.insert(route.name).inserted else {
                throw GatewayConfigurationError(field: "\(node.path).name", message: "'\(route.name)' names two routes")
            }
            routes.append(route)
        }
        return RouteTable(routes: routes, authentication: authentication, source: source)
    }

    private static func parseRoute(
        _ node: ConfigurationNode, index: Int, authentication: Authentication
    ) throws(GatewayConfigurationError) -> Route {
        let fields = try node.mapping(allowed: [
            "name", "match", "service", "tags", "meta", "split", "rewrite", "stripPrefix", "timeout", "retries",
            "balancer", "sticky", "auth", "rateLimit", "cache", "requestHeaders", "responseHeaders", "cors",
            "aggregate",
        ])
        let name = try fields["name"]?.nonEmptyString() ?? "route-\(index)"
        var prefix = "/"
        var hosts: [String] = []
        var methods: Set<String> = []
        var headers: [(name: String, value: String?)] = []
        if let match = fields["match"] {
            let conditions = try match.mapping(allowed: ["prefix", "host", "methods", "headers"])
            if let node = conditions["prefix"] {
                prefix = try node.nonEmptyString()
                guard prefix.hasPrefix("/"), !prefix.contains("?"), !prefix.contains(" ") else {
                    throw node.error("must be a path starting with '/', without a query")
                }
            }
            if let node = conditions["host"] {
                hosts = try node.strings().map { $0.lowercased() }
                guard hosts.allSatisfy({ !$0.isEmpty && !$0.contains(":") && !$0.dropFirst().contains("*") }) else {
                    throw node.error("must be host names without a port; '*.' may start one")
                }
            }
            if let node = conditions["methods"] {
                methods = Set(try node.strings().map { $0.uppercased() })
                guard methods.allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy(HTTPHeadParser.isTokenCharacter) }) else {
                    throw node.error("must be HTTP methods such as GET or POST")
                }
            }
            if let node = conditions["headers"] {
                for (header, value) in try node.stringMap().sorted(by: { $0.key < $1.key }) {
                    guard header.utf8.allSatisfy(HTTPHeadParser.isTokenCharacter), !header.isEmpty else {
                        throw node.error("'\(header)' is not a header name")
                    }
                    headers.append((header.lowercased(), value == "*" ? nil : value))
                }
            }
        }
        let aggregate = try fields["aggregate"].map { (node) throws(GatewayConfigurationError) in
            try parseAggregate(node, fields: fields)
        }
        let targets: [RouteTarget]
        if let aggregate {
            targets = [RouteTarget(service: aggregate.parts[0].service, query: InstanceQuery(), weight: 1)]
        } else {
            targets = try parseTargets(fields, node: node)
        }
        var rewrite = try fields["rewrite"]?.string()
        if let rewrite, !rewrite.hasPrefix("/") {
            throw GatewayConfigurationError(field: "\(node.path).rewrite", message: "must be a path starting with '/'")
        }
        if try fields["stripPrefix"]?.bool() == true {
            guard rewrite == nil else {
                throw GatewayConfigurationError(
                    field: "\(node.path).stripPrefix", message: "give either stripPrefix or rewrite, not both")
            }
            rewrite = "/"
        }
        let balancer = try fields["balancer"].map { (node) throws(GatewayConfigurationError) in
            guard let kind = BalancerKind(rawValue: try node.string()), BalancerKind.named.contains(kind) else {
                throw node.error("must be one of \(BalancerKind.named.map(\.rawValue).joined(separator: ", "))")
            }
            return kind
        }
        let sticky = try fields["sticky"].map { (node) throws(GatewayConfigurationError) in
            try parseSticky(node)
        }
        if sticky != nil, let given = fields["balancer"] {
            throw given.error("a sticky route picks by consistent hashing: give either balancer or sticky")
        }
        return Route(
            name: name, prefix: prefix, hosts: hosts, methods: methods, headers: headers, targets: targets,
            rewrite: rewrite, timeout: try fields["timeout"]?.duration(in: .milliseconds(1)...(.seconds(3600))),
            retries: try fields["retries"]?.int(in: 0...10), balancer: balancer ?? .roundRobin, sticky: sticky,
            policies: try parsePolicies(fields, authentication: authentication), aggregate: aggregate)
    }

    /// `sticky: { cookie: NAME [, set: false] [, maxAge: 1h] }` or `sticky: { header: NAME }`.
    private static func parseSticky(_ node: ConfigurationNode) throws(GatewayConfigurationError) -> StickySessions {
        let entries = try node.mapping(allowed: ["cookie", "header", "set", "maxAge"])
        let isToken = { (name: String) in
            !name.isEmpty && name.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F && !"()<>@,;:\\\"/[]?={}".utf8.contains($0) }
        }
        switch (entries["cookie"], entries["header"]) {
        case (let cookie?, nil):
            let name = try cookie.string()
            guard isToken(name) else { throw cookie.error("must be a cookie name (a token such as sb-session)") }
            return .cookie(
                name: name, sets: try entries["set"]?.bool() ?? true,
                maxAge: try entries["maxAge"]?.duration(in: .seconds(1)...(.seconds(400 * 86_400))))
        case (nil, let header?):
            let name = try header.string()
            guard isToken(name) else { throw header.error("must be a header name such as X-User-ID") }
            for key in ["set", "maxAge"] where entries[key] != nil {
                throw node.error("\(key) is for a cookie: a header is the caller's own")
            }
            return .header(name.lowercased())
        default:
            throw node.error("give a cookie (set by the gateway, or the caller's own with set: false) or a header")
        }
    }

    private static func parseAggregate(
        _ node: ConfigurationNode, fields: [String: ConfigurationNode]
    ) throws(GatewayConfigurationError) -> AggregateSpec {
        for key in ["service", "split", "tags", "meta", "rewrite", "stripPrefix", "cache"] where fields[key] != nil {
            throw node.error("an aggregate route takes no \(key): each part names its service and path")
        }
        let entries = try node.mapping(allowed: ["timeout", "parts"])
        let timeout = try entries["timeout"]?.duration(in: .milliseconds(1)...(.seconds(60))) ?? .seconds(2)
        guard let partsNode = entries["parts"], case let parts = try partsNode.list(), !parts.isEmpty else {
            throw GatewayConfigurationError(field: "\(node.path).parts", message: "list at least one part")
        }
        var names: Set<String> = []
        let specs = try parts.map { (part) throws(GatewayConfigurationError) -> AggregateSpec.Part in
            let values = try part.mapping(allowed: ["name", "service", "path", "timeout"])
            guard let nameNode = values["name"], let serviceNode = values["service"], let pathNode = values["path"]
            else {
                throw part.error("each part needs name, service and path")
            }
            let name = try nameNode.nonEmptyString()
            guard name != "partial", name != "errors", names.insert(name).inserted else {
                throw nameNode.error("must be unique and not 'partial' or 'errors'")
            }
            let service: ServiceName
            do {
                service = try ServiceName(try serviceNode.string())
            } catch {
                throw serviceNode.error("\(error)")
            }
            let path = try pathNode.nonEmptyString()
            guard path.hasPrefix("/"), !path.contains(" ") else {
                throw pathNode.error("must be a path starting with '/'")
            }
            return AggregateSpec.Part(
                name: name, service: service, path: path,
                timeout: try values["timeout"]?.duration(in: .milliseconds(1)...(.seconds(60))) ?? timeout)
        }
        return AggregateSpec(parts: specs)
    }

    private static func parseTargets(
        _ fields: [String: ConfigurationNode], node: ConfigurationNode
    ) throws(GatewayConfigurationError) -> [RouteTarget] {
        if let split = fields["split"] {
            guard fields["service"] == nil, fields["tags"] == nil, fields["meta"] == nil else {
                throw split.error("give either service (with tags and meta) or split, not both")
            }
            let sides = try split.list()
            guard !sides.isEmpty else { throw split.error("must list at least one target") }
            return try sides.map { (side) throws(GatewayConfigurationError) -> RouteTarget in
                let entries = try side.mapping(allowed: ["service", "tags", "meta", "weight"])
                guard let weight = entries["weight"] else {
                    throw GatewayConfigurationError(field: "\(side.path).weight", message: "each target needs a weight")
                }
                return try target(entries, at: side, weight: try weight.int(in: 1...1_000_000))
            }
        }
        return [try target(fields, at: node, weight: 1)]
    }

    private static func target(
        _ fields: [String: ConfigurationNode], at node: ConfigurationNode, weight: Int
    ) throws(GatewayConfigurationError) -> RouteTarget {
        guard let serviceNode = fields["service"] else {
            throw GatewayConfigurationError(
                field: "\(node.path).service", message: "a route needs a service or a split")
        }
        let service: ServiceName
        do {
            service = try ServiceName(try serviceNode.string())
        } catch {
            throw serviceNode.error("\(error)")
        }
        let tags = try fields["tags"]?.strings() ?? []
        let meta = try fields["meta"]?.stringMap().sorted { $0.key < $1.key }.map {
            InstanceQuery.MetaCondition(key: $0.key, value: $0.value)
        }
        return RouteTarget(service: service, query: InstanceQuery(tags: tags, meta: meta ?? []), weight: weight)
    }

    private static func parsePolicies(
        _ fields: [String: ConfigurationNode], authentication: Authentication
    ) throws(GatewayConfigurationError) -> RoutePolicies {
        var policies = RoutePolicies()
        if let node = fields["auth"] {
            let entries = try node.mapping(allowed: ["method", "roles"])
            let methodNode = entries["method"]
            let method =
                try methodNode.map { (node) throws(GatewayConfigurationError) in
                    guard let method = AuthenticationRequirement.Method(rawValue: try node.string()) else {
                        throw node.error("must be jwt, api-key or any")
                    }
                    return method
                } ?? .any
            if method != .apiKey, !authentication.hasTokenKeys, method == .jwt {
                throw node.error("needs authentication.jwt.keys in the file")
            }
            if method == .apiKey, !authentication.hasAPIKeys {
                throw node.error("needs authentication.apiKeys in the file")
            }
            if method == .any, !authentication.hasAPIKeys, !authentication.hasTokenKeys {
                throw node.error("needs authentication.jwt.keys or authentication.apiKeys in the file")
            }
            policies.authentication = AuthenticationRequirement(
                method: method, roles: Set(try entries["roles"]?.strings() ?? []), keys: authentication)
        }
        if let node = fields["rateLimit"] {
            let entries = try node.mapping(allowed: ["key", "rate", "burst", "shared"])
            let key =
                try entries["key"].map { (node) throws(GatewayConfigurationError) in
                    guard let key = RateLimiter.Key(rawValue: try node.string()) else {
                        throw node.error("must be api-key, user or client-ip")
                    }
                    return key
                } ?? .clientIP
            guard let rate = entries["rate"] else {
                throw GatewayConfigurationError(field: "\(node.path).rate", message: "requests a second are required")
            }
            let perSecond = try rate.double(in: 0.001...1_000_000)
            let burst = try entries["burst"]?.int(in: 1...1_000_000) ?? max(1, Int(perSecond.rounded(.up)))
            policies.rateLimit = RateLimiter(
                key: key, rate: perSecond, burst: burst, shared: try entries["shared"]?.bool() ?? false)
        }
        if let node = fields["cache"] {
            let entries = try node.mapping(allowed: ["ttl", "maxBytes", "maxEntryBytes", "purge"])
            guard let ttl = entries["ttl"] else {
                throw GatewayConfigurationError(field: "\(node.path).ttl", message: "a cache needs a ttl")
            }
            policies.cache = ResponseCache(
                ttl: try ttl.duration(in: .milliseconds(1)...(.seconds(86_400))),
                maximumBytes: try entries["maxBytes"]?.int(in: 1024...(1 << 34)) ?? 64 << 20,
                maximumEntryBytes: try entries["maxEntryBytes"]?.int(in: 1...(1 << 30)) ?? 1 << 20,
                allowsPurge: try entries["purge"]?.bool() ?? false)
        }
        policies.requestHeaders = try parseHeaderEdits(fields["requestHeaders"])
        policies.responseHeaders = try parseHeaderEdits(fields["responseHeaders"])
        if let node = fields["cors"] {
            let entries = try node.mapping(allowed: [
                "origins", "methods", "headers", "exposeHeaders", "credentials", "maxAge",
            ])
            guard let origins = entries["origins"] else {
                throw GatewayConfigurationError(field: "\(node.path).origins", message: "list the allowed origins")
            }
            let allowed = try origins.strings()
            if allowed.contains("*"), try entries["credentials"]?.bool() == true {
                throw node.error("credentials cannot go with origins '*': list the origins that may send them")
            }
            policies.cors = CORSPolicy(
                origins: allowed,
                methods: try entries["methods"]?.strings().map { $0.uppercased() } ?? ["GET", "HEAD", "POST"],
                headers: try entries["headers"]?.strings() ?? [],
                exposedHeaders: try entries["exposeHeaders"]?.strings() ?? [],
                credentials: try entries["credentials"]?.bool() ?? false,
                maxAge: try entries["maxAge"]?.int(in: 0...86_400) ?? 600)
        }
        return policies
    }

    private static func parseHeaderEdits(_ node: ConfigurationNode?) throws(GatewayConfigurationError) -> HeaderEdits {
        guard let node else { return HeaderEdits() }
        let entries = try node.mapping(allowed: ["set", "remove"])
        var edits = HeaderEdits()
        for (name, value) in try entries["set"]?.stringMap().sorted(by: { $0.key < $1.key }) ?? [] {
            guard !name.isEmpty, name.utf8.allSatisfy(HTTPHeadParser.isTokenCharacter) else {
                throw node.error("'\(name)' is not a header name")
            }
            guard value.utf8.allSatisfy({ $0 == 0x09 || ($0 >= 0x20 && $0 != 0x7F) }) else {
                throw node.error("the value of '\(name)' has a control character")
            }
            edits.fields.append((name, value))
        }
        edits.remove = Set(try entries["remove"]?.strings().map { $0.lowercased() } ?? [])
        return edits
    }

    private static func parseAuthentication(
        _ node: ConfigurationNode
    ) async throws(GatewayConfigurationError) -> Authentication {
        let entries = try node.mapping(allowed: ["jwt", "apiKeys"])
        var keys: JWTKeyCollection?
        var rules = Authentication.TokenRules(rolesClaim: "roles", leeway: .seconds(0))
        if let jwt = entries["jwt"] {
            let fields = try jwt.mapping(allowed: ["issuer", "audience", "rolesClaim", "leeway", "keys"])
            rules.issuer = try fields["issuer"]?.nonEmptyString()
            rules.audience = try fields["audience"]?.nonEmptyString()
            rules.rolesClaim = try fields["rolesClaim"]?.nonEmptyString() ?? "roles"
            rules.leeway = try fields["leeway"]?.duration(in: .zero...(.seconds(600))) ?? .zero
            guard let keyList = fields["keys"], case let list = try keyList.list(), !list.isEmpty else {
                throw GatewayConfigurationError(field: "\(jwt.path).keys", message: "list at least one key")
            }
            let collection = JWTKeyCollection()
            var kids: Set<String> = []
            for key in list {
                let kid = try await addKey(key, to: collection, single: list.count == 1)
                guard kids.insert(kid ?? "").inserted else {
                    throw key.error("two keys share the kid '\(kid ?? "")'; give each key its own kid")
                }
            }
            // With several keys, a token must name its key: jwt-kit would otherwise try the first one added.
            if list.count > 1 { _ = await collection.clearDefault() }
            keys = collection
        }
        var apiKeys: [String: Authentication.APIKey] = [:]
        if let list = entries["apiKeys"] {
            for item in try list.list() {
                let fields = try item.mapping(allowed: ["key", "user", "roles"])
                guard let keyNode = fields["key"], let userNode = fields["user"] else {
                    throw item.error("each API key needs key and user")
                }
                let key = try keyNode.string()
                guard key.utf8.count >= 16 else { throw keyNode.error("must be at least 16 characters") }
                guard apiKeys[key] == nil else { throw keyNode.error("given twice") }
                apiKeys[key] = Authentication.APIKey(
                    identity: Identity(
                        user: try userNode.nonEmptyString(), roles: try fields["roles"]?.strings() ?? [],
                        method: "api-key"))
            }
        }
        return Authentication(keys: keys, rules: rules, apiKeys: apiKeys)
    }

    /// Adds one verification key; returns its kid.
    private static func addKey(
        _ node: ConfigurationNode, to collection: JWTKeyCollection, single: Bool
    ) async throws(GatewayConfigurationError) -> String? {
        let fields = try node.mapping(allowed: ["kid", "algorithm", "secret", "publicKey", "publicKeyFile"])
        let kid = try fields["kid"]?.nonEmptyString()
        if kid == nil, !single { throw node.error("with several keys, each needs a kid") }
        guard let algorithmNode = fields["algorithm"] else {
            throw GatewayConfigurationError(field: "\(node.path).algorithm", message: "must be HS256, RS256 or ES256")
        }
        let identifier = kid.map { JWKIdentifier(string: $0) }
        let algorithm = try algorithmNode.string()
        func publicKey() throws(GatewayConfigurationError) -> String {
            if let text = fields["publicKey"] { return try text.nonEmptyString() }
            if let file = fields["publicKeyFile"] {
                let path = try file.nonEmptyString()
                guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                    throw file.error("cannot read \(path)")
                }
                return text
            }
            throw node.error("\(algorithm) needs publicKey (PEM) or publicKeyFile")
        }
        switch algorithm {
        case "HS256":
            guard let secret = try fields["secret"]?.string(), secret.utf8.count >= 32 else {
                throw node.error("HS256 needs a secret of at least 32 bytes")
            }
            await collection.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256, kid: identifier)
        case "RS256":
            let pem = try publicKey()
            do {
                await collection.add(
                    rsa: try Insecure.RSA.PublicKey(pem: pem), digestAlgorithm: .sha256, kid: identifier)
            } catch {
                throw node.error("the RS256 public key is not a PEM RSA public key of 2048 bits or more: \(error)")
            }
        case "ES256":
            let pem = try publicKey()
            do {
                await collection.add(ecdsa: try ES256PublicKey(pem: pem), kid: identifier)
            } catch {
                throw node.error("the ES256 public key is not a PEM P-256 public key: \(error)")
            }
        default:
            throw algorithmNode.error("must be HS256, RS256 or ES256")
        }
        return kid
    }
}

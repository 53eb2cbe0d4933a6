import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import Prometheus
import SwitchboardCatalog
import SwitchboardCore

/// Establishes each request's caller from the token it presents (`X-Switchboard-Token`, `Authorization: Bearer`,
/// or what a compatibility layer read: Consul's `X-Consul-Token` and `?token=`): 401 for a token the agent does not
/// know; a caller without one is anonymous.
struct CallerMiddleware: RouterMiddleware {
    typealias Context = AgentRequestContext

    static let tokenHeader = HTTPField.Name("X-Switchboard-Token")!

    let acls: AccessControl
    let metrics: AgentMetrics

    func handle(
        _ request: Request, context: AgentRequestContext,
        next: (Request, AgentRequestContext) async throws -> Response
    ) async throws -> Response {
        guard acls.configuration.enabled else { return try await next(request, context) }
        var context = context
        let secret = Self.presentedSecret(request) ?? context.caller.presentedToken
        do {
            context.authority = try await acls.authority(presenting: secret)
        } catch {
            metrics.aclRefusals.increment()
            throw error
        }
        context.caller.accessorID = context.authority.accessorID
        return try await next(request, context)
    }

    /// The token in the native headers, if any.
    static func presentedSecret(_ request: Request) -> String? {
        if let token = request.headers[tokenHeader], !token.isEmpty { return token }
        if let authorization = request.headers[.authorization], authorization.count > 7,
            authorization.prefix(7).lowercased() == "bearer "
        {
            return authorization.dropFirst(7).trimmingCharacters(in: .whitespaces)
        }
        return nil
    }
}

extension AgentHTTPAPI {
    /// Checks a route's declared access against the caller's rights (nothing with ACLs off).
    func checkAccess(_ access: RouteAccess, context: AgentRequestContext) throws {
        let authority = context.authority
        guard authority.enforced else { return }
        switch access {
        case .open, .handler:
            return
        case .area(let level, let resource):
            try authority.require(level, on: resource)
        case .service(let level):
            // The name as every handler reads it: lowercased, as the Consul layer takes names and as Eureka's
            // application names are the services' in capitals (the native API refuses capitals itself).
            let raw = (context.parameters.get("service") ?? context.parameters.get("app")).map(Self.percentDecoded)
            guard let service = raw.flatMap({ try? ServiceName($0.lowercased()) }) else {
                // No service can have this name, even lowercased: no handler can reach one with it (the native API
                // answers 400, Consul's an empty list, Eureka's 404), so there is nothing to guard, and the handler
                // tells the caller what is wrong with the name.
                return
            }
            try authority.require(level, on: .service(service))
        }
    }

    /// 200 with the first management token, its secret shown this once; 409 ever after.
    @Sendable func aclBootstrap(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let token = try await acls.bootstrap(by: context.audit)
        return try json(token, index: catalog.index, request: request)
    }

    /// The token the request presents (401 without one).
    @Sendable func aclTokenSelf(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        guard acls.configuration.enabled else { throw ACLError.disabled }
        guard let accessor = context.authority.accessorID, accessor != ACLToken.anonymousAccessorID else {
            throw ACLError.missingToken
        }
        return try json(try acls.token(accessorID: accessor), index: catalog.index, request: request)
    }

    /// What the caller's own token may do, on the agent's areas and on each `?service=` (at most 1,000 of them);
    /// open to every caller, since it tells a token only about itself.
    @Sendable func aclRights(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let names = request.uri.queryParameters.getAll("service").map { String($0) }
        guard names.count <= 1000 else {
            throw ValidationError(field: "service", message: "service may be given at most 1000 times")
        }
        var services: [String: ACLAccess] = [:]
        for name in names {
            let service = try ServiceName(name, field: "service")
            services[name] = context.authority.access(to: .service(service))
        }
        let authority = context.authority
        let rights = ACLRights(
            enforced: authority.enforced, accessorID: authority.enforced ? authority.accessorID : nil,
            agent: authority.access(to: .agent), acl: authority.access(to: .acl),
            events: authority.access(to: .events), services: services)
        return try json(rights, index: catalog.index, request: request)
    }

    @Sendable func aclListTokens(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try json(ACLTokenList(tokens: acls.tokens()), index: catalog.index, request: request)
    }

    /// 201 with the new token and its secret (shown this once).
    @Sendable func aclCreateToken(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let body = try await decodeBody(ACLTokenRequest.self, from: request, context: context)
        let token = try await acls.createToken(body, by: context.audit)
        return try json(token, status: .created, index: catalog.index, request: request)
    }

    @Sendable func aclReadToken(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try json(try acls.token(accessorID: accessorParameter(context)), index: catalog.index, request: request)
    }

    @Sendable func aclUpdateToken(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let body = try await decodeBody(ACLTokenRequest.self, from: request, context: context)
        let token = try await acls.updateToken(accessorID: try accessorParameter(context), body, by: context.audit)
        return try json(token, index: catalog.index, request: request)
    }

    @Sendable func aclDeleteToken(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let accessor = try accessorParameter(context)
        let token = try acls.token(accessorID: accessor)
        try await acls.deleteToken(accessorID: accessor, by: context.audit)
        return try json(token, index: catalog.index, request: request)
    }

    @Sendable func aclListPolicies(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try json(ACLPolicyList(policies: acls.policies()), index: catalog.index, request: request)
    }

    @Sendable func aclCreatePolicy(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let policy = try await decodeBody(ACLPolicy.self, from: request, context: context)
        try await acls.savePolicy(policy, replacing: false, by: context.audit)
        return try json(policy, status: .created, index: catalog.index, request: request)
    }

    @Sendable func aclReadPolicy(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        try json(try acls.policy(named: policyParameter(context)), index: catalog.index, request: request)
    }

    /// Replaces a policy; the body's name, if any, must be the path's.
    @Sendable func aclUpdatePolicy(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let name = try policyParameter(context)
        let policy = try await decodeBody(ACLPolicy.self, from: request, context: context)
        guard policy.name == name else {
            throw APIError(
                .unprocessableContent, .invalidArgument, "the body's name must be the path's (\(name))", field: "name")
        }
        try await acls.savePolicy(policy, replacing: true, by: context.audit)
        return try json(policy, index: catalog.index, request: request)
    }

    @Sendable func aclDeletePolicy(_ request: Request, _ context: AgentRequestContext) async throws -> Response {
        let name = try policyParameter(context)
        let policy = try acls.policy(named: name)
        try await acls.deletePolicy(named: name, by: context.audit)
        return try json(policy, index: catalog.index, request: request)
    }

    private func accessorParameter(_ context: AgentRequestContext) throws -> String {
        let accessor = context.parameters.get("accessor").map(Self.percentDecoded) ?? ""
        guard !accessor.isEmpty, accessor.utf8.count <= 128 else {
            throw APIError.badParameter(
                ValidationError(field: "accessor", message: "accessor must be a token's accessor id"))
        }
        return accessor
    }

    private func policyParameter(_ context: AgentRequestContext) throws -> String {
        let name = context.parameters.get("name").map(Self.percentDecoded) ?? ""
        do {
            try ACLPolicy.validateName(name, field: "name")
        } catch {
            throw APIError.badParameter(error)
        }
        return name
    }
}

import NIOHTTP1
import SwitchboardCore

/// ACL management: the calls behind `switchboard acl`.
extension AgentClient {
    /// `PUT /v1/acl/bootstrap`: the first management token, with its secret (shown this once).
    public func bootstrapACLs() async throws(SwitchboardClientError) -> ACLToken {
        try await call(AgentRequest(.PUT, APIPath.aclBootstrap)).value
    }

    public func aclTokens() async throws(SwitchboardClientError) -> [ACLToken] {
        try await call(AgentRequest<ACLTokenList>(.GET, APIPath.aclTokens)).value.tokens
    }

    /// The token this client presents.
    public func aclTokenSelf() async throws(SwitchboardClientError) -> ACLToken {
        try await call(AgentRequest(.GET, APIPath.aclTokenSelf)).value
    }

    /// A new token, with its secret (shown this once).
    public func createACLToken(_ request: ACLTokenRequest) async throws(SwitchboardClientError) -> ACLToken {
        try await call(AgentRequest(.POST, APIPath.aclTokens, body: request)).value
    }

    public func updateACLToken(
        accessorID: String, _ request: ACLTokenRequest
    ) async throws(SwitchboardClientError) -> ACLToken {
        try await call(AgentRequest(.PUT, APIPath.aclToken(accessorID: accessorID), body: request)).value
    }

    /// Deletes a token; returns it as it was.
    public func deleteACLToken(accessorID: String) async throws(SwitchboardClientError) -> ACLToken {
        try await call(AgentRequest(.DELETE, APIPath.aclToken(accessorID: accessorID))).value
    }

    public func aclPolicies() async throws(SwitchboardClientError) -> [ACLPolicy] {
        try await call(AgentRequest<ACLPolicyList>(.GET, APIPath.aclPolicies)).value.policies
    }

    public func createACLPolicy(_ policy: ACLPolicy) async throws(SwitchboardClientError) -> ACLPolicy {
        try await call(AgentRequest(.POST, APIPath.aclPolicies, body: policy)).value
    }

    public func updateACLPolicy(_ policy: ACLPolicy) async throws(SwitchboardClientError) -> ACLPolicy {
        try await call(AgentRequest(.PUT, APIPath.aclPolicy(name: policy.name), body: policy)).value
    }

    /// Deletes a policy no token holds; returns it as it was.
    public func deleteACLPolicy(named name: String) async throws(SwitchboardClientError) -> ACLPolicy {
        try await call(AgentRequest(.DELETE, APIPath.aclPolicy(name: name))).value
    }

    /// `GET /v1/events` with the ACL changes after `aclSince` (for a token that may read the ACLs).
    public func events(
        since: UInt64, aclSince: UInt64, limit: Int? = nil
    ) async throws(SwitchboardClientError) -> EventPage {
        var query = APIQuery()
        query.add("since", String(since))
        query.add("aclSince", String(aclSince))
        if let limit { query.add("limit", String(limit)) }
        return try await call(AgentRequest(.GET, APIPath.target(APIPath.events, query))).value
    }
}

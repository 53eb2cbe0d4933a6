import Foundation
import Hummingbird
import SwitchboardCatalog
import SwitchboardCore

/// How the Consul layer finds things: nodes (one per agent), instances by Consul's service id, checks by Consul's
/// check id, and the blocking reads.
extension AgentHTTPAPI {
    /// Consul's datacenter: Switchboard has one per catalog.
    static let consulDatacenter = "dc1"
    /// The Consul version the layer reports (what clients that gate features on it see): the API it follows.
    static let consulVersion = "1.17.0"

    /// This agent as a Consul node: in cluster mode its agent id and advertised host, else the machine's name.
    var consulLocalNode: ConsulViews.Node {
        if let cluster {
            let own = cluster.membership.members.first { $0.id == cluster.membership.agentID }
            return Self.consulNode(name: cluster.membership.agentID, address: own.map { Self.host(of: $0.address) })
        }
        return Self.consulNode(name: Self.localNodeName, address: localAddress)
    }

    /// Every agent as a node: the live members in cluster mode, else this agent.
    func consulNodes() -> [ConsulViews.Node] {
        guard let cluster else { return [consulLocalNode] }
        return cluster.membership.members.map { Self.consulNode(name: $0.id, address: Self.host(of: $0.address)) }
    }

    /// A single agent's node name: the machine's name, as a DNS label (what `<name>.node.<domain>` asks for).
    static let localNodeName: String = {
        let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? ""
        let label = String(host.lowercased().map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "-" }.prefix(63))
        return label.isEmpty ? "switchboard" : label
    }()

    /// The node an instance is on: the agent that runs its checks.
    func consulNode(of instance: Instance) -> ConsulViews.Node {
        guard let cluster,
            let owner = cluster.membership.owner(of: InstanceKey(service: instance.service, id: instance.id))
        else { return consulLocalNode }
        return Self.consulNode(name: owner.id, address: Self.host(of: owner.address))
    }

    static func consulNode(name: String, address: String?) -> ConsulViews.Node {
        ConsulViews.Node(
            id: consulNodeID(name), name: name, address: address ?? "127.0.0.1", datacenter: consulDatacenter)
    }

    /// A node id in Consul's UUID form, the same for a name on every agent and across restarts.
    static func consulNodeID(_ name: String) -> String {
        func fnv(_ seed: UInt64) -> UInt64 {
            var hash = seed
            for byte in name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
            return hash
        }
        let hex = String(format: "%016llx%016llx", fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4))
        let characters = Array(hex)
        return [0..<8, 8..<12, 12..<16, 16..<20, 20..<32].map { String(characters[$0]) }.joined(separator: "-")
    }

    /// The host of a `host:port` (or `[v6]:port`) address.
    static func host(of address: String) -> String {
        if address.hasPrefix("["), let end = address.firstIndex(of: "]") {
            return String(address[address.index(after: address.startIndex)..<end])
        }
        guard let colon = address.lastIndex(of: ":") else { return address }
        return String(address[..<colon])
    }

    /// The service named in the path, as the Consul layer registers it (lower-cased); nil when no service can have
    /// that name, which Consul answers like any unknown service: with nothing.
    func consulServiceName(_ context: AgentRequestContext) -> ServiceName? {
        let raw = context.parameters.get("service").map(Self.percentDecoded) ?? ""
        return try? ServiceName(raw.lowercased())
    }

    /// The instance with Consul service id `{id}` (Consul's ids are unique on an agent; Switchboard's within a
    /// service, so the first in service order wins when two services share one).
    func consulInstance(serviceID context: AgentRequestContext) throws -> Instance {
        let id = context.parameters.get("id").map(Self.percentDecoded) ?? ""
        guard let instance = consulInstance(id: id) else { throw ConsulError.unknownService(id) }
        return instance
    }

    func consulInstance(id: String) -> Instance? {
        catalog.allInstances().instances
            .filter { $0.id.rawValue == id }
            .min { $0.service.rawValue < $1.service.rawValue }
    }

    /// The instance and check position a Consul check id names.
    func consulCheck(_ checkID: String) -> (Instance, Int)? {
        guard let parsed = ConsulViews.parseCheckID(checkID) else { return nil }
        // `service:a:2` is the second check of `a`, unless an instance is called `a:2` (its only check).
        if let position = parsed.position, let instance = consulInstance(id: parsed.instance),
            instance.checks.count > 1, position < instance.checks.count
        {
            return (instance, position)
        }
        let whole = String(checkID.dropFirst("service:".count))
        if let instance = consulInstance(id: whole), instance.checks.count == 1 { return (instance, 0) }
        return nil
    }

    /// `service`'s instances matching `query`, after a blocking wait on the service's index; the index to answer
    /// with (the catalog's for an unknown service, as Consul does).
    func consulInstances(
        of service: ServiceName?, matching query: InstanceQuery, request: Request
    ) async throws -> (index: UInt64, instances: [Instance]) {
        let catalog = self.catalog
        guard let service else {
            try await holdUntilChanged(try blockingQuery(request), service: nil) { catalog.index }
            return (catalog.index, [])
        }
        try await holdUntilChanged(try blockingQuery(request), service: service) { catalog.serviceIndex(service) }
        let lookup = catalog.instances(of: service, matching: query)
        return (lookup.index > 0 ? lookup.index : catalog.index, lookup.instances)
    }

    /// The instances on this agent's node.
    func consulLocalInstances() -> (index: UInt64, instances: [Instance]) {
        let (index, instances) = catalog.allInstances()
        guard let membership = cluster?.membership else { return (index, instances) }
        return (index, instances.filter { membership.isLocal(InstanceKey(service: $0.service, id: $0.id)) })
    }
}

/// A JSON value for the few Consul answers whose shape is a loose map (`/v1/agent/self`).
enum ConsulJSONValue: Encodable {
    case string(String)
    case number(Int)
    case bool(Bool)
    case object([String: ConsulJSONValue])

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }
}

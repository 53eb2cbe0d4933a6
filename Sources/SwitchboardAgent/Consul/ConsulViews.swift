import Foundation
import SwitchboardCore

/// The catalog as Consul's clients read it: Consul's JSON shapes and field names, built from the same instances
/// the native API serves.
///
/// Each agent is a Consul node. An instance belongs to the node of the agent that runs its checks (in cluster mode
/// the one rendezvous hashing picks; otherwise this agent). Health is Switchboard's: a Consul check per native
/// check, with Consul's generated ids (`service:<id>`, or `service:<id>:<n>` for the n-th of several), and a
/// drained instance carries Consul's maintenance check (`_service_maintenance:<id>`, critical, the reason as notes).
enum ConsulViews {
    struct Node: Encodable {
        var id: String
        var name: String
        var address: String
        var datacenter: String

        enum CodingKeys: String, CodingKey {
            case id = "ID", name = "Node", address = "Address", datacenter = "Datacenter"
            case taggedAddresses = "TaggedAddresses", meta = "Meta", createIndex = "CreateIndex"
            case modifyIndex = "ModifyIndex"
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(name, forKey: .name)
            try c.encode(address, forKey: .address)
            try c.encode(datacenter, forKey: .datacenter)
            try c.encode(["lan": address, "wan": address], forKey: .taggedAddresses)
            try c.encode([String: String](), forKey: .meta)
            try c.encode(1, forKey: .createIndex)
            try c.encode(1, forKey: .modifyIndex)
        }
    }

    struct Weights: Encodable {
        var passing: Int
        var warning: Int

        enum CodingKeys: String, CodingKey {
            case passing = "Passing", warning = "Warning"
        }
    }

    /// `/v1/agent/services` and a health entry's `Service`.
    struct AgentService: Encodable {
        var instance: Instance
        var datacenter: String?

        enum CodingKeys: String, CodingKey {
            case kind = "Kind", id = "ID", service = "Service", tags = "Tags", meta = "Meta", port = "Port"
            case address = "Address", weights = "Weights", enableTagOverride = "EnableTagOverride"
            case datacenter = "Datacenter", createIndex = "CreateIndex", modifyIndex = "ModifyIndex"
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            let definition = instance.definition
            try c.encode("", forKey: .kind)
            try c.encode(definition.id.rawValue, forKey: .id)
            try c.encode(definition.service.rawValue, forKey: .service)
            try c.encode(definition.tags, forKey: .tags)
            try c.encode(definition.meta, forKey: .meta)
            try c.encode(definition.port, forKey: .port)
            try c.encode(definition.address.rawValue, forKey: .address)
            try c.encode(Weights(passing: definition.weight, warning: 1), forKey: .weights)
            try c.encode(false, forKey: .enableTagOverride)
            if let datacenter {
                try c.encode(datacenter, forKey: .datacenter)
            } else {
                try c.encode(instance.createIndex, forKey: .createIndex)
                try c.encode(instance.modifyIndex, forKey: .modifyIndex)
            }
        }
    }

    /// One of Consul's health checks.
    struct HealthCheck: Encodable {
        var node: String
        var checkID: String
        var name: String
        var status: String
        var notes: String
        var output: String
        var serviceID: String
        var serviceName: String
        var serviceTags: [String]
        var type: String
        var interval: String
        var timeout: String
        var createIndex: UInt64
        var modifyIndex: UInt64

        enum CodingKeys: String, CodingKey {
            case node = "Node", checkID = "CheckID", name = "Name", status = "Status", notes = "Notes"
            case output = "Output", serviceID = "ServiceID", serviceName = "ServiceName"
            case serviceTags = "ServiceTags", type = "Type", interval = "Interval", timeout = "Timeout"
            case createIndex = "CreateIndex", modifyIndex = "ModifyIndex"
        }
    }

    /// A `/v1/health/service/:service` entry.
    struct ServiceEntry: Encodable {
        var node: Node
        var service: AgentService
        var checks: [HealthCheck]

        enum CodingKeys: String, CodingKey {
            case node = "Node", service = "Service", checks = "Checks"
        }
    }

    /// A `/v1/catalog/service/:service` entry: node and service flattened, Consul's `Service...` names.
    struct CatalogService: Encodable {
        var node: Node
        var instance: Instance

        enum CodingKeys: String, CodingKey {
            case id = "ID", node = "Node", address = "Address", datacenter = "Datacenter"
            case taggedAddresses = "TaggedAddresses", nodeMeta = "NodeMeta", serviceKind = "ServiceKind"
            case serviceID = "ServiceID", serviceName = "ServiceName", serviceTags = "ServiceTags"
            case serviceAddress = "ServiceAddress", serviceWeights = "ServiceWeights", serviceMeta = "ServiceMeta"
            case servicePort = "ServicePort", serviceEnableTagOverride = "ServiceEnableTagOverride"
            case createIndex = "CreateIndex", modifyIndex = "ModifyIndex"
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            let definition = instance.definition
            try c.encode(node.id, forKey: .id)
            try c.encode(node.name, forKey: .node)
            try c.encode(node.address, forKey: .address)
            try c.encode(node.datacenter, forKey: .datacenter)
            try c.encode(["lan": node.address, "wan": node.address], forKey: .taggedAddresses)
            try c.encode([String: String](), forKey: .nodeMeta)
            try c.encode("", forKey: .serviceKind)
            try c.encode(definition.id.rawValue, forKey: .serviceID)
            try c.encode(definition.service.rawValue, forKey: .serviceName)
            try c.encode(definition.tags, forKey: .serviceTags)
            try c.encode(definition.address.rawValue, forKey: .serviceAddress)
            try c.encode(Weights(passing: definition.weight, warning: 1), forKey: .serviceWeights)
            try c.encode(definition.meta, forKey: .serviceMeta)
            try c.encode(definition.port, forKey: .servicePort)
            try c.encode(false, forKey: .serviceEnableTagOverride)
            try c.encode(instance.createIndex, forKey: .createIndex)
            try c.encode(instance.modifyIndex, forKey: .modifyIndex)
        }
    }

    // MARK: Checks

    /// Consul's id of the check at `position` of an instance with `count` checks.
    static func checkID(instance id: InstanceID, position: Int, count: Int) -> String {
        count == 1 ? "service:\(id.rawValue)" : "service:\(id.rawValue):\(position + 1)"
    }

    /// The check a Consul check id names: an instance with that id (under `service:`), and which of its checks.
    /// Nil when the id is not one Consul's layer makes.
    static func parseCheckID(_ checkID: String) -> (instance: String, position: Int?)? {
        guard checkID.hasPrefix("service:") else { return nil }
        let rest = String(checkID.dropFirst("service:".count))
        guard !rest.isEmpty else { return nil }
        if let colon = rest.lastIndex(of: ":"), let number = Int(rest[rest.index(after: colon)...]), number >= 1 {
            return (String(rest[..<colon]), number - 1)
        }
        return (rest, nil)
    }

    /// An instance's health as Consul's checks: one per native check, and the maintenance check while drained.
    static func checks(of instance: Instance, node: String) -> [HealthCheck] {
        let definition = instance.definition
        var checks = instance.checks.enumerated().map { position, state in
            HealthCheck(
                node: node,
                checkID: checkID(instance: definition.id, position: position, count: instance.checks.count),
                name: state.definition.name ?? "Service '\(definition.service.rawValue)' check",
                status: consulStatus(state.status),
                notes: "",
                output: state.output,
                serviceID: definition.id.rawValue,
                serviceName: definition.service.rawValue,
                serviceTags: definition.tags,
                type: state.definition.type.rawValue,
                interval: state.definition.interval.map { "\($0)" } ?? "",
                timeout: state.definition.timeout.map { "\($0)" } ?? "",
                createIndex: instance.createIndex,
                modifyIndex: instance.modifyIndex)
        }
        if let maintenance = instance.maintenance {
            checks.append(
                HealthCheck(
                    node: node, checkID: "_service_maintenance:\(definition.id.rawValue)",
                    name: "Service Maintenance Mode", status: "critical", notes: maintenance.reason,
                    output: "", serviceID: definition.id.rawValue, serviceName: definition.service.rawValue,
                    serviceTags: definition.tags, type: "maintenance", interval: "", timeout: "",
                    createIndex: instance.modifyIndex, modifyIndex: instance.modifyIndex))
        }
        return checks
    }

    /// The node's own check, which Consul lists with every entry of the node (its serf health).
    static func nodeCheck(node: String) -> HealthCheck {
        HealthCheck(
            node: node, checkID: "serfHealth", name: "Serf Health Status", status: "passing", notes: "",
            output: "Agent alive and reachable", serviceID: "", serviceName: "", serviceTags: [], type: "",
            interval: "", timeout: "", createIndex: 1, modifyIndex: 1)
    }

    static func consulStatus(_ status: HealthStatus) -> String {
        switch status {
        case .passing: "passing"
        case .warning: "warning"
        case .critical, .maintenance: "critical"
        }
    }
}

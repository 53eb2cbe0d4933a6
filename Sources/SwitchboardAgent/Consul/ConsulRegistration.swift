import SwitchboardCore

/// A Consul service registration (`PUT /v1/agent/service/register`) as Switchboard's own registration.
///
/// Consul's fields map onto the native ones: `Name` is the service (lower-cased: Switchboard's names are DNS labels,
/// and DNS ignores case), `ID` the instance id (the name when absent, as in Consul), `Weights.Passing` the weight,
/// and each of `Check` and `Checks` a check (HTTP, TCP or TTL, with Consul's `Interval`, `Timeout`,
/// `DeregisterCriticalServiceAfter`, `SuccessBeforePassing`, `FailuresBeforeCritical` and `Status`). Then the native
/// validation applies, so a Consul registration meets exactly the rules of a native one.
struct ConsulRegistration {
    var service: ServiceName
    var definition: InstanceDefinition

    /// `body` read as Consul reads it; `defaultAddress` stands in for a missing `Address` (Consul's node address).
    init(_ body: ConsulBody, defaultAddress: String) throws(ConsulError) {
        guard let name = try body.string("Name"), !name.isEmpty else { throw .badRequest("Missing service name") }
        let service: ServiceName
        do {
            service = try ServiceName(name.lowercased(), field: "Name")
        } catch {
            throw .badRequest("Invalid service name \"\(name)\": \(error.message)")
        }
        let idText = try body.string("ID").flatMap { $0.isEmpty ? nil : $0 } ?? name
        let id: InstanceID
        do {
            id = try InstanceID(idText, field: "ID")
        } catch {
            throw .badRequest("Invalid service ID \"\(idText)\": \(error.message)")
        }
        for unsupported in ["Kind", "Proxy", "Connect", "SocketPath"] where body.has(unsupported) {
            throw .badRequest("\(unsupported) is not supported: Switchboard has no service mesh (Connect) of Consul's")
        }
        var request = RegistrationRequest(
            address: try body.string("Address").flatMap { $0.isEmpty ? nil : $0 } ?? defaultAddress,
            port: try body.integer("Port"),
            tags: try body.strings("Tags"),
            meta: try body.stringMap("Meta"),
            weight: try body.object("Weights")?.integer("Passing"),
            checks: nil)
        var checks: [ConsulBody] = []
        if let check = try body.object("Check") { checks.append(check) }
        checks += try body.objects("Checks") ?? []
        if !checks.isEmpty { request.checks = try checks.map(Self.check) }
        do {
            definition = try request.validated(service: service, id: id)
        } catch {
            throw .badRequest("Invalid registration: \(Self.consulField(error.field)): \(error.message)")
        }
        self.service = service
    }

    /// One Consul check definition as a native check.
    static func check(_ body: ConsulBody) throws(ConsulError) -> CheckRequest {
        for unsupported in [
            "Args", "ScriptArgs", "Script", "DockerContainerID", "GRPC", "H2PING", "AliasService", "OSService", "UDP",
        ]
        where body.has(unsupported) {
            throw .badRequest(
                "\(body.path): \(unsupported) checks are not supported; use an HTTP, TCP or TTL check")
        }
        var check: CheckRequest
        if let url = try body.string("HTTP") {
            check = CheckRequest(type: "http")
            check.url = url
            check.method = try body.string("Method")
            // Consul sends each header's values as a list; an HTTP request joins repeated values with a comma.
            check.headers = try body.stringListMap("Header")?.mapValues { $0.joined(separator: ", ") }
        } else if let target = try body.string("TCP") {
            check = CheckRequest(type: "tcp")
            check.target = target
        } else if let ttl = try body.string("TTL") {
            check = CheckRequest(type: "ttl")
            check.ttl = ttl
        } else {
            throw .badRequest("\(body.path): a check needs one of HTTP, TCP or TTL")
        }
        check.name = try body.string("Name")
        if check.type != "ttl" {
            check.interval = try body.string("Interval")
            check.timeout = try body.string("Timeout")
        }
        check.deregisterAfterCritical = try body.string("DeregisterCriticalServiceAfter")
        // Consul counts 0 as "the first result decides", which is Switchboard's 1.
        check.successesBeforePassing = try body.integer("SuccessBeforePassing").map { max(1, $0) }
        check.failuresBeforeCritical = try body.integer("FailuresBeforeCritical").map { max(1, $0) }
        check.initialStatus = try body.string("Status")
        return check
    }

    /// A native field path in the names a Consul user sent (`checks[0].ttl` is the first check's `TTL`).
    static func consulField(_ field: String) -> String {
        let names = [
            "address": "Address", "port": "Port", "tags": "Tags", "meta": "Meta", "weight": "Weights.Passing",
            "checks": "Checks", "ttl": "TTL", "url": "HTTP", "target": "TCP", "interval": "Interval",
            "timeout": "Timeout", "deregisterAfterCritical": "DeregisterCriticalServiceAfter",
            "successesBeforePassing": "SuccessBeforePassing", "failuresBeforeCritical": "FailuresBeforeCritical",
            "initialStatus": "Status", "method": "Method", "headers": "Header", "name": "Name",
        ]
        return field.split(separator: ".").map { part in
            let name = part.prefix { $0 != "[" }
            return (names[String(name)] ?? String(name)) + part.dropFirst(name.count)
        }.joined(separator: ".")
    }
}

import Foundation
import SwitchboardCatalog
import SwitchboardCore
import Synchronization

/// How a Eureka instance and a Switchboard instance meet.
///
/// - The app name (`MY-APP`) is the service, lower-cased (`my-app`); Eureka's clients upper-case app names, so the
///   Eureka view lists every service upper-cased.
/// - `instanceId` is the instance id, `ipAddr` (or `hostName`) the address, the enabled one of `port` and
///   `securePort` the port, `metadata` the meta.
/// - The lease is a TTL check: `leaseInfo.durationInSecs` (90 s by default) without a renewal turns the instance
///   critical, and as long again removes it (Eureka evicts an expired lease). A renewal is a heartbeat of it.
/// - The status is a second TTL check, apart from the lease (a `DOWN` instance that renews is alive and stays
///   registered): `UP` is passing, `DOWN` and `STARTING` critical, `OUT_OF_SERVICE` Switchboard's maintenance. Each
///   renewal reports the client's status to it, unless an override (`PUT .../status`) holds one. Back: passing and
///   warning are `UP`, critical `DOWN`, maintenance `OUT_OF_SERVICE`.
/// - What Eureka's view needs and Switchboard has no field for (host name, VIP addresses, status page URLs, the
///   app name as sent) is kept in meta under `eureka.`; the Eureka view takes those keys out of `metadata`.
enum EurekaMapping {
    static let metaPrefix = "eureka."

    /// The native registration for `info`, registered under the app `appName` of the URL.
    static func definition(
        of info: EurekaWire.InstanceInfo, appName: String, overriddenStatus: String? = nil
    ) throws(EurekaError) -> InstanceDefinition {
        let service: ServiceName
        do {
            service = try ServiceName(appName.lowercased(), field: "app")
        } catch {
            throw .badRequest("app name '\(appName)' cannot be a service name: \(error.message)")
        }
        if let named = info.app, named.lowercased() != appName.lowercased() {
            throw .badRequest("the instance's app '\(named)' does not match the URL's '\(appName)'")
        }
        guard let idText = info.instanceId, !idText.isEmpty else {
            throw .badRequest("instanceId is required")
        }
        let id: InstanceID
        do {
            id = try InstanceID(idText, field: "instanceId")
        } catch {
            throw .badRequest("instanceId '\(idText)' is not usable: \(error.message)")
        }
        let port: Int
        if let secure = info.securePort, secure.enabled, info.port?.enabled != true {
            port = secure.port
        } else {
            port = info.port?.port ?? 0
        }
        let lease = info.leaseInfo ?? EurekaWire.LeaseInfo()
        var meta = info.metadata ?? [:]
        meta = meta.filter { !$0.key.hasPrefix(metaPrefix) }
        let kept: [(String, String?)] = [
            ("app", info.app ?? appName), ("hostName", info.hostName), ("vipAddress", info.vipAddress),
            ("secureVipAddress", info.secureVipAddress), ("homePageUrl", info.homePageUrl),
            ("statusPageUrl", info.statusPageUrl), ("healthCheckUrl", info.healthCheckUrl),
            ("renewalIntervalInSecs", String(lease.renewalIntervalInSecs)),
            ("securePort", info.securePort.map { "\($0.port):\($0.enabled)" }),
        ]
        for case (let key, let value?) in kept where !value.isEmpty { meta[metaPrefix + key] = value }
        var leaseCheck = CheckRequest(type: "ttl")
        let duration = max(1, lease.durationInSecs)
        leaseCheck.name = "Eureka lease"
        leaseCheck.ttl = "\(duration)s"
        leaseCheck.deregisterAfterCritical = "\(duration)s"
        leaseCheck.initialStatus = "passing"
        var statusCheck = CheckRequest(type: "ttl")
        statusCheck.name = "Eureka status"
        // Renewals report it; the lease ends the instance long before this runs out.
        statusCheck.ttl = "24h"
        let reported = overriddenStatus ?? info.status ?? "UP"
        statusCheck.initialStatus = health(ofEurekaStatus: reported) == .critical ? "critical" : "passing"
        if let overriddenStatus { meta[metaPrefix + "overriddenstatus"] = overriddenStatus }
        let request = RegistrationRequest(
            address: info.ipAddr.flatMap { $0.isEmpty ? nil : $0 } ?? info.hostName, port: port, meta: meta,
            checks: [leaseCheck, statusCheck])
        do {
            return try request.validated(service: service, id: id)
        } catch {
            throw .badRequest("\(error.field): \(error.message)")
        }
    }

    /// The native health status a Eureka status stands for.
    static func health(ofEurekaStatus status: String) -> HealthStatus? {
        switch status.uppercased() {
        case "UP": .passing
        case "DOWN", "STARTING": .critical
        case "OUT_OF_SERVICE": .maintenance
        default: nil
        }
    }

    static func eurekaStatus(_ status: HealthStatus) -> String {
        switch status {
        case .passing, .warning: "UP"
        case .critical: "DOWN"
        case .maintenance: "OUT_OF_SERVICE"
        }
    }

    /// The app name Eureka's view shows for a service: as registered through Eureka, else upper-cased.
    static func appName(of instance: Instance) -> String {
        // The application is always the instance's own service: a name kept in meta counts only as its spelling,
        // so an instance of one service can never be listed as another's (whose readers and writers differ).
        guard let kept = instance.definition.meta[metaPrefix + "app"],
            kept.lowercased() == instance.service.rawValue
        else { return instance.service.rawValue.uppercased() }
        return kept.uppercased()
    }

    /// `instance` as Eureka lists it; `action` for a delta's entry.
    static func info(of instance: Instance, action: String? = nil) -> EurekaWire.InstanceInfo {
        let definition = instance.definition
        let meta = definition.meta
        func kept(_ key: String) -> String? { meta[metaPrefix + key] }
        var info = EurekaWire.InstanceInfo()
        info.instanceId = definition.id.rawValue
        info.hostName = kept("hostName") ?? definition.address.rawValue
        info.app = appName(of: instance)
        info.ipAddr = definition.address.rawValue
        info.status = eurekaStatus(instance.status)
        info.overriddenstatus = kept("overriddenstatus") ?? "UNKNOWN"
        info.port = EurekaWire.Port(port: definition.port, enabled: true)
        let secure = kept("securePort")?.split(separator: ":")
        info.securePort = EurekaWire.Port(
            port: secure.flatMap { Int($0.first ?? "") } ?? 443, enabled: secure?.last == "true")
        info.countryId = 1
        info.dataCenterInfo = EurekaWire.DataCenterInfo()
        var lease = EurekaWire.LeaseInfo()
        lease.renewalIntervalInSecs = kept("renewalIntervalInSecs").flatMap { Int($0) } ?? 30
        lease.durationInSecs =
            definition.checks.first { $0.type == .ttl }?.ttl.map { Int($0.milliseconds / 1000) } ?? 90
        info.leaseInfo = lease
        // Eureka's XML needs element names: keys that cannot be one are left out of its view.
        info.metadata = meta.filter { !$0.key.hasPrefix(metaPrefix) && isElementName($0.key) }
        info.homePageUrl = kept("homePageUrl") ?? ""
        info.statusPageUrl = kept("statusPageUrl") ?? ""
        info.healthCheckUrl = kept("healthCheckUrl") ?? ""
        info.vipAddress = kept("vipAddress") ?? instance.service.rawValue
        info.secureVipAddress = kept("secureVipAddress") ?? instance.service.rawValue
        info.isCoordinatingDiscoveryServer = "false"
        info.lastUpdatedTimestamp = String(instance.modifyIndex)
        info.lastDirtyTimestamp = String(instance.modifyIndex)
        info.actionType = action ?? "ADDED"
        return info
    }

    static func isElementName(_ key: String) -> Bool {
        guard let first = key.unicodeScalars.first else { return false }
        return (first.properties.isAlphabetic || first == "_") && !key.lowercased().hasPrefix("xml")
    }

    /// Eureka's `apps__hashcode`: each status with its count, sorted by status (`DOWN_1_UP_2_`); what clients compare
    /// with the registry they hold after merging a delta.
    static func hashcode(of instances: [Instance]) -> String {
        var counts: [String: Int] = [:]
        for instance in instances { counts[eurekaStatus(instance.status), default: 0] += 1 }
        return counts.keys.sorted().map { "\($0)_\(counts[$0]!)_" }.joined()
    }

    /// The registry (or some of it) as Eureka's applications, apps in name order, instances in id order.
    static func applications(
        _ instances: [Instance], version: UInt64, hashcode: String, action: (Instance) -> String? = { _ in nil }
    ) -> EurekaWire.Applications {
        var byApp: [String: [Instance]] = [:]
        for instance in instances { byApp[appName(of: instance), default: []].append(instance) }
        let applications = byApp.keys.sorted().map { name in
            EurekaWire.Application(
                name: name,
                instance: byApp[name]!.sorted { $0.id.rawValue < $1.id.rawValue }.map {
                    info(of: $0, action: action($0))
                })
        }
        return EurekaWire.Applications(
            versionsDelta: String(version), appsHashcode: hashcode, application: applications)
    }
}

/// What changed lately, for `GET /eureka/apps/delta`: Eureka's "recently changed" queue, fed by the catalog.
///
/// Every applied change is kept for `retention` (Eureka's three minutes), the newest per instance: added, modified
/// or deleted, with the instance as it last was. It also knows the newest index it was told of, so a delta can be
/// matched with a catalog snapshot of the same index (the catalog tells its observers just after applying).
final class EurekaRecentChanges: Sendable {
    struct Entry: Sendable {
        var at: ContinuousClock.Instant
        var action: String
        var instance: Instance
    }

    private struct Queue {
        var entries: [InstanceKey: Entry] = [:]
        /// The newest catalog index whose changes are recorded.
        var through: UInt64 = 0
    }

    let retention: Duration
    private let queue = Mutex(Queue())
    /// When the queue is next pruned of expired entries: at most once a second, not on every change.
    private let nextPrune = Mutex(ContinuousClock.now)

    init(catalog: Catalog, retention: Duration = .seconds(180)) {
        self.retention = retention
        let start = catalog.addChangeObserver { [weak self] changes in self?.record(changes) }
        queue.withLock { $0.through = max($0.through, start) }
    }

    private func record(_ changes: [CommittedChange]) {
        let now = ContinuousClock.now
        queue.withLock { queue in
            for change in changes {
                queue.through = max(queue.through, change.event.index)
                guard change.event.kind != .observed else { continue }
                let key = InstanceKey(service: change.event.service, id: change.event.id)
                let previous = queue.entries[key]?.action
                let action: String
                switch change.event.kind {
                case .added: action = previous == "DELETED" ? "MODIFIED" : "ADDED"
                case .removed: action = "DELETED"
                default: action = previous == "ADDED" ? "ADDED" : "MODIFIED"
                }
                queue.entries[key] = Entry(at: now, action: action, instance: change.event.instance)
            }
        }
        let prune = nextPrune.withLock { next in
            guard now >= next else { return false }
            next = now + .seconds(1)
            return true
        }
        if prune { queue.withLock { $0.entries = $0.entries.filter { now - $0.value.at < retention } } }
    }

    /// The changes of the last `retention`, newest state per instance, and the index they are recorded through.
    func recent() -> (entries: [Entry], through: UInt64) {
        let now = ContinuousClock.now
        return queue.withLock { queue in
            (queue.entries.values.filter { now - $0.at < retention }, queue.through)
        }
    }
}

import Foundation
import XMLCoder

/// Eureka's wire form of an instance (`InstanceInfo`), in both of its encodings.
///
/// Eureka writes the same objects as JSON and as XML, and its JSON spells XML's attributes and text: a port is
/// `{"$": 8080, "@enabled": "true"}` in JSON and `<port enabled="true">8080</port>` in XML. One Codable type serves
/// both: its keys are chosen by the coder's `userInfo` (``EurekaWire/xmlKey``), and XMLCoder is told which keys are
/// attributes. Numbers Eureka's clients send as strings (`"lastDirtyTimestamp": "1700000000000"`) are read either way.
enum EurekaWire {
    /// Set to `true` in an XML coder's `userInfo`.
    static let xmlKey = CodingUserInfoKey(rawValue: "switchboard.eureka.xml")!

    static func isXML(_ userInfo: [CodingUserInfoKey: Any]) -> Bool { userInfo[xmlKey] as? Bool == true }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ name: String) { stringValue = name }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// `<port enabled="true">8080</port>`, `{"$": 8080, "@enabled": "true"}`.
    struct Port: Codable, Equatable, DynamicNodeEncoding, DynamicNodeDecoding {
        var port: Int
        var enabled: Bool

        init(port: Int, enabled: Bool) {
            self.port = port
            self.enabled = enabled
        }

        static func nodeEncoding(for key: any CodingKey) -> XMLEncoder.NodeEncoding {
            key.stringValue == "enabled" ? .attribute : .element
        }

        static func nodeDecoding(for key: any CodingKey) -> XMLDecoder.NodeDecoding {
            key.stringValue == "enabled" ? .attribute : .element
        }

        init(from decoder: any Decoder) throws {
            let xml = EurekaWire.isXML(decoder.userInfo)
            let c = try decoder.container(keyedBy: Key.self)
            port = try EurekaWire.integer(c, Key(xml ? "" : "$")) ?? 0
            let flag = try c.decodeIfPresent(String.self, forKey: Key(xml ? "enabled" : "@enabled"))
            enabled = flag.map { $0.lowercased() == "true" } ?? true
        }

        func encode(to encoder: any Encoder) throws {
            let xml = EurekaWire.isXML(encoder.userInfo)
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(port, forKey: Key(xml ? "" : "$"))
            try c.encode(enabled ? "true" : "false", forKey: Key(xml ? "enabled" : "@enabled"))
        }
    }

    /// `<dataCenterInfo class="...">` with its `name`.
    struct DataCenterInfo: Codable, Equatable, DynamicNodeEncoding, DynamicNodeDecoding {
        var className = "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"
        var name = "MyOwn"

        init() {}

        static func nodeEncoding(for key: any CodingKey) -> XMLEncoder.NodeEncoding {
            key.stringValue == "class" ? .attribute : .element
        }

        static func nodeDecoding(for key: any CodingKey) -> XMLDecoder.NodeDecoding {
            key.stringValue == "class" ? .attribute : .element
        }

        init(from decoder: any Decoder) throws {
            let xml = EurekaWire.isXML(decoder.userInfo)
            let c = try decoder.container(keyedBy: Key.self)
            className = try c.decodeIfPresent(String.self, forKey: Key(xml ? "class" : "@class")) ?? className
            name = try c.decodeIfPresent(String.self, forKey: Key("name")) ?? name
        }

        func encode(to encoder: any Encoder) throws {
            let xml = EurekaWire.isXML(encoder.userInfo)
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(className, forKey: Key(xml ? "class" : "@class"))
            try c.encode(name, forKey: Key("name"))
        }
    }

    /// The lease: how often the client renews and how long the registry waits for a renewal.
    struct LeaseInfo: Codable, Equatable {
        var renewalIntervalInSecs = 30
        var durationInSecs = 90
        var registrationTimestamp: Int64 = 0
        var lastRenewalTimestamp: Int64 = 0
        var evictionTimestamp: Int64 = 0
        var serviceUpTimestamp: Int64 = 0

        init() {}

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            renewalIntervalInSecs = try EurekaWire.integer(c, Key("renewalIntervalInSecs")) ?? 30
            durationInSecs = try EurekaWire.integer(c, Key("durationInSecs")) ?? 90
            registrationTimestamp = Int64(try EurekaWire.integer(c, Key("registrationTimestamp")) ?? 0)
            lastRenewalTimestamp = Int64(try EurekaWire.integer(c, Key("lastRenewalTimestamp")) ?? 0)
            evictionTimestamp = Int64(try EurekaWire.integer(c, Key("evictionTimestamp")) ?? 0)
            serviceUpTimestamp = Int64(try EurekaWire.integer(c, Key("serviceUpTimestamp")) ?? 0)
        }
    }

    /// One instance, as registered and as listed.
    struct InstanceInfo: Codable, Equatable {
        var instanceId: String?
        var hostName: String?
        var app: String?
        var ipAddr: String?
        var status: String?
        var overriddenstatus: String?
        var port: Port?
        var securePort: Port?
        var countryId: Int?
        var dataCenterInfo: DataCenterInfo?
        var leaseInfo: LeaseInfo?
        var metadata: [String: String]?
        var homePageUrl: String?
        var statusPageUrl: String?
        var healthCheckUrl: String?
        var secureHealthCheckUrl: String?
        var vipAddress: String?
        var secureVipAddress: String?
        var isCoordinatingDiscoveryServer: String?
        var lastUpdatedTimestamp: String?
        var lastDirtyTimestamp: String?
        var actionType: String?

        init() {}

        private static let order = [
            "instanceId", "hostName", "app", "ipAddr", "status", "overriddenstatus", "port", "securePort", "countryId",
            "dataCenterInfo", "leaseInfo", "metadata", "homePageUrl", "statusPageUrl", "healthCheckUrl",
            "secureHealthCheckUrl", "vipAddress", "secureVipAddress", "isCoordinatingDiscoveryServer",
            "lastUpdatedTimestamp", "lastDirtyTimestamp", "actionType",
        ]

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: Key.self)
            func text(_ name: String) throws -> String? { try EurekaWire.text(c, Key(name)) }
            instanceId = try text("instanceId")
            hostName = try text("hostName")
            app = try text("app")
            ipAddr = try text("ipAddr")
            status = try text("status")
            overriddenstatus = try text("overriddenstatus") ?? text("overriddenStatus")
            port = try c.decodeIfPresent(Port.self, forKey: Key("port"))
            securePort = try c.decodeIfPresent(Port.self, forKey: Key("securePort"))
            countryId = try EurekaWire.integer(c, Key("countryId"))
            dataCenterInfo = try c.decodeIfPresent(DataCenterInfo.self, forKey: Key("dataCenterInfo"))
            leaseInfo = try c.decodeIfPresent(LeaseInfo.self, forKey: Key("leaseInfo"))
            // An empty metadata element (`<metadata class="java.util.Collections$EmptyMap"/>`) is no metadata.
            metadata = (try? c.decodeIfPresent([String: String].self, forKey: Key("metadata")))?.filter {
                $0.key != "class" && $0.key != "@class"
            }
            homePageUrl = try text("homePageUrl")
            statusPageUrl = try text("statusPageUrl")
            healthCheckUrl = try text("healthCheckUrl")
            secureHealthCheckUrl = try text("secureHealthCheckUrl")
            vipAddress = try text("vipAddress")
            secureVipAddress = try text("secureVipAddress")
            isCoordinatingDiscoveryServer = try text("isCoordinatingDiscoveryServer")
            lastUpdatedTimestamp = try text("lastUpdatedTimestamp")
            lastDirtyTimestamp = try text("lastDirtyTimestamp")
            actionType = try text("actionType")
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encodeIfPresent(instanceId, forKey: Key("instanceId"))
            try c.encodeIfPresent(hostName, forKey: Key("hostName"))
            try c.encodeIfPresent(app, forKey: Key("app"))
            try c.encodeIfPresent(ipAddr, forKey: Key("ipAddr"))
            try c.encodeIfPresent(status, forKey: Key("status"))
            try c.encodeIfPresent(overriddenstatus, forKey: Key("overriddenstatus"))
            try c.encodeIfPresent(port, forKey: Key("port"))
            try c.encodeIfPresent(securePort, forKey: Key("securePort"))
            try c.encodeIfPresent(countryId, forKey: Key("countryId"))
            try c.encodeIfPresent(dataCenterInfo, forKey: Key("dataCenterInfo"))
            try c.encodeIfPresent(leaseInfo, forKey: Key("leaseInfo"))
            try c.encodeIfPresent(metadata, forKey: Key("metadata"))
            try c.encodeIfPresent(homePageUrl, forKey: Key("homePageUrl"))
            try c.encodeIfPresent(statusPageUrl, forKey: Key("statusPageUrl"))
            try c.encodeIfPresent(healthCheckUrl, forKey: Key("healthCheckUrl"))
            try c.encodeIfPresent(secureHealthCheckUrl, forKey: Key("secureHealthCheckUrl"))
            try c.encodeIfPresent(vipAddress, forKey: Key("vipAddress"))
            try c.encodeIfPresent(secureVipAddress, forKey: Key("secureVipAddress"))
            try c.encodeIfPresent(isCoordinatingDiscoveryServer, forKey: Key("isCoordinatingDiscoveryServer"))
            try c.encodeIfPresent(lastUpdatedTimestamp, forKey: Key("lastUpdatedTimestamp"))
            try c.encodeIfPresent(lastDirtyTimestamp, forKey: Key("lastDirtyTimestamp"))
            try c.encodeIfPresent(actionType, forKey: Key("actionType"))
        }
    }

    /// `{"instance": {...}}` or `<instance>...</instance>`: a registration's body.
    struct InstanceEnvelope: Codable {
        var instance: InstanceInfo
    }

    struct Application: Encodable {
        var name: String
        var instance: [InstanceInfo]
    }

    /// The registry, or a delta of it.
    struct Applications: Encodable {
        var versionsDelta: String
        var appsHashcode: String
        var application: [Application]

        enum CodingKeys: String, CodingKey {
            case versionsDelta = "versions__delta", appsHashcode = "apps__hashcode", application
        }
    }

    // MARK: Lenient values

    /// A number written as a number or as a string of digits.
    static func integer(_ c: KeyedDecodingContainer<Key>, _ key: Key) throws -> Int? {
        if let number = try? c.decodeIfPresent(Int.self, forKey: key) { return number }
        guard let text = try? c.decodeIfPresent(String.self, forKey: key) else { return nil }
        guard let number = Int(text.trimmingCharacters(in: .whitespaces)) else {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: c, debugDescription: "\(key.stringValue) must be a whole number, not '\(text)'")
        }
        return number
    }

    /// A string, or a number or flag as its text.
    static func text(_ c: KeyedDecodingContainer<Key>, _ key: Key) throws -> String? {
        if let text = try? c.decodeIfPresent(String.self, forKey: key) { return text }
        if let number = try? c.decodeIfPresent(Int64.self, forKey: key) { return String(number) }
        if let flag = try? c.decodeIfPresent(Bool.self, forKey: key) { return flag ? "true" : "false" }
        return nil
    }
}

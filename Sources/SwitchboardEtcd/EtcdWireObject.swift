import Foundation

/// A JSON object for etcd's gateway, written straight to bytes as it is built.
///
/// etcd's requests are small, flat and fully known here: keys and values are base64, numbers are strings, the rest
/// are names and flags. Building them as `[String: Any]` for `JSONSerialization` (which bridges through
/// `NSDictionary`) cost about a sixth of an agent's CPU under a registration load (bench/cluster.sh).
struct EtcdWireObject {
    private(set) var bytes: [UInt8]
    private var isEmpty = true

    init() {
        bytes = [UInt8(ascii: "{")]
        bytes.reserveCapacity(128)
    }

    /// The finished object.
    var json: [UInt8] {
        var json = bytes
        json.append(UInt8(ascii: "}"))
        return json
    }

    private func append(to target: inout [UInt8]) {
        target += bytes
        target.append(UInt8(ascii: "}"))
    }

    /// Bytes, as base64 (what the gateway takes for every key and value).
    mutating func base64(_ name: StaticString, _ value: [UInt8]) {
        key(name)
        bytes.append(UInt8(ascii: "\""))
        bytes += Data(value).base64EncodedData()
        bytes.append(UInt8(ascii: "\""))
    }

    /// A 64-bit integer, as the gateway wants it: a JSON string (lease ids exceed what a JSON number holds exactly).
    mutating func int64(_ name: StaticString, _ value: Int64) {
        key(name)
        bytes.append(UInt8(ascii: "\""))
        bytes += Array(String(value).utf8)
        bytes.append(UInt8(ascii: "\""))
    }

    mutating func string(_ name: StaticString, _ value: String) {
        key(name)
        Self.appendQuoted(value, to: &bytes)
    }

    mutating func bool(_ name: StaticString, _ value: Bool) {
        key(name)
        bytes += value ? Array("true".utf8) : Array("false".utf8)
    }

    mutating func object(_ name: StaticString, _ value: EtcdWireObject) {
        key(name)
        value.append(to: &bytes)
    }

    mutating func array(_ name: StaticString, _ values: [EtcdWireObject]) {
        key(name)
        bytes.append(UInt8(ascii: "["))
        for (position, value) in values.enumerated() {
            if position > 0 { bytes.append(UInt8(ascii: ",")) }
            value.append(to: &bytes)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    private mutating func key(_ name: StaticString) {
        if !isEmpty { bytes.append(UInt8(ascii: ",")) }
        isEmpty = false
        bytes.append(UInt8(ascii: "\""))
        name.withUTF8Buffer { bytes.append(contentsOf: $0) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    /// `value` as a JSON string: quote, backslash and control characters escaped.
    static func appendQuoted(_ value: String, to bytes: inout [UInt8]) {
        let hex = Array("0123456789abcdef".utf8)
        bytes.append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"):
                bytes.append(UInt8(ascii: "\\"))
                bytes.append(byte)
            case 0..<0x20:
                bytes += Array("\\u00".utf8)
                bytes.append(hex[Int(byte >> 4)])
                bytes.append(hex[Int(byte & 0xF)])
            default:
                bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

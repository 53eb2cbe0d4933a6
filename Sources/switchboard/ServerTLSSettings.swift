import ArgumentParser
import Foundation
import SwitchboardTLS

/// The TLS settings of a server command (the agent's, the gateway's): certificate, key and client CA, each with its
/// flag and its variable under the command's prefix, and how they make a ``TLSSettings``.
struct ServerTLSSettings {
    let certificate: Setting
    let key: Setting
    let clientCA: Setting

    init(environmentPrefix prefix: String, server: String) {
        certificate = Setting(
            "tls-cert", environment: prefix + "TLS_CERT", valueName: "file",
            "Serve \(server) over TLS with this PEM certificate (chain), with --tls-key; re-read when it changes.")
        key = Setting(
            "tls-key", environment: prefix + "TLS_KEY", valueName: "file", "The PEM private key of --tls-cert.")
        clientCA = Setting(
            "tls-client-ca", environment: prefix + "TLS_CLIENT_CA", valueName: "file",
            "Require client certificates signed by this PEM CA (mutual TLS), with --tls-cert.")
    }

    /// The TLS settings given, nil for none; the files must be readable, and the certificate and key go together.
    func settings(from reader: SettingsReader) throws -> TLSSettings? {
        let readable = "a readable file"
        let file = { (text: String) -> String? in FileManager.default.isReadableFile(atPath: text) ? text : nil }
        let certificateFile = try reader.value(certificate, rule: readable, file)
        let keyFile = try reader.value(key, rule: readable, file)
        let clientCAFile = try reader.value(clientCA, rule: readable, file)
        switch (certificateFile, keyFile) {
        case (let certificateFile?, let keyFile?):
            return TLSSettings(certificateFile: certificateFile, keyFile: keyFile, clientCAFile: clientCAFile)
        case (nil, nil):
            guard clientCAFile == nil else {
                throw ValidationError("\(clientCA.flag) needs \(certificate.flag) and \(key.flag)")
            }
            return nil
        default:
            throw ValidationError("\(certificate.flag) and \(key.flag) go together")
        }
    }
}

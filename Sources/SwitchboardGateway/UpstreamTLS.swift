import NIOSSL
import SwitchboardCore

/// TLS from the gateway to instances that serve it: those registered with the tag `tls` or the meta
/// `scheme: https`. Their certificates are verified (chain and name or IP address) against the gateway's
/// ``GatewayConfiguration/upstreamCAFile``, or the system's trust roots without one.
enum UpstreamTLS {
    /// Whether `instance` is reached over TLS.
    static func wanted(by instance: Instance) -> Bool {
        instance.definition.meta["scheme"] == "https" || instance.definition.tags.contains("tls")
    }

    /// The client context for connections to instances; a CA file that cannot be read stops the gateway at start,
    /// naming the file.
    static func context(caFile: String?) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .fullVerification
        if let caFile {
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            } catch {
                throw UpstreamTLSError(description: "the upstream CA file \(caFile) cannot be read as PEM: \(error)")
            }
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw UpstreamTLSError(description: "no TLS client context for instances: \(error)")
        }
    }
}

/// The gateway's TLS to instances could not be set up: which file, and what was wrong.
public struct UpstreamTLSError: Error, CustomStringConvertible {
    public var description: String
}

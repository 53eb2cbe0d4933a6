import Foundation
import Logging
import NIOSSL
import ServiceLifecycle
import Synchronization

/// TLS for a server's listener (the agent's, the gateway's): a certificate and key (PEM files), and optionally a CA
/// whose client certificates are required (mutual TLS).
public struct TLSSettings: Sendable, Hashable {
    public var certificateFile: String
    public var keyFile: String
    /// When set, a client must present a certificate signed by this CA (PEM).
    public var clientCAFile: String?
    /// How often the files are checked for a change (a rotated certificate).
    public var reloadInterval: Duration
    /// The protocols offered by ALPN, preferred first (the gateway's `h2`, `http/1.1`); empty: none offered.
    public var applicationProtocols: [String] = []

    public init(
        certificateFile: String, keyFile: String, clientCAFile: String? = nil, reloadInterval: Duration = .seconds(2)
    ) {
        self.certificateFile = certificateFile
        self.keyFile = keyFile
        self.clientCAFile = clientCAFile
        self.reloadInterval = reloadInterval
    }
}

/// Why TLS could not be set up: which file, and what was wrong with it.
public struct TLSSetupError: Error, CustomStringConvertible {
    public var description: String
}

/// The TLS context new connections get, replaced when the certificate, key or CA files change.
///
/// Connections already open keep the context they were made with (an open watch stream stays open across a
/// rotation); each new connection takes the current one. A rotation that does not load (a key that does not match,
/// a file half-written) is logged and the previous context stays.
public final class ReloadingTLSContext: Sendable {
    public let settings: TLSSettings
    private let current: Mutex<(context: NIOSSLContext, stamp: [Date?])>

    /// Loads the files now; throws a ``TLSSetupError`` naming the file when they do not make a context.
    public init(settings: TLSSettings) throws {
        self.settings = settings
        current = Mutex((try Self.context(settings), Self.stamp(settings)))
    }

    /// The context a connection arriving now gets.
    public var context: NIOSSLContext { current.withLock { $0.context } }

    /// Loads the files again when one of them changed since the last load; returns whether it did.
    @discardableResult
    public func reloadIfChanged(logger: Logger) -> Bool {
        let stamp = Self.stamp(settings)
        guard current.withLock({ $0.stamp != stamp }) else { return false }
        do {
            let context = try Self.context(settings)
            current.withLock { $0 = (context, stamp) }
            logger.info("TLS certificate reloaded", metadata: ["certificate": "\(settings.certificateFile)"])
            return true
        } catch {
            logger.error("TLS certificate not reloaded; the previous one stays", metadata: ["error": "\(error)"])
            return false
        }
    }

    private static func stamp(_ settings: TLSSettings) -> [Date?] {
        [settings.certificateFile, settings.keyFile, settings.clientCAFile].map { path in
            path.flatMap { try? FileManager.default.attributesOfItem(atPath: $0)[.modificationDate] as? Date }
        }
    }

    private static func context(_ settings: TLSSettings) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        do {
            chain = try NIOSSLCertificate.fromPEMFile(settings.certificateFile)
        } catch {
            throw TLSSetupError(
                description: "the certificate \(settings.certificateFile) is not a PEM certificate: \(error)")
        }
        let key: NIOSSLPrivateKey
        do {
            key = try NIOSSLPrivateKey(file: settings.keyFile, format: .pem)
        } catch {
            throw TLSSetupError(description: "the key \(settings.keyFile) is not a PEM private key: \(error)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.applicationProtocols = settings.applicationProtocols
        if let caFile = settings.clientCAFile {
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            } catch {
                throw TLSSetupError(description: "the client CA \(caFile) is not a PEM certificate: \(error)")
            }
            configuration.certificateVerification = .noHostnameVerification
        }
        do {
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError(
                description:
                    "\(settings.certificateFile) and \(settings.keyFile) do not make a TLS context (a key that does not match the certificate?): \(error)"
            )
        }
    }
}

/// Checks the TLS files every ``TLSSettings/reloadInterval`` and loads them again when they change.
public struct TLSReloader: Service {
    let tls: ReloadingTLSContext
    let logger: Logger

    public init(tls: ReloadingTLSContext, logger: Logger) {
        self.tls = tls
        self.logger = logger
    }

    public func run() async throws {
        while !Task.isShuttingDownGracefully {
            do {
                try await cancelWhenGracefulShutdown { try await Task.sleep(for: tls.settings.reloadInterval) }
            } catch {
                return
            }
            tls.reloadIfChanged(logger: logger)
        }
    }
}

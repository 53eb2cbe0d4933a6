import Foundation
import Logging

/// Reads the route file again every so often and puts a changed, valid one in force; requests in flight keep
/// the routes they were given, and no connection is dropped. A broken file is logged and the routes in force stay.
struct RouteFileWatcher {
    /// A file as read: its text and the routes made of it.
    struct Loaded {
        var text: String
        var table: RouteTable
    }

    let path: String
    let interval: Duration
    private var current: String

    init(path: String, loaded: Loaded, interval: Duration) {
        self.path = path
        self.interval = interval
        self.current = loaded.text
    }

    static func load(_ path: String) async throws -> Loaded {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw GatewayConfigurationError(field: "", message: "cannot read the route file \(path): \(error)")
        }
        do {
            return Loaded(text: text, table: try await RouteFile.parse(text, source: path))
        } catch {
            throw GatewayConfigurationError(field: "", message: "\(path): \(error)")
        }
    }

    /// Until cancelled.
    mutating func run(installingIn router: GatewayRouter, logger: Logger) async {
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            guard let text = try? String(contentsOfFile: path, encoding: .utf8), text != current else { continue }
            current = text
            do {
                let table = try await RouteFile.parse(text, source: path)
                if let previous = router.routes { table.keepState(of: previous) }
                router.install(table)
                logger.info("routes reloaded", metadata: ["file": "\(path)", "routes": "\(table.routes.count)"])
            } catch {
                logger.error(
                    "the changed route file is refused; the routes in force stay",
                    metadata: ["file": "\(path)", "error": "\(error)"])
            }
        }
    }
}

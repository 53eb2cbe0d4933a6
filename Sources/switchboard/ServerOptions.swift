import ArgumentParser
import Foundation
import Logging
import ProcessSupport
import ServiceLifecycle
import SwitchboardCore
import UnixSignals

/// The logging options of the commands that run a server (`agent`, `gateway`).
struct LoggingOptions: ParsableArguments {
    @Option(
        name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical. (default: info)")
    var logLevel: String?

    @Option(name: .customLong("log-format"), help: "text or json. (default: text)")
    var logFormat: String?

    /// The level and format, from the flags or `SWITCHBOARD_LOG_LEVEL` / `SWITCHBOARD_LOG_FORMAT`.
    func resolved() throws -> (Logger.Level, LogFormat) {
        let levelText = logLevel ?? Environment.value("SWITCHBOARD_LOG_LEVEL") ?? "info"
        guard let level = Logger.Level(rawValue: levelText.lowercased()) else {
            throw ValidationError(
                "--log-level must be trace, debug, info, notice, warning, error or critical, got '\(levelText)'")
        }
        let formatText = logFormat ?? Environment.value("SWITCHBOARD_LOG_FORMAT") ?? "text"
        guard let format = LogFormat(rawValue: formatText.lowercased()) else {
            throw ValidationError("--log-format must be text or json, got '\(formatText)'")
        }
        return (level, format)
    }

    /// Sends every log line to standard error in the chosen format, from the chosen level up.
    func bootstrap() throws {
        let (level, format) = try resolved()
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler =
                format == .json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

enum LogFormat: String {
    case text
    case json
}

/// Runs `services` until SIGTERM or SIGINT, then shuts them down gracefully; a failure is printed as one line
/// (`switchboard <command>: ...`) and the process exits 1.
func runUntilSignalled(_ services: [any Service], logger: Logger, command: String) async throws {
    var configuration = ServiceGroupConfiguration(
        services: services, gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
    // A consumer that stopped reading holds its stream's write forever: past this, shutdown cancels it.
    configuration.maximumGracefulShutdownDuration = .seconds(10)
    do {
        try await ServiceGroup(configuration: configuration).run()
    } catch {
        StandardStream.error.write("switchboard \(command): \(error)\n")
        throw ExitCode.failure
    }
}

import ArgumentParser
import Foundation
import Logging
import ProcessSupport
import ServiceLifecycle
import SwitchboardCore
import UnixSignals

/// The logging options of the commands that run a server (`agent`, `gateway`), and the configuration file.
struct LoggingOptions: ParsableArguments {
    @Option(name: CommonSettings.logLevel.argumentName, help: CommonSettings.logLevel.help)
    var logLevel: String?

    @Option(name: CommonSettings.logFormat.argumentName, help: CommonSettings.logFormat.help)
    var logFormat: String?

    @Option(name: Setting.configFile.argumentName, help: Setting.configFile.help)
    var configFile: String?

    /// The settings given on the command line.
    var commandLine: [Setting: String] {
        var given: [Setting: String] = [:]
        given[CommonSettings.logLevel] = logLevel
        given[CommonSettings.logFormat] = logFormat
        given[Setting.configFile] = configFile
        return given
    }

    /// The level and format.
    static func resolved(_ settings: SettingsReader) throws -> (Logger.Level, LogFormat) {
        let level = try settings.required(
            CommonSettings.logLevel, rule: "trace, debug, info, notice, warning, error or critical"
        ) { Logger.Level(rawValue: $0.lowercased()) }
        let format = try settings.required(CommonSettings.logFormat, rule: "text or json") {
            LogFormat(rawValue: $0.lowercased())
        }
        return (level, format)
    }

    /// Sends every log line to standard error in the chosen format, from the chosen level up.
    static func bootstrap(level: Logger.Level, format: LogFormat) {
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

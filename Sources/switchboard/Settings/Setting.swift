import ArgumentParser
import Configuration
import Foundation
import ProcessSupport
import SystemPackage
import Yams

/// One setting of a command: its flag, its `SWITCHBOARD_*` environment variable, its key in a `--config-file`, its
/// default and its help, each written once, here.
///
/// A command declares its flags with ``help`` and ``name`` (so the help text is generated from the setting) and
/// reads the values through a ``SettingsReader``, which looks in order at the command line, the environment, the
/// configuration file and finally the default.
struct Setting: Sendable, Hashable {
    /// The long flag without its dashes; also the setting's key in a configuration file.
    let name: String
    /// The environment variable.
    let environment: String
    /// The default, as a user would write it; nil when the setting has none (it is then off, or absent).
    let defaultValue: String?
    /// What the setting does, in a sentence.
    let abstract: String
    /// The placeholder shown in the help (`host:port`).
    let valueName: String?
    /// A secret (an ACL token): swift-configuration redacts it wherever it would print it.
    let isSecret: Bool

    init(
        _ name: String, environment: String? = nil, default defaultValue: String? = nil, valueName: String? = nil,
        secret: Bool = false, _ abstract: String
    ) {
        self.isSecret = secret
        self.name = name
        self.environment = environment ?? "SWITCHBOARD_" + name.uppercased().replacingOccurrences(of: "-", with: "_")
        self.defaultValue = defaultValue
        self.abstract = abstract
        self.valueName = valueName
    }

    /// `--name`.
    var flag: String { "--" + name }

    /// The flag's name for ArgumentParser.
    var argumentName: NameSpecification { .customLong(name) }

    /// The help line: what it does, its default and its variable.
    var help: ArgumentHelp {
        let origin = "(default: \(defaultValue ?? "none"); env: \(environment))"
        return ArgumentHelp("\(abstract) \(origin)", valueName: valueName)
    }

    /// The setting that names the configuration file itself (read from the command line or the environment).
    static let configFile = Setting(
        "config-file", valueName: "file",
        "A YAML file of settings, keyed by flag name (flag: value); flags and variables win over it.")
}

/// The values a command was given for its settings, from (in this order) the command line, the environment, a YAML
/// configuration file and the settings' defaults, read through swift-configuration.
///
/// Values are read as text and parsed by the command, so that every mistake is reported the same way, naming the
/// flag and the rule, wherever the value came from.
struct SettingsReader: Sendable {
    private let reader: ConfigReader
    let settings: [Setting]

    /// A reader of `settings`; `commandLine` holds the flags given, by setting (list settings separated by commas).
    init(
        _ settings: [Setting], commandLine: [Setting: String], environment: [String: String]? = nil
    ) async throws {
        self.settings = settings
        // An empty variable counts as unset, as a shell user expects of `SWITCHBOARD_DEV= switchboard agent`.
        let environment = (environment ?? ProcessInfo.processInfo.environment).filter { !$0.value.isEmpty }
        var flags: [AbsoluteConfigKey: ConfigValue] = [:]
        for (setting, value) in commandLine {
            flags[AbsoluteConfigKey([setting.name])] = ConfigValue(.string(value), isSecret: setting.isSecret)
        }
        // Each setting's variable is named explicitly: the key `listen` of the gateway is SWITCHBOARD_GATEWAY_LISTEN.
        let variables = Dictionary(settings.map { ($0.name, $0.environment) }, uniquingKeysWith: { first, _ in first })
        var providers: [any ConfigProvider] = [
            InMemoryProvider(name: "command line", values: flags),
            EnvironmentVariablesProvider(
                environmentVariables: environment,
                secretsSpecifier: .specific(Set(settings.filter(\.isSecret).map(\.environment)))
            ).mapKeys { key in
                AbsoluteConfigKey([variables[key.components.joined(separator: ".")] ?? "SWITCHBOARD_UNKNOWN"])
            },
        ]
        let file =
            commandLine[Setting.configFile]
            ?? environment[Setting.configFile.environment].flatMap {
                $0.isEmpty ? nil : $0
            }
        if let file {
            try Self.checkKeys(ofFile: file, against: settings)
            providers.append(try await FileProvider<YAMLSnapshot>(filePath: FilePath(file)))
        }
        reader = ConfigReader(providers: providers)
    }

    /// Refuses a configuration file that cannot be read or names a setting the command does not have (a typo would
    /// otherwise be ignored in silence).
    private static func checkKeys(ofFile path: String, against settings: [Setting]) throws {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ValidationError("--config-file \(path) cannot be read: \(error.localizedDescription)")
        }
        let document: Any?
        do {
            document = try Yams.load(yaml: text)
        } catch {
            throw ValidationError("--config-file \(path) is not valid YAML: \(error)")
        }
        guard let document else { return }
        guard let mapping = document as? [String: Any] else {
            throw ValidationError(
                "--config-file \(path) must be a YAML mapping of settings, such as http-addr: 127.0.0.1:7500")
        }
        let known = Set(settings.map(\.name))
        if let unknown = mapping.keys.sorted().first(where: { !known.contains($0) }) {
            throw ValidationError(
                "--config-file \(path) has an unknown setting '\(unknown)'; this command takes "
                    + known.sorted().joined(separator: ", "))
        }
    }

    /// The text given for `setting`, or its default (nil when neither).
    func text(_ setting: Setting) -> String? {
        reader.string(forKey: ConfigKey([setting.name])) ?? reader.stringArray(forKey: ConfigKey([setting.name]))?
            .joined(separator: ",") ?? setting.defaultValue
    }

    /// `setting`'s value parsed by `parse`; `rule` says what it must be when it cannot be parsed.
    func value<Value>(_ setting: Setting, rule: String, _ parse: (String) -> Value?) throws -> Value? {
        guard let text = text(setting) else { return nil }
        guard let value = parse(text) else { throw ValidationError("\(setting.flag) must be \(rule), got '\(text)'") }
        return value
    }

    /// `setting`'s value, for a setting that has a default.
    func required<Value>(_ setting: Setting, rule: String, _ parse: (String) -> Value?) throws -> Value {
        guard let value = try value(setting, rule: rule, parse) else {
            throw ValidationError("\(setting.flag) is required (or \(setting.environment))")
        }
        return value
    }

    /// A switch: on when given as a flag, or set to 1, true, yes or on.
    func isOn(_ setting: Setting) throws -> Bool {
        try value(setting, rule: "true or false") { text in
            switch text.lowercased() {
            case "1", "true", "yes", "on": true
            case "0", "false", "no", "off", "": false
            default: nil
            }
        } ?? false
    }

    /// A list setting: repeated flags, or one value with commas (the variable), or a YAML list.
    func list(_ setting: Setting) -> [String] {
        (text(setting) ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
            !$0.isEmpty
        }
    }

    /// An event-loop thread count (1 to 256), when set.
    func threadCount(_ setting: Setting) throws -> Int? {
        try value(setting, rule: "a whole number from 1 to 256") {
            Int($0).flatMap { (1...256).contains($0) ? $0 : nil }
        }
    }
}

/// The settings every long-running command shares: the configuration file and logging.
enum CommonSettings {
    static let logLevel = Setting(
        "log-level", default: "info", valueName: "level",
        "trace, debug, info, notice, warning, error or critical.")
    static let logFormat = Setting("log-format", default: "text", valueName: "format", "text or json.")
}

extension ParsableCommand {
    /// Reads a command's settings, reporting a bad one the way ArgumentParser reports a bad flag: the message, the
    /// command's usage, exit status 64 (whether the value came from a flag, a variable or the file).
    static func settled<Value>(_ read: () async throws -> Value) async throws -> Value {
        do {
            return try await read()
        } catch let error as ValidationError {
            let usage = SwitchboardCommand.usageString(for: Self.self)
            let name = configuration.commandName ?? "\(Self.self)"
            StandardStream.error.write(
                "Error: \(error.message)\nUsage: \(usage)\n  See 'switchboard \(name) --help' for more information.\n")
            Foundation.exit(ExitCode.validationFailure.rawValue)
        }
    }
}

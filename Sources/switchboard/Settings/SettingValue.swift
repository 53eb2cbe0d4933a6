import SwitchboardCore

/// Parsers of setting values shared by the commands, for ``SettingsReader/value(_:rule:_:)`` and
/// ``SettingsReader/required(_:rule:_:)``.
enum SettingValue {
    /// A duration such as `500ms`, `2s` or `5m` (zero allowed).
    static func duration(_ text: String) -> Duration? {
        (try? HumanDuration(parsing: text, field: "")).map(\.duration)
    }

    /// A duration longer than zero.
    static func positiveDuration(_ text: String) -> Duration? {
        duration(text).flatMap { $0 > .zero ? $0 : nil }
    }
}

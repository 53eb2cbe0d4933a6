import Foundation

/// The one percent-encoding every Switchboard part uses for a path segment or query value of the HTTP API.
package enum PercentEncoding {
    private static let allowed: CharacterSet = {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~:")
        return allowed
    }()

    /// `text` with every byte outside letters, digits and `-._~:` percent-encoded.
    package static func component(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }
}

import Foundation

/// Debian's `promtool` (package `prometheus`), which lints Prometheus text expositions and checks rule files.
public enum Promtool {
    public static let path = "/usr/bin/promtool"

    /// Runs promtool with `arguments` in `directory`; throws when it is not installed (CI installs it).
    public static func run(
        _ arguments: [String], in directory: String? = nil
    ) async throws -> (status: Int32, output: String) {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestFailure("promtool is not installed: `apt-get install prometheus` (.ci/run installs it)")
        }
        let script = (directory == nil ? "" : "cd \"$1\" && ") + "exec \"$0\" \"${@:2}\""
        let result = try await runProgram("/bin/bash", ["-c", script, path, directory ?? "."] + arguments)
        return (result.status, result.stdout + result.stderr)
    }

    /// `promtool check metrics` on `exposition` (it reads standard input, so through a file): the status and
    /// what it found.
    public static func checkMetrics(_ exposition: String) async throws -> (status: Int32, output: String) {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("metrics-\(UUID().uuidString).txt")
        try exposition.write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw TestFailure("promtool is not installed: `apt-get install prometheus` (.ci/run installs it)")
        }
        let result = try await runProgram("/bin/bash", ["-c", "exec \"$0\" check metrics < \"$1\"", path, file.path])
        return (result.status, result.stdout + result.stderr)
    }
}

/// The samples of a Prometheus text exposition: each series' name, labels and value.
public struct PrometheusSamples: Sendable {
    /// One sample line.
    public struct Sample: Sendable {
        public var name: String
        public var labels: [String: String]
        public var value: Double
    }

    public let samples: [Sample]

    /// Reads every sample line of `text` (comments skipped); label values may hold any character but a quote.
    public init(parsing text: String) {
        var samples: [Sample] = []
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            var name = ""
            var labels: [String: String] = [:]
            var rest = Substring(line)
            if let brace = line.firstIndex(of: "{") {
                name = String(line[..<brace])
                rest = line[line.index(after: brace)...]
                // `key="value"` pairs up to the closing brace outside quotes.
                while let equals = rest.firstIndex(of: "=") {
                    let key = rest[..<equals].trimmingCharacters(in: CharacterSet(charactersIn: ", "))
                    let open = rest.index(equals, offsetBy: 2)
                    guard let close = rest[open...].firstIndex(of: "\"") else { break }
                    labels[key] = String(rest[open..<close])
                    rest = rest[rest.index(after: close)...]
                    if rest.hasPrefix("}") { break }
                }
                rest = rest.drop { $0 != "}" }.dropFirst()
            } else {
                let parts = line.split(separator: " ", maxSplits: 1)
                name = String(parts[0])
                rest = parts.count > 1 ? parts[1] : ""
            }
            guard let value = Double(rest.trimmingCharacters(in: .whitespaces).split(separator: " ").first ?? "")
            else { continue }
            samples.append(Sample(name: name, labels: labels, value: value))
        }
        self.samples = samples
    }

    /// The samples of series `name` whose labels include `labels`.
    public func named(_ name: String, _ labels: [String: String] = [:]) -> [Sample] {
        samples.filter { sample in
            sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value }
        }
    }

    /// The sum of the samples of series `name` whose labels include `labels` (nil when there is none).
    public func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        let matching = named(name, labels)
        return matching.isEmpty ? nil : matching.map(\.value).reduce(0, +)
    }
}

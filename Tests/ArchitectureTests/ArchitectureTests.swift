import Foundation
import Testing

/// The arrows between modules that ARCHITECTURE.md says must never exist, checked against the manifest and against
/// what the compiler actually loaded, and the rule that the API's paths are built in one place.
@Suite("The architecture's rules")
struct ArchitectureTests {
    /// The package's root folder (this file is `Tests/ArchitectureTests/ArchitectureTests.swift`).
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// A module, and what must never be in its dependency closure: targets of this package, and packages.
    struct Rule: Sendable, CustomStringConvertible {
        var module: String
        var forbiddenTargets: Set<String>
        var forbiddenPackages: Set<String>
        var description: String { module }
    }

    static let rules: [Rule] = [
        // Embedded in users' services: none of the server's parts.
        Rule(
            module: "SwitchboardClient",
            forbiddenTargets: [
                "SwitchboardCatalog", "SwitchboardAgent", "SwitchboardDNS", "SwitchboardGateway", "SwitchboardEtcd",
                "Demo",
            ],
            forbiddenPackages: ["hummingbird", "grdb.swift", "swift-otel"]),
        // The contract every part shares: Foundation only.
        Rule(
            module: "SwitchboardCore",
            forbiddenTargets: [
                "SwitchboardCatalog", "SwitchboardAgent", "SwitchboardClient", "SwitchboardDNS",
                "SwitchboardGateway", "Demo", "ProcessSupport",
            ],
            forbiddenPackages: ["hummingbird", "grdb.swift", "swift-nio", "async-http-client", "swift-otel"]),
        // The catalog is a state machine and a store contract: no servers, no clients, no SQLite.
        Rule(
            module: "SwitchboardCatalog",
            forbiddenTargets: [
                "SwitchboardAgent", "SwitchboardClient", "SwitchboardDNS", "SwitchboardGateway", "Demo",
            ],
            forbiddenPackages: ["hummingbird", "grdb.swift", "swift-nio", "async-http-client", "swift-otel"]),
        // An etcd client: it knows etcd's API, not the catalog's.
        Rule(
            module: "SwitchboardEtcd",
            forbiddenTargets: [
                "SwitchboardCatalog", "SwitchboardAgent", "SwitchboardDNS", "SwitchboardGateway", "Demo",
            ],
            forbiddenPackages: ["hummingbird", "grdb.swift", "swift-otel"]),
        Rule(
            module: "SwitchboardGateway",
            forbiddenTargets: ["SwitchboardCatalog", "SwitchboardAgent", "Demo"],
            forbiddenPackages: ["hummingbird", "grdb.swift", "swift-otel"]),
        Rule(
            module: "SwitchboardDNS",
            forbiddenTargets: ["SwitchboardAgent", "SwitchboardClient", "SwitchboardGateway", "Demo"],
            forbiddenPackages: ["hummingbird", "grdb.swift", "swift-otel"]),
        // The sidecar is a client of the agents, as the gateway is (whose proxy engine it may use).
        Rule(
            module: "SwitchboardSidecar",
            forbiddenTargets: ["SwitchboardCatalog", "SwitchboardAgent", "SwitchboardDNS", "SwitchboardEtcd", "Demo"],
            forbiddenPackages: ["hummingbird", "grdb.swift", "swift-otel"]),
        // Only the executable exports spans (swift-otel); the modules trace through swift-distributed-tracing's API.
        Rule(module: "Demo", forbiddenTargets: [], forbiddenPackages: ["swift-otel"]),
        Rule(
            module: "SwitchboardAgent",
            forbiddenTargets: ["SwitchboardGateway", "Demo"],
            forbiddenPackages: ["swift-otel"]),
    ]

    /// The manifest's JSON, read once for every rule.
    static let manifestJSON = Task { try dumpPackage() }

    /// The root package's manifest, parsed.
    static func manifest() async throws -> [String: Any] {
        let data = try await manifestJSON.value
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// The root package's manifest as `swift package dump-package` gives it (with a scratch folder of its own, so it
    /// never waits for the build that runs these tests).
    static func dumpPackage() throws -> Data {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("architecture-\(UUID())")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["swift", "package", "--scratch-path", scratch.path, "dump-package"]
        process.currentDirectoryURL = root
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ManifestUnreadable(status: process.terminationStatus)
        }
        return data
    }

    struct ManifestUnreadable: Error {
        var status: Int32
    }

    /// Every target of this package `module` depends on, directly or not, and every package product it uses.
    static func closure(
        of module: String, in manifest: [String: Any]
    ) throws -> (targets: Set<String>, packages: Set<String>) {
        let targets = try #require(manifest["targets"] as? [[String: Any]])
        var dependencies: [String: [[String: Any]]] = [:]
        for target in targets {
            dependencies[target["name"] as? String ?? ""] = target["dependencies"] as? [[String: Any]] ?? []
        }
        var seen: Set<String> = []
        var packages: Set<String> = []
        var pending = [module]
        while let next = pending.popLast() {
            for dependency in dependencies[next] ?? [] {
                if let product = dependency["product"] as? [Any], let package = product[1] as? String {
                    packages.insert(package.lowercased())
                } else if let name = ((dependency["byName"] ?? dependency["target"]) as? [Any])?.first as? String,
                    dependencies[name] != nil, seen.insert(name).inserted
                {
                    pending.append(name)
                }
            }
        }
        return (seen, packages)
    }

    @Test(arguments: rules)
    func noForbiddenArrowIsDeclaredInTheManifest(_ rule: Rule) async throws {
        let (targets, packages) = try Self.closure(of: rule.module, in: try await Self.manifest())
        #expect(
            targets.isDisjoint(with: rule.forbiddenTargets),
            "\(rule.module) reaches \(targets.intersection(rule.forbiddenTargets))")
        #expect(
            packages.isDisjoint(with: rule.forbiddenPackages),
            "\(rule.module) uses \(packages.intersection(rule.forbiddenPackages))")
    }

    /// The build folder these tests were built in (the test bundle sits in it).
    static var buildFolder: URL {
        var folder = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        while !FileManager.default.fileExists(atPath: folder.appendingPathComponent("Modules").path),
            folder.path != "/"
        {
            folder.deleteLastPathComponent()
        }
        return folder
    }

    @Test func theClientLibraryWasCompiledWithoutTheServerOrItsDependencies() throws {
        // The compiler's dependency files list every module the client's sources loaded, directly or through
        // another module's interface: what the client really carries, not only what the manifest declares.
        let folder = Self.buildFolder.appendingPathComponent("SwitchboardClient.build")
        let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".d") }
        #expect(!files.isEmpty, "no dependency files in \(folder.path)")
        var loaded: Set<String> = []
        for file in files {
            let text = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8)
            for word in text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\\" })
            where word.hasSuffix(".swiftmodule") {
                loaded.insert(String(word.split(separator: "/").last!.dropLast(".swiftmodule".count)))
            }
        }
        #expect(loaded.contains("SwitchboardCore") && loaded.contains("AsyncHTTPClient"), "\(loaded.sorted())")
        let forbidden: Set = ["SwitchboardCatalog", "SwitchboardAgent", "Hummingbird", "HummingbirdCore", "GRDB"]
        #expect(loaded.isDisjoint(with: forbidden), "the client loaded \(loaded.intersection(forbidden))")
    }

    @Test func noSourceBuildsAV1PathOutsideCoresPathBuilderAndTheAgentsRoutes() throws {
        // Where the API's paths may be written: the one path builder, and the routes that serve them (the Consul
        // layer's routes are Consul's paths, declared once in their own file).
        let allowed: Set = [
            "Sources/SwitchboardCore/API/APIPath.swift", "Sources/SwitchboardAgent/HTTP/AgentHTTPAPI.swift",
            "Sources/SwitchboardAgent/Consul/ConsulRoutes.swift",
        ]
        let sources = Self.root.appendingPathComponent("Sources")
        let files = try #require(FileManager.default.enumerator(atPath: sources.path)).compactMap { $0 as? String }
            .filter { $0.hasSuffix(".swift") }
        #expect(files.count > 50)
        // A string literal holding a v1 path: a quote, then anything but a quote, then `/v1/` or `/v1"`.
        let literal = /"[^"]*\/v1[\/"]/
        var offenders: [String] = []
        for file in files {
            let path = "Sources/\(file)"
            guard !allowed.contains(path) else { continue }
            let text = try String(contentsOf: sources.appendingPathComponent(file), encoding: .utf8)
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = line.trimmingCharacters(in: .whitespaces)
                guard !code.hasPrefix("//"), code.contains(literal) else { continue }
                offenders.append("\(path):\(number + 1): \(code)")
            }
        }
        #expect(offenders.isEmpty, "v1 paths built by hand:\n\(offenders.joined(separator: "\n"))")
    }
}

import Foundation

/// A Python virtual environment holding the real clients the compatibility tests drive (py-consul today), so the
/// tests speak to the agent exactly as users' programs do.
///
/// Made on first use in the build folder (`.build/test-python`, `python3 -m venv`, then pip from PyPI) and reused
/// after; `SWITCHBOARD_TEST_PYTHON` names another interpreter that already has the packages (`.ci/run` makes one).
/// The packages, pinned, are listed once in `Tests/Fixtures/python-clients.txt`.
public enum PythonClients {
    static var requirements: String { fixture("python-clients.txt") }

    private static let setup = Setup()

    /// The interpreter of the environment, made first if needed.
    public static func python() async throws -> String {
        if let python = ProcessInfo.processInfo.environment["SWITCHBOARD_TEST_PYTHON"] { return python }
        return try await setup.python()
    }

    /// A script of `Tests/Fixtures`.
    public static func fixture(_ name: String) -> String {
        packageDirectory.appendingPathComponent("Tests/Fixtures/\(name)").path
    }

    static var packageDirectory: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }

    /// Makes the environment once per test process; concurrent tests wait for the same making.
    private actor Setup {
        private var made: Task<String, any Error>?

        func python() async throws -> String {
            if let made { return try await made.value }
            let task = Task { try await Self.make() }
            made = task
            return try await task.value
        }

        private static func make() async throws -> String {
            let directory = PythonClients.packageDirectory.appendingPathComponent(".build/test-python").path
            let python = directory + "/bin/python"
            // The requirements as last installed: a changed list installs again.
            let marker = directory + "/installed-requirements.txt"
            let wanted = try Data(contentsOf: URL(fileURLWithPath: PythonClients.requirements))
            if FileManager.default.contents(atPath: marker) == wanted { return python }
            if !FileManager.default.fileExists(atPath: python) {
                let made = try await runProgram("/usr/bin/env", ["python3", "-m", "venv", directory])
                guard made.status == 0 else {
                    throw TestFailure(
                        "python3 -m venv \(directory) failed (Debian: apt-get install python3-venv): \(made.stderr)")
                }
            }
            let installed = try await runProgram(
                python,
                ["-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", PythonClients.requirements],
                timeout: .seconds(300))
            guard installed.status == 0 else {
                throw TestFailure("pip could not install \(PythonClients.requirements): \(installed.stderr)")
            }
            _ = FileManager.default.createFile(atPath: marker, contents: wanted)
            return python
        }
    }
}

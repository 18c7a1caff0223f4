import Foundation
import NIOHTTP1
import TWCCStandIn
import Testing

/// Keeps the stand-in honest: the real twccli 0.6.1 from PyPI is driven against it (`Tests/twcc-cli/drive_twccli.py`).
///
/// The client is installed into `.build/twcc-venv` (git-ignored) on first use. When PyPI cannot be reached the test
/// fails; set `SNAPCRON_SKIP_TWCC_CLI=1` to skip it on a machine without network (never in CI).
@Suite(.serialized) struct TWCCCLIValidationTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let venv = packageRoot.appendingPathComponent(".build/twcc-venv")
    static let skip = ProcessInfo.processInfo.environment["SNAPCRON_SKIP_TWCC_CLI"] == "1"

    @Test(.disabled(if: skip, "SNAPCRON_SKIP_TWCC_CLI=1"), .timeLimit(.minutes(10)))
    func realTwccliAcceptsTheStandIn() async throws {
        try await Self.installTwccli()
        try await withStandIn { standIn in
            standIn.setListsAdvanceImages(true)
            let script = Self.packageRoot.appendingPathComponent("Tests/twcc-cli/drive_twccli.py").path
            let (status, output) = try await Self.run(
                Self.venv.appendingPathComponent("bin/python").path,
                [
                    script, "--venv", Self.venv.path, "--base-url", standIn.baseURL, "--api-key", standIn.apiKey,
                    "--project", String(standIn.projectID), "--username", standIn.username,
                ])
            // The transcript stays for people to read: .build/twcc-cli-transcript.log.
            try? output.write(
                to: Self.packageRoot.appendingPathComponent(".build/twcc-cli-transcript.log"), atomically: true,
                encoding: .utf8)
            #expect(status == 0, "twccli against the stand-in:\n\(output)")
            #expect(standIn.complaints.isEmpty, "the stand-in did not understand twccli: \(standIn.complaints)")
            // Every call of twcc-api.md section 10 step 5 was exercised.
            let seen = Set(standIn.requests.map { "\($0.method.rawValue) \(Self.shape($0.path))" })
            let expected: Set<String> = [
                "GET sites/", "GET sites/<id>/", "GET servers/", "GET servers/<id>/", "PUT images/<id>/save/",
                "GET images/", "GET images/<id>/", "DELETE images/<id>/",
            ]
            #expect(expected.subtracting(seen).isEmpty, "not exercised: \(expected.subtracting(seen).sorted())")
            let agents = Set(standIn.requests.compactMap { $0.headers.first(name: "user-agent") })
            #expect(agents == ["TWCC-CLI v0.6.1"])
        }
    }

    /// `images/900/save/` -> `images/<id>/save/`.
    static func shape(_ path: String) -> String {
        path.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0.allSatisfy(\.isNumber) && !$0.isEmpty ? "<id>" : String($0) }.joined(separator: "/")
    }

    /// Creates the venv and installs twcc-cli==0.6.1 unless that version is already there.
    static func installTwccli() async throws {
        let python = venv.appendingPathComponent("bin/python").path
        if FileManager.default.fileExists(atPath: venv.appendingPathComponent("bin/twccli").path) {
            let (status, text) = try await run(
                python, ["-c", "import importlib.metadata as m; print(m.version('twcc-cli'))"])
            if status == 0, text.trimmingCharacters(in: .whitespacesAndNewlines) == "0.6.1" { return }
        }
        let (made, madeText) = try await run("/usr/bin/env", ["python3", "-m", "venv", "--clear", venv.path])
        try #require(made == 0, "python3 -m venv failed:\n\(madeText)")
        let (installed, log) = try await run(
            python, ["-m", "pip", "install", "--disable-pip-version-check", "-q", "twcc-cli==0.6.1"])
        try #require(
            installed == 0,
            "pip install twcc-cli==0.6.1 failed (no PyPI? set SNAPCRON_SKIP_TWCC_CLI=1 to skip locally):\n\(log)")
    }

    /// Runs a program to its end and returns its exit status and its output (stdout and stderr together).
    static func run(_ program: String, _ arguments: [String]) async throws -> (Int32, String) {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("twcc-cli-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: output) }
        let handle = try FileHandle(forWritingTo: output)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
        process.standardOutput = handle
        process.standardError = handle
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
        try handle.close()
        return (status, (try? String(contentsOf: output, encoding: .utf8)) ?? "")
    }
}

import Foundation
import TestThreads
import Testing

/// What one run of the `snapcronctl` binary printed, and how it exited.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String

    /// The stdout parsed as one JSON object.
    func json() throws -> [String: Any] {
        let object = try JSONSerialization.jsonObject(with: Data(stdout.utf8))
        return try #require(object as? [String: Any], "stdout is not a JSON object: \(stdout)")
    }
}

/// Runs the built binaries: they sit in the products directory next to the test bundle (`.build/debug`).
enum Snapcronctl {
    static let binary: URL? = {
        var directories: [URL] = []
        // Linux: the test runner is `<products>/snapcronPackageTests.xctest`; macOS: a bundle loaded from there.
        if let executable = Bundle.main.executableURL { directories.append(executable.deletingLastPathComponent()) }
        directories += Bundle.allBundles.filter { $0.bundlePath.hasSuffix(".xctest") }
            .map { $0.bundleURL.deletingLastPathComponent() }
        directories.append(packageRoot.appendingPathComponent(".build/debug"))
        return directories.map { $0.appendingPathComponent("snapcronctl") }
            .first { FileManager.default.isExecutableFile(atPath: $0.path) }
    }()

    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func run(_ arguments: [String]) throws -> CommandResult {
        let binary = try #require(binary, "snapcronctl not found next to the test bundle; run `swift build` first")
        let directory = try TemporaryDirectory()
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        // Files instead of pipes: nothing can block on a full pipe buffer.
        let stdoutURL = directory.url.appendingPathComponent("stdout")
        let stderrURL = directory.url.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: stdoutURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        let stdout = try FileHandle(forWritingTo: stdoutURL)
        let stderr = try FileHandle(forWritingTo: stderrURL)
        defer {
            try? stdout.close()
            try? stderr.close()
        }
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        process.waitUntilExit()
        return CommandResult(
            status: process.terminationStatus,
            stdout: try String(contentsOf: stdoutURL, encoding: .utf8),
            stderr: try String(contentsOf: stderrURL, encoding: .utf8))
    }
}

/// A directory under the system temporary directory, removed when the value goes away.
final class TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("snapcronctl-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    /// Writes `text` to `name` in the directory and returns its path.
    func write(_ name: String, _ text: String) throws -> String {
        let path = url.appendingPathComponent(name).path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }
}

@Suite(.onOwnThreads) struct CheckCommandTests {
    let directory: TemporaryDirectory
    /// An empty config file: the embedded default, whatever is installed in /etc/snapcron.
    let config: String

    init() throws {
        directory = try TemporaryDirectory()
        config = try directory.write("snapcron.toml", "")
    }

    static let validSchedule = """
        * * * * *     demo   local:/var/tmp/snapcron-demo/disk.img   keep=5
        CRON_TZ=America/New_York
        30 2 * * *    db     local:/srv/db.img   keep-daily=14 timeout=30m
        """

    @Test func validScheduleListsJobsAndNextFires() throws {
        let schedule = try directory.write("schedule", Self.validSchedule)
        let result = try Snapcronctl.run(["check", schedule, "--config", config, "--now", "2027-03-13T12:00:00Z"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("demo\n"))
        #expect(result.stdout.contains("  next fires:  2027-03-13T12:01:00+00:00  Sat\n"))
        #expect(result.stdout.contains("               2027-03-13T12:03:00+00:00  Sat\n"))
        #expect(result.stdout.contains("  zone:        America/New_York\n"))
        #expect(result.stdout.contains("  options:     keep-daily=14 timeout=30m\n"))
        #expect(result.stdout.contains("2027-03-14T03:00:00-04:00  Sun  * DST gap: 2027-03-14 02:30 does not exist"))
        // Two gaps within 366 days: 2027-03-14 and 2028-03-12.
        #expect(result.stdout.hasSuffix("\(schedule): 2 jobs, 2 warnings\n"))
        // The DST advisory is a warning: shown, but the file is valid.
        #expect(
            result.stderr.contains(
                "\(schedule):3:1: warning: job 'db' at 02:30 America/New_York: 2027-03-14 02:30 does not exist (DST)"))
    }

    @Test func invalidScheduleExitsWithOneAndPointsAtTheColumn() throws {
        let schedule = try directory.write(
            "schedule", "@daily ok local:/a\n0 3 * * 8    web  local:/b\n@daily x aws:1\n")
        let result = try Snapcronctl.run(["check", schedule, "--config", config])
        #expect(result.status == 1)
        #expect(
            result.stderr.contains(
                """
                \(schedule):2:9: error: day-of-week: value 8 out of range 0-7
                2 | 0 3 * * 8    web  local:/b
                  |         ^
                """))
        #expect(result.stderr.contains("\(schedule):3:10: error: unknown backend 'aws' (configured: local)"))
        #expect(result.stderr.hasSuffix("\(schedule): 2 errors\n"))
        #expect(result.stdout.isEmpty)
    }

    @Test func jsonHasValidityDiagnosticsAndJobs() throws {
        let schedule = try directory.write("schedule", Self.validSchedule)
        let result = try Snapcronctl.run(
            ["check", schedule, "--config", config, "--json", "--now", "2027-03-13T12:00:00Z"])
        #expect(result.status == 0)
        let object = try result.json()
        #expect(Set(object.keys) == ["valid", "errors", "warnings", "jobs"])
        #expect(object["valid"] as? Bool == true)
        #expect((object["errors"] as? [Any])?.isEmpty == true)
        let warning = try #require((object["warnings"] as? [[String: Any]])?.first)
        #expect(warning["file"] as? String == schedule)
        #expect(warning["line"] as? Int == 3)
        #expect(warning["column"] as? Int == 1)
        #expect((warning["message"] as? String)?.hasPrefix("job 'db' at 02:30") == true)

        let jobs = try #require(object["jobs"] as? [[String: Any]])
        #expect(jobs.count == 2)
        let db = jobs[1]
        for key in ["name", "zone", "expression", "normalized", "description", "backend", "target", "options", "next"] {
            #expect(db[key] != nil, "missing \(key)")
        }
        #expect(db["name"] as? String == "db")
        #expect(db["zone"] as? String == "America/New_York")
        #expect(db["expression"] as? String == "30 2 * * *")
        #expect(db["normalized"] as? String == "30 2 * * *")
        #expect(db["backend"] as? String == "local")
        #expect(db["target"] as? String == "/srv/db.img")
        let options = try #require(db["options"] as? [String: Any])
        #expect(options["keep-daily"] as? Int == 14)
        #expect(options["timeout"] as? String == "30m")
        #expect(options["overlap"] as? String == "skip")
        #expect(
            db["next"] as? [String] == [
                "2027-03-14T03:00:00-04:00", "2027-03-15T02:30:00-04:00", "2027-03-16T02:30:00-04:00",
            ])
    }

    @Test func jsonOfAnInvalidScheduleListsErrors() throws {
        let schedule = try directory.write("schedule", "@daily web local:/a\n@daily web local:/b\n")
        let result = try Snapcronctl.run(["check", schedule, "--config", config, "--json"])
        #expect(result.status == 1)
        let object = try result.json()
        #expect(object["valid"] as? Bool == false)
        #expect((object["jobs"] as? [Any])?.isEmpty == true)
        let errors = try #require(object["errors"] as? [[String: Any]])
        #expect(errors.count == 1)
        #expect(errors.first?["line"] as? Int == 2)
        #expect(errors.first?["column"] as? Int == 8)
        #expect(errors.first?["message"] as? String == "duplicate job name 'web'")
        let note = try #require((errors.first?["notes"] as? [[String: Any]])?.first)
        #expect(note["line"] as? Int == 1)
    }

    @Test func missingConfigGivenOnTheCommandLineIsAnError() throws {
        let schedule = try directory.write("schedule", "@daily web local:/a\n")
        let result = try Snapcronctl.run(["check", schedule, "--config", "/nonexistent/snapcron.toml"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("/nonexistent/snapcron.toml: error: cannot read config: no such file"))
    }

    @Test func configBackendsAreTheTargets() throws {
        let config = try directory.write(
            "custom.toml",
            """
            [backends.zfs]
            type = "exec"
            create = ["/bin/true"]
            """)
        let schedule = try directory.write("schedule", "@daily web zfs:tank/web\n@daily db local:/a\n")
        let result = try Snapcronctl.run(["check", schedule, "--config", config])
        #expect(result.status == 1)
        #expect(result.stderr.contains("\(schedule):2:11: error: unknown backend 'local' (configured: zfs)"))
    }

    @Test func targetsAreCheckedByTheRulesOfTheirBackendLikeReloadDoes() throws {
        let schedule = try directory.write("schedule", "@daily ok local:/a\n@daily web local:/tmp/../x/disk.img\n")
        let result = try Snapcronctl.run(["check", schedule, "--config", config])
        #expect(result.status == 1)
        #expect(
            result.stderr.contains(
                """
                \(schedule):2:12: error: web: local validate failed for /tmp/../x/disk.img: \
                target must not contain '.' or '..' components (permanent)
                2 | @daily web local:/tmp/../x/disk.img
                  |            ^~~~~~~~~~~~~~~~~~~~~~~~
                """), "\(result.stderr)")
        #expect(result.stderr.hasSuffix("\(schedule): 1 error\n"))
        #expect(result.stdout.isEmpty)
    }

    /// `check` validates every backend type's settings and targets by their descriptors alone: the binary links no
    /// backend module (TWCC would bring AsyncHTTPClient and NIO), while `snapcrond` beside it links them all.
    @Test func checkLinksNoBackendModule() throws {
        let binary = try #require(Snapcronctl.binary, "snapcronctl not built")
        let daemon = binary.deletingLastPathComponent().appendingPathComponent("snapcrond")
        // Module names as they appear, length-prefixed, in mangled Swift symbols and type metadata.
        let backends = ["12LocalBackend", "11ExecBackend", "11TWCCBackend", "15AsyncHTTPClient"]
        let descriptors = ["15LocalDescriptor", "14ExecDescriptor", "14TWCCDescriptor"]
        let ctl = try Data(contentsOf: binary, options: .alwaysMapped)
        let daemonData = try Data(contentsOf: daemon, options: .alwaysMapped)
        for name in backends {
            #expect(ctl.range(of: Data(name.utf8)) == nil, "snapcronctl links \(name.drop { $0.isNumber })")
            #expect(daemonData.range(of: Data(name.utf8)) != nil, "snapcrond does not link \(name)")
        }
        for name in descriptors { #expect(ctl.range(of: Data(name.utf8)) != nil, "snapcronctl lacks \(name)") }
    }

    @Test func badNowIsAUsageError() throws {
        let schedule = try directory.write("schedule", "@daily web local:/a\n")
        let result = try Snapcronctl.run(["check", schedule, "--config", config, "--now", "yesterday"])
        #expect(result.status == 2)
        #expect(result.stderr.contains("--now: 'yesterday' is not an ISO 8601 time"))
        #expect(try Snapcronctl.run(["check", "--no-such-flag"]).status == 2)
    }

    @Test func exampleScheduleOfTheRepositoryIsValid() throws {
        let example = Snapcronctl.packageRoot.appendingPathComponent("etc/schedule").path
        let result = try Snapcronctl.run(["check", example, "--config", config, "--now", "2026-05-01T00:00:00Z"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.isEmpty)
        #expect(result.stdout.contains("demo\n"))
        #expect(result.stdout.contains("  target:      local:/var/tmp/snapcron-demo/disk.img\n"))
    }

    @Test func execQemuExampleOfTheRepositoryIsValid() throws {
        let root = Snapcronctl.packageRoot
        let result = try Snapcronctl.run([
            "check", root.appendingPathComponent("etc/schedule.exec-qemu").path,
            "--config", root.appendingPathComponent("etc/snapcron.exec-qemu.toml").path,
            "--now", "2026-05-01T00:00:00Z",
        ])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("  target:      qemu:/var/lib/libvirt/images/lab.qcow2\n"))
    }
}

@Suite(.onOwnThreads) struct NextCommandTests {
    @Test func printsNormalizedFormAndFires() throws {
        let result = try Snapcronctl.run(
            ["next", "0 3 * * mon-fri", "--zone", "UTC", "--after", "2026-05-01T00:00:00Z", "--count", "2"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("normalized:  0 3 * * 1-5\n"))
        #expect(result.stdout.contains("zone:        UTC\n"))
        #expect(result.stdout.contains("  2026-05-01T03:00:00+00:00  Fri\n  2026-05-04T03:00:00+00:00  Mon\n"))
    }

    @Test func jsonHasExpressionAndFires() throws {
        let result = try Snapcronctl.run(
            [
                "next", "30 2 * * *", "--zone", "America/New_York", "--after", "2027-03-13T12:00:00Z", "--count", "2",
                "--json",
            ])
        #expect(result.status == 0)
        let object = try result.json()
        for key in ["expression", "normalized", "description", "zone", "fires"] {
            #expect(object[key] != nil, "missing \(key)")
        }
        #expect(object["expression"] as? String == "30 2 * * *")
        #expect(object["zone"] as? String == "America/New_York")
        #expect(object["fires"] as? [String] == ["2027-03-14T03:00:00-04:00", "2027-03-15T02:30:00-04:00"])
    }

    @Test func invalidExpressionPrintsErrorObject() throws {
        let result = try Snapcronctl.run(["next", "0 3 * * 8", "--json"])
        #expect(result.status == 1)
        let error = try #require(try result.json()["error"] as? [String: Any])
        #expect(error["message"] as? String == "day-of-week: value 8 out of range 0-7")
        #expect(error["column"] as? Int == 9)
        #expect(result.stderr.contains("<expression>:1:9: error: day-of-week: value 8 out of range 0-7"))
    }

    @Test func invalidExpressionInTextExitsWithOne() throws {
        let result = try Snapcronctl.run(["next", "61 * * * *"])
        #expect(result.status == 1)
        #expect(result.stderr.contains("minute: value 61 out of range 0-59"))
        #expect(result.stderr.contains("  | ^~"))
    }
}

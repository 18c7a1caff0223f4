import ControlClient
import ControlProtocol
import Foundation
import SnapcronDaemon
import SnapcronTestKit
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `snapcronctl` against a live socket: another user, `edit` with a scripted editor, exit codes; and `snapcrond`.
@Suite(.serialized) struct CommandLineTests {
    private func withServer(_ body: (Harness, String) async throws -> Void) async throws {
        let harness = try Harness()
        try await harness.listen(mode: 0o666)
        await harness.startScheduler()
        do {
            try await body(harness, try Executables.path("snapcronctl"))
        } catch {
            await harness.stop()
            throw error
        }
        await harness.stop()
    }

    private func ctl(_ binary: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil)
        async throws -> (status: Int32, stdout: String, stderr: String)
    {
        try await blocking { try Executables.run(binary, arguments, environment: environment, input: input) }
    }

    /// A copy of the client that another user can run even when the build directory is private (as under /root).
    private func clientForNobody(in directory: String) throws -> String {
        let copy = directory + "/snapcronctl"
        try writeExecutable(try Data(contentsOf: URL(fileURLWithPath: try Executables.path("snapcronctl"))), to: copy)
        return copy
    }

    @Test(.enabled(if: getuid() == 0, "needs root to run a client as nobody"))
    func anotherUserMayReadButIsRefusedChanges() async throws {
        try await withServer { h, _ in
            let binary = try clientForNobody(in: h.directory)
            let asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups", binary]
            let status = try await ctl("/usr/bin/setpriv", asNobody + ["status", "--socket", h.socketPath])
            #expect(status.status == 0, "\(status.stderr)")
            #expect(status.stdout.contains("3 jobs"))
            for command in [["trigger", "web"], ["pause", "web"], ["prune", "web"]] {
                let refused = try await ctl("/usr/bin/setpriv", asNobody + command + ["--socket", h.socketPath])
                #expect(refused.status == 4, "\(command): \(refused.stderr)")
                #expect(refused.stderr.contains("\(command[0]) changes state: only root"), "\(refused.stderr)")
                #expect(refused.stderr.contains("nobody (uid 65534)"))
            }
            let dryRun = try await ctl(
                "/usr/bin/setpriv", asNobody + ["prune", "web", "--dry-run", "--socket", h.socketPath])
            #expect(dryRun.status == 0, "\(dryRun.stderr)")
            #expect(try h.store.runs().isEmpty)
            #expect(try h.store.jobState(name: "web")?.paused != true)
        }
    }

    @Test(.enabled(if: getuid() == 0, "needs root to run a client as nobody"))
    func theProcessOwnSupplementaryGroupsCount() async throws {
        // Group 4242 is in no user database entry: only the kernel's view of the process (SO_PEERGROUPS) has it,
        // as with a unit's SupplementaryGroups=.
        let h = try Harness(access: ControlAccess(ownUID: 0, groupID: 4242, groupName: "snapcron-ops"))
        try await h.listen(mode: 0o666)
        await h.startScheduler()
        let binary = try clientForNobody(in: h.directory)
        let member = try await ctl(
            "/usr/bin/setpriv",
            ["--reuid=65534", "--regid=65534", "--groups=4242", binary, "pause", "web", "--socket", h.socketPath])
        #expect(member.status == 0, "\(member.stderr)")
        #expect(try h.store.jobState(name: "web")?.paused == true)
        let stranger = try await ctl(
            "/usr/bin/setpriv",
            ["--reuid=65534", "--regid=65534", "--clear-groups", binary, "resume", "web", "--socket", h.socketPath])
        #expect(stranger.status == 4, "\(stranger.stderr)")
        #expect(stranger.stderr.contains("members of group 'snapcron-ops'"), "\(stranger.stderr)")
        #expect(try h.store.jobState(name: "web")?.paused == true)
        await h.stop()
    }

    @Test(.enabled(if: getuid() == 0, "needs root to run a client as nobody"))
    func aSocketTheUserMayNotOpenGetsAClearMessage() async throws {
        let h = try Harness()
        try await h.listen(mode: 0o660)
        let binary = try clientForNobody(in: h.directory)
        let result = try await ctl(
            "/usr/bin/setpriv",
            ["--reuid=65534", "--regid=65534", "--clear-groups", binary, "status", "--socket", h.socketPath])
        #expect(result.status == 4)
        #expect(result.stderr.contains("not permitted to connect to \(h.socketPath)"))
        await h.stop()
    }

    @Test func aMissingDaemonGetsAClearMessage() async throws {
        let binary = try Executables.path("snapcronctl")
        let result = try await ctl(binary, ["jobs", "--socket", "/tmp/snapcron-no-such-dir/control.sock"])
        #expect(result.status == 3)
        #expect(result.stderr.contains("snapcrond is not running"))
    }

    @Test func commandsPrintTablesJSONAndExitCodes() async throws {
        try await withServer { h, binary in
            let jobs = try await ctl(binary, ["jobs", "--socket", h.socketPath])
            #expect(jobs.status == 0)
            #expect(jobs.stdout.hasPrefix("JOB "))
            #expect(jobs.stdout.contains("web") && jobs.stdout.contains("keep=2"))
            let json = try await ctl(binary, ["jobs", "--json", "--socket", h.socketPath])
            let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
            #expect((object?["jobs"] as? [Any])?.count == 3)

            let trigger = try await ctl(binary, ["trigger", "web", "--socket", h.socketPath])
            #expect(trigger.status == 0 && trigger.stdout.contains("run 1 of web started"))
            let missing = try await ctl(binary, ["images", "nope", "--socket", h.socketPath])
            #expect(missing.status == 5 && missing.stderr.contains("no job named 'nope'"))
            let next = try await ctl(binary, ["next", "lab", "--count", "2", "--socket", h.socketPath])
            #expect(next.status == 0 && next.stdout.contains("next 2 fires"))
            let offline = try await ctl(binary, ["next", "@daily", "--count", "1"])
            #expect(offline.status == 0 && offline.stdout.contains("normalized:  0 0 * * *"))

            try "0 99 * * * web fake:vm-web\n".write(toFile: h.schedulePath, atomically: true, encoding: .utf8)
            let reload = try await ctl(binary, ["reload", "--socket", h.socketPath])
            #expect(reload.status == 1)
            #expect(reload.stderr.contains("\(h.schedulePath):1:3: error:"))
            #expect(reload.stderr.contains("the running schedule stays"))
        }
    }

    @Test func socketBeforeTheSubcommandIsPassedDownToIt() async throws {
        try await withServer { h, binary in
            let before = try await ctl(binary, ["--socket", h.socketPath, "status"])
            #expect(before.status == 0, "\(before.stderr)")
            #expect(before.stdout.contains("3 jobs"))
            let joined = try await ctl(binary, ["--socket=\(h.socketPath)", "jobs", "--json"])
            #expect(joined.status == 0, "\(joined.stderr)")
            let both = try await ctl(binary, ["--socket", h.socketPath, "jobs", "--socket", h.socketPath])
            #expect(both.status == 0, "the same value in both places is fine: \(both.stderr)")

            let other = "/tmp/snapcron-no-such-dir/c.sock"
            let conflict = try await ctl(binary, ["--socket", h.socketPath, "trigger", "web", "--socket", other])
            #expect(conflict.status == 2)
            let reason =
                "--socket given twice with different values: '\(h.socketPath)' before trigger, '\(other)' after it"
            #expect(conflict.stderr.contains(reason), "\(conflict.stderr)")
            #expect(try h.store.runs().isEmpty, "nothing was triggered")
            let offline = try await ctl(binary, ["--socket", h.socketPath, "check", h.schedulePath])
            #expect(offline.status == 2)
            #expect(offline.stderr.contains("check does not talk to the daemon"), "\(offline.stderr)")
            let missing = try await ctl(binary, ["--socket"])
            #expect(missing.status == 2)
            #expect(missing.stderr.contains("missing value for '--socket <path>'"), "\(missing.stderr)")
        }
    }

    /// Nagios reads exit 2 as CRITICAL: every bad argument is UNKNOWN (3), one line, and asks the daemon nothing.
    @Test(arguments: [
        (["--warn", "bogus"], "SNAPCRON UNKNOWN - --warn: unknown unit 'bogus' in 'bogus' (use s, m, h, d, w)\n"),
        (["--crit", "2x"], "SNAPCRON UNKNOWN - --crit: "),
        (
            ["--warn", "3h", "--crit", "2h"],
            "SNAPCRON UNKNOWN - --warn 3h is longer than --crit 2h; a job must turn WARNING first\n"
        ),
        (["--bogus"], "SNAPCRON UNKNOWN - Unknown option '--bogus'\n"),
        (["--warn"], "SNAPCRON UNKNOWN - Missing value for '--warn <warn>'\n"),
        (["extra"], "SNAPCRON UNKNOWN - Unexpected argument 'extra'\n"),
        (["--socket", "/tmp/snapcron-other.sock"], "SNAPCRON UNKNOWN - --socket given twice with different values"),
    ])
    func monitorReportsUsageErrorsAsUnknown(_ arguments: [String], _ expected: String) async throws {
        try await withServer { h, binary in
            var commandLines = [["--socket", h.socketPath, "monitor"] + arguments]
            if !arguments.contains("--socket") {
                commandLines.append(["monitor"] + arguments + ["--socket", h.socketPath])
            }
            for commandLine in commandLines {
                let result = try await ctl(binary, commandLine)
                #expect(result.status == 3, "\(commandLine): \(result.stdout)\(result.stderr)")
                #expect(result.stdout.hasPrefix(expected), "\(commandLine): \(result.stdout)")
                #expect(result.stdout.filter { $0 == "\n" }.count == 1, "one line: \(result.stdout)")
            }
        }
    }

    @Test func monitorAcceptsWarnEqualToCrit() async throws {
        try await withServer { h, binary in
            let result = try await ctl(binary, ["monitor", "--warn", "2h", "--crit", "2h", "--socket", h.socketPath])
            // No job has fired: each is WARNING whatever the thresholds.
            #expect(result.status == 1, "\(result.stdout)")
            #expect(result.stdout.hasPrefix("SNAPCRON WARNING - "))
        }
    }

    @Test func monitorReportsLikeANagiosPlugin() async throws {
        try await withServer { h, binary in
            // No job has fired: WARNING for each, exit 1.
            let fresh = try await ctl(binary, ["monitor", "--socket", h.socketPath])
            #expect(fresh.status == 1, "\(fresh.stdout)")
            #expect(fresh.stdout.hasPrefix("SNAPCRON WARNING - "))
            #expect(fresh.stdout.contains("| jobs=3 ok=0 warning=3 critical=0"))

            _ = try await h.call(.trigger, JobParams(job: "web"), as: TriggerResult.self, via: .inProcess)
            await h.advance(to: Harness.start.addingTimeInterval(2))
            await h.advance(to: Harness.start.addingTimeInterval(4))
            let ok = try await ctl(binary, ["monitor", "--job", "web", "--socket", h.socketPath])
            #expect(ok.status == 0, "\(ok.stdout)")
            #expect(ok.stdout.hasPrefix("SNAPCRON OK - 1 job fresh"))

            await h.advance(to: Harness.start.addingTimeInterval(3 * 3600))
            let stale = try await ctl(
                binary, ["monitor", "--job", "web", "--warn", "1h", "--crit", "2h", "--socket", h.socketPath])
            #expect(stale.status == 2, "\(stale.stdout)")
            // 3h or 2h59m: the image's time is when its create was recorded, which may land on either side of the
            // +2 s step of the manual clock.
            #expect(stale.stdout.hasPrefix("SNAPCRON CRITICAL - web: newest ACTIVE image "))
            #expect(stale.stdout.contains(" old (crit 2h) | jobs=1 ok=0 warning=0 critical=1"))

            let unknown = try await ctl(binary, ["monitor", "--socket", "/tmp/snapcron-no-such-dir/c.sock"])
            #expect(unknown.status == 3 && unknown.stdout.hasPrefix("SNAPCRON UNKNOWN - "))
        }
    }

    @Test func editInstallsAValidScheduleAndMakesItLive() async throws {
        try await withServer { h, binary in
            let editor = h.directory + "/editor.sh"
            try writeExecutable("#!/bin/sh\nprintf '@hourly  fresh  fake:vm-fresh  keep=3\\n' >> \"$1\"\n", to: editor)
            chmod(h.schedulePath, 0o640)
            let result = try await ctl(
                binary, ["edit", "--socket", h.socketPath], environment: ["VISUAL": "", "EDITOR": editor])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("installed \(h.schedulePath)"))
            #expect(result.stdout.contains("schedule reloaded: 4 jobs"))
            #expect(
                try String(contentsOfFile: h.schedulePath, encoding: .utf8).hasSuffix(
                    "@hourly  fresh  fake:vm-fresh  keep=3\n"))
            var info = stat()
            stat(h.schedulePath, &info)
            #expect(info.st_mode & 0o777 == 0o640)
            let jobs = try await h.call(.jobs, NoParams(), as: JobsResult.self, via: .inProcess)
            #expect(jobs.jobs.map(\.name).contains("fresh"))
        }
    }

    @Test func editRefusesABrokenScheduleAndLeavesTheInstalledOne() async throws {
        try await withServer { h, binary in
            let before = try String(contentsOfFile: h.schedulePath, encoding: .utf8)
            let editor = h.directory + "/editor.sh"
            try writeExecutable("#!/bin/sh\nprintf '0 0 * * 8  broken  fake:vm-x\\n' >> \"$1\"\n", to: editor)
            let result = try await ctl(binary, ["edit", "--socket", h.socketPath], environment: ["VISUAL": editor])
            #expect(result.status == 1)
            #expect(result.stderr.contains("\(h.schedulePath):4:9: error:"), "\(result.stderr)")
            #expect(result.stderr.contains("Edit again?"))
            #expect(result.stderr.contains("unchanged"))
            #expect(try String(contentsOfFile: h.schedulePath, encoding: .utf8) == before)
            #expect(try await h.call(.status, NoParams(), as: StatusResult.self, via: .inProcess).jobs == 3)
        }
    }

    @Test func editOffersToEditAgainAndInstallsTheFix() async throws {
        try await withServer { h, binary in
            // First pass breaks the file; the second (after "y") fixes it.
            let editor = h.directory + "/editor.sh"
            let marker = h.directory + "/second"
            try writeExecutable(
                """
                #!/bin/sh
                if [ -e \(marker) ]; then sed -i 's/ 8  late/ 1  late/' "$1"; else touch \(marker); printf '0 0 * * 8  late  fake:vm-l\\n' >> "$1"; fi

                """, to: editor)
            let result = try await ctl(
                binary, ["edit", "--socket", h.socketPath], environment: ["VISUAL": editor], input: "y\n")
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stderr.contains("error:"))
            #expect(try String(contentsOfFile: h.schedulePath, encoding: .utf8).contains("0 0 * * 1  late"))
            #expect(try await h.call(.status, NoParams(), as: StatusResult.self, via: .inProcess).jobs == 4)
        }
    }

    @Test func snapcrondServesTheSocketAndRemovesItOnSIGTERM() async throws {
        let daemon = try Executables.path("snapcrond")
        let client = try Executables.path("snapcronctl")
        var template = Array("/tmp/snapcrond-socket-XXXXXX".utf8CString)
        let directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try Data(count: 4096).write(to: URL(fileURLWithPath: directory + "/disk.img"))
        try "@daily  demo  local:\(directory)/disk.img  keep=2\n".write(
            toFile: directory + "/schedule", atomically: true, encoding: .utf8)
        let socket = directory + "/run/control.sock"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: daemon)
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.arguments = [
            "--schedule", "schedule", "--state-dir", directory + "/state", "--socket", socket,
            "--socket-mode", "600",
        ]
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }
        let deadline = Date().addingTimeInterval(20)
        while !FileManager.default.fileExists(atPath: socket), Date() < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        var info = stat()
        #expect(lstat(socket, &info) == 0 && info.st_mode & 0o777 == 0o600)
        let status = try await ctl(client, ["status", "--json", "--socket", socket])
        #expect(status.status == 0, "\(status.stderr)")
        #expect(status.stdout.contains("\"jobs\":1"))
        #expect(status.stdout.contains("\"schedule_path\":\"\(directory)/schedule\""))  // absolute, for edit
        let triggered = try await ctl(client, ["trigger", "demo", "--wait", "--interval", "0.2", "--socket", socket])
        #expect(triggered.status == 0, "\(triggered.stderr)")
        #expect(triggered.stdout.contains("> ACTIVE"))
        kill(process.processIdentifier, SIGTERM)
        try await blocking { process.waitUntilExit() }
        #expect(process.terminationStatus == 0)
        #expect(!FileManager.default.fileExists(atPath: socket))
    }
}

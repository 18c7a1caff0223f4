import BackendTypes
import CronExpression
import Foundation
import SnapcronConfig
import Testing
import TWCCDescriptor

@testable import SnapcronCore

/// A config with the built-in `local` backend plus a `twcc` one, as most schedules in these tests need.
let scheduleConfig: SnapcronConfig = {
    var config = SnapcronConfig.default()
    config.file = "/etc/snapcron/snapcron.toml"
    config.backends["twcc"] = BackendConfig(name: "twcc", type: .twcc)
    return config
}()

/// A fixed `now` for the DST advisory: 2026-05-01T00:00:00Z.
let scheduleNow = Date(timeIntervalSince1970: 1_777_593_600)

func parseSchedule(_ text: String, config: SnapcronConfig = scheduleConfig) throws(DiagnosticList) -> Schedule {
    try ScheduleFile.parse(text: text, file: "etc/schedule", config: config, now: scheduleNow, systemZone: .utc)
}

/// The header lines (`file:line:col: severity: message`) of every diagnostic of `text`, valid or not.
func scheduleDiagnostics(_ text: String, config: SnapcronConfig = scheduleConfig) -> [String] {
    let diagnostics: [Diagnostic]
    do {
        diagnostics = try parseSchedule(text, config: config).warnings
    } catch {
        diagnostics = Array(error)
    }
    return diagnostics.map { "\($0.location) \($0.severity.rawValue): \($0.message)" }
}

@Suite struct ScheduleFileTests {
    @Test func readsAGoodFile() throws {
        let schedule = try parseSchedule(
            """
            # m h dom mon dow   name          target         options
              # an indented comment, then a blank line

            KEEP=7
            0 1 * * *           web-nightly   twcc:101
            CRON_TZ=Asia/Taipei
            keep-daily=14
            H H * * *           db-daily      twcc:102       keep-weekly=8
            @weekly             lab           local:/var/lib/libvirt/images/lab.qcow2   keep=4 timeout=30m
            CRON_TZ=
            KEEP=
            @hourly\tedge\tlocal:/srv/edge.img\tpaused=yes
            """)
        #expect(schedule.warnings.isEmpty)
        #expect(schedule.jobs.map(\.name) == ["web-nightly", "db-daily", "lab", "edge"])
        #expect(schedule.jobs.map(\.zone.identifier) == ["UTC", "Asia/Taipei", "Asia/Taipei", "UTC"])

        let web = try #require(schedule.job(named: "web-nightly"))
        #expect(web.expressionText == "0 1 * * *")
        #expect(web.expression.normalized == "0 1 * * *")
        #expect(web.backend == "twcc")
        #expect(web.target == "101")
        #expect(web.qualifiedTarget == "twcc:101")
        #expect(web.options.retention == RetentionPolicy(keepLast: 7))
        #expect(
            web.location
                == SourceLine(file: "etc/schedule", number: 5, text: "0 1 * * *           web-nightly   twcc:101"))

        // Defaults add up with the job's own options; a later assignment does not reach back.
        let db = try #require(schedule.job(named: "db-daily"))
        #expect(db.options.retention == RetentionPolicy(keepLast: 7, keepDaily: 14, keepWeekly: 8))
        #expect(db.expression == (try CronExpression("H H * * *", hashSeed: "db-daily")))

        let lab = try #require(schedule.job(named: "lab"))
        #expect(lab.expression.normalized == "0 0 * * 0")
        #expect(lab.target == "/var/lib/libvirt/images/lab.qcow2")
        #expect(lab.options.retention == RetentionPolicy(keepLast: 4, keepDaily: 14))
        #expect(lab.options.timeout == .seconds(1_800))

        // `CRON_TZ=` resets to the system zone and `KEEP=` clears the default; TABs separate like blanks.
        let edge = try #require(schedule.job(named: "edge"))
        #expect(edge.expressionText == "@hourly")
        #expect(edge.options.retention == RetentionPolicy(keepDaily: 14))
        #expect(edge.options.paused)
    }

    @Test func emptyFileHasNoJobs() throws {
        #expect(try parseSchedule("").jobs.isEmpty)
        #expect(try parseSchedule("# nothing yet\n\n").jobs.isEmpty)
    }

    @Test func hashSeedIsTheJobName() throws {
        // The same name gets the same minute in any file and at any line.
        let first = try parseSchedule("H * * * * db local:/a")
        let second = try parseSchedule("# moved\n\nH * * * *   db   local:/b")
        #expect(first.jobs[0].expression.minutes == second.jobs[0].expression.minutes)

        // Different names spread over the hour.
        let names = (1...30).map { "vm-\($0)" }
        let schedule = try parseSchedule(names.map { "H * * * * \($0) local:/a" }.joined(separator: "\n"))
        let minutes = Set(schedule.jobs.map(\.expression.minutes))
        #expect(minutes.count >= 15, "30 names landed on only \(minutes.count) minutes")
    }

    struct ErrorRow: Sendable, CustomTestStringConvertible {
        var text: String
        var expected: [String]
        var testDescription: String { text.debugDescription }
    }

    @Test(arguments: [
        // The expression's error column is mapped into the line.
        ErrorRow(
            text: "0 3 * * 8    web  local:/a",
            expected: ["etc/schedule:1:9: error: day-of-week: value 8 out of range 0-7"]),
        ErrorRow(
            text: "  0\t3 * * 8 web local:/a",
            expected: ["etc/schedule:1:11: error: day-of-week: value 8 out of range 0-7"]),
        ErrorRow(
            text: "@reboot web local:/a",
            expected: ["etc/schedule:1:1: error: @reboot is not supported (snapshot jobs need a calendar schedule)"]),
        ErrorRow(
            text: "0 3 * * web local:/a",
            expected: [
                "etc/schedule:1:8: error: expected 5 fields (minute hour day-of-month month day-of-week), found 4"
            ]),
        // Zones: unknown, and abbreviations that Foundation would accept.
        ErrorRow(text: "CRON_TZ=Asia/Taipe", expected: ["etc/schedule:1:9: error: unknown time zone 'Asia/Taipe'"]),
        ErrorRow(text: "CRON_TZ=EST", expected: ["etc/schedule:1:9: error: unknown time zone 'EST'"]),
        // Assignments.
        ErrorRow(text: "KEPP=3", expected: ["etc/schedule:1:1: error: unknown assignment 'KEPP'"]),
        ErrorRow(text: "MAILTO=root", expected: ["etc/schedule:1:1: error: unknown assignment 'MAILTO'"]),
        ErrorRow(text: "KEEP = 3", expected: ["etc/schedule:1:5: error: blank around '=' in the assignment of 'KEEP'"]),
        ErrorRow(
            text: "keep-daily=x",
            expected: ["etc/schedule:1:12: error: keep-daily: invalid number 'x' (expected a whole number, at least 1)"]
        ),
        // Targets.
        ErrorRow(
            text: "@daily web aws:i-123",
            expected: ["etc/schedule:1:12: error: unknown backend 'aws' (configured: local, twcc)"]),
        ErrorRow(
            text: "@daily web local:vm.img",
            expected: [
                "etc/schedule:1:18: error: target of local backend 'local' must be an absolute path, got 'vm.img'"
            ]),
        ErrorRow(text: "@daily web twcc:", expected: ["etc/schedule:1:17: error: missing ID after 'twcc:' in target"]),
        // Names.
        ErrorRow(text: "@daily Web local:/a", expected: ["etc/schedule:1:8: error: invalid job name 'Web'"]),
        ErrorRow(text: "@daily w_b local:/a", expected: ["etc/schedule:1:9: error: invalid job name 'w_b'"]),
        ErrorRow(text: "@daily -web local:/a", expected: ["etc/schedule:1:8: error: invalid job name '-web'"]),
        ErrorRow(
            text: "@daily \(String(repeating: "a", count: 64)) local:/a",
            expected: ["etc/schedule:1:8: error: job name is 64 characters long (at most 63)"]),
        // Missing parts.
        ErrorRow(text: "0 3 * * *    web", expected: ["etc/schedule:1:18: error: missing target after job name 'web'"]),
        ErrorRow(
            text: "0 3 * * * web 101 keep=7",
            expected: ["etc/schedule:1:15: error: expected a target BACKEND:ID after job name 'web', found '101'"]),
        ErrorRow(text: "@daily", expected: ["etc/schedule:1:8: error: missing job name and target after the schedule"]),
        ErrorRow(
            text: "0 3 * * * local:/a",
            expected: ["etc/schedule:1:11: error: missing job name between the schedule and the target"]),
        ErrorRow(
            text: "@daily local:/a",
            expected: ["etc/schedule:1:8: error: missing job name between the schedule and the target"]),
        // A stray word gets one error, not a second one about the missing name.
        ErrorRow(
            text: "hello",
            expected: [
                "etc/schedule:1:6: error: expected 5 fields (minute hour day-of-month month day-of-week), found 1"
            ]),
        // Options.
        ErrorRow(text: "@daily web local:/a kep=4", expected: ["etc/schedule:1:21: error: unknown option 'kep'"]),
        ErrorRow(
            text: "@daily web local:/a keep=4 # nightly",
            expected: ["etc/schedule:1:28: error: unexpected comment after the options"]),
        ErrorRow(
            text: "@daily web local:/a keep",
            expected: ["etc/schedule:1:21: error: expected an option key=value, found 'keep'"]),
    ])
    func reportsErrorAtLineAndColumn(_ row: ErrorRow) {
        #expect(scheduleDiagnostics(row.text) == row.expected)
    }

    @Test func suggestsFixes() throws {
        func notes(_ text: String) -> String? {
            do {
                _ = try parseSchedule(text)
                return nil
            } catch {
                return error.first?.note
            }
        }
        #expect(notes("CRON_TZ=Asia/Taipe") == "did you mean 'Asia/Taipei'?")
        #expect(notes("KEPP=3") == "did you mean 'KEEP'?")
        #expect(notes("keep-dialy=3") == "did you mean 'keep-daily'?")
        #expect(notes("CRON_ZT=UTC") == "did you mean 'CRON_TZ'?")
        #expect(notes("TZ=UTC") == "the zone of the jobs after it is set with CRON_TZ=")
        #expect(notes("@daily web locl:/a") == "did you mean 'local'?")
        #expect(notes("@daily web local:/a kep=4") == "did you mean 'keep'?")
    }

    @Test func unknownBackendWithoutConfigFileNamesTheBuiltInOne() {
        #expect(throws: DiagnosticList.self) { try parseSchedule("@daily web twcc:1", config: .default()) }
        do {
            _ = try parseSchedule("@daily web twcc:1", config: .default())
        } catch {
            #expect(error.first?.message == "unknown backend 'twcc' (configured: local)")
            #expect(error.first?.note == "without a config file the only backend is the built-in 'local'")
        }
    }

    @Test func duplicateNamePointsAtTheFirst() {
        do {
            _ = try parseSchedule("@daily web local:/a\n# again\n0 3 * * *  web  local:/b")
            Issue.record("expected an error")
        } catch {
            #expect(
                error.description == """
                    etc/schedule:3:12: error: duplicate job name 'web'
                    3 | 0 3 * * *  web  local:/b
                      |            ^~~
                    etc/schedule:1:8: note: 'web' is first defined here
                    1 | @daily web local:/a
                      |        ^~~
                    1 error
                    """)
        }
    }

    @Test func reportsEveryErrorOfTheFile() {
        let text = """
            CRON_TZ=Mars/Olympus
            0 3 * * 8    web  local:/a
            @daily       db   nfs:/b
            @daily       ok   local:/c
            60 * * * *   Bad  local:/d   keep=0
            """
        #expect(
            scheduleDiagnostics(text) == [
                "etc/schedule:1:9: error: unknown time zone 'Mars/Olympus'",
                "etc/schedule:2:9: error: day-of-week: value 8 out of range 0-7",
                "etc/schedule:3:19: error: unknown backend 'nfs' (configured: local, twcc)",
                "etc/schedule:5:1: error: minute: value 60 out of range 0-59",
                "etc/schedule:5:14: error: invalid job name 'Bad'",
                "etc/schedule:5:35: error: keep: value 0 out of range (at least 1)",
            ])
    }

    @Test func nonASCIILinesKeepTheirWordsAndColumns() throws {
        // ASCII lines take a byte fast path; these go through the Character path, columns counted in characters.
        let schedule = try parseSchedule("@daily   vm   local:/srv/vm/磁碟.img   keep=2\n0 3 * * *  plain  local:/a")
        #expect(schedule.jobs.map(\.name) == ["vm", "plain"])
        #expect(schedule.jobs.map(\.target) == ["/srv/vm/磁碟.img", "/a"])
        #expect(
            scheduleDiagnostics("0 3 * * *   café   local:/srv/磁碟.img   keep=0") == [
                "etc/schedule:1:16: error: invalid job name 'café'",  // at the é
                "etc/schedule:1:45: error: keep: value 0 out of range (at least 1)",  // characters, not bytes (50)
            ])
        #expect(
            scheduleDiagnostics("0 3 * * *   disk   local:/srv/磁碟.img   keep=0") == [
                "etc/schedule:1:45: error: keep: value 0 out of range (at least 1)"
            ])
        #expect(try parseSchedule("0 3 * * *   disk   local:/srv/磁碟.img").jobs.first?.target == "/srv/磁碟.img")
    }

    @Test func toleratesCRLF() throws {
        let schedule = try parseSchedule("# windows\r\nKEEP=3\r\n@daily web local:/a\r\n0 4 * * * db twcc:7\r\n")
        #expect(schedule.jobs.map(\.name) == ["web", "db"])
        #expect(schedule.jobs[1].target == "7")
        #expect(schedule.jobs[0].location.text == "@daily web local:/a")
        #expect(schedule.jobs[0].options.retention.keepLast == 3)
        #expect(
            scheduleDiagnostics("@daily a local:/a\r\n0 3 * * 8 b local:/b\r\n") == [
                "etc/schedule:2:9: error: day-of-week: value 8 out of range 0-7"
            ])
    }

    @Test func warnsAboutDebianDayRule() throws {
        let schedule = try parseSchedule("0 0 1-31 * mon  weekly  local:/a\n0 0 */2 * sun  odd  local:/b")
        #expect(schedule.jobs.count == 2)
        #expect(
            schedule.warnings.map { "\($0.location) \($0.severity)" } == [
                "etc/schedule:1:5: warning", "etc/schedule:2:5: warning",
            ])
        #expect(schedule.warnings[0].message.hasPrefix("day-of-month '1-31' covers every day"))
        #expect(schedule.warnings[1].message.hasPrefix("day-of-month '*/2' starts with '*'"))
        #expect(schedule.warnings[0].columns == 5..<9)
    }

    @Test func advisesAboutDSTForFixedJobs() throws {
        let schedule = try parseSchedule(
            """
            CRON_TZ=America/New_York
            30 2 * * *    spring   local:/a
            30 1 * * *    fall     local:/b
            30 2,3 * * *  both     local:/c
            */5 2 * * *   wild     local:/d
            30 12 * * *   noon     local:/e
            CRON_TZ=Asia/Taipei
            30 2 * * *    taipei   local:/f
            """)
        #expect(schedule.jobs.count == 6)
        #expect(
            schedule.warnings.map { "\($0.location) \($0.severity.rawValue): \($0.message)" } == [
                "etc/schedule:2:1: warning: job 'spring' at 02:30 America/New_York: 2027-03-14 02:30 does not exist "
                    + "(DST); it fires once at 03:00",
                "etc/schedule:3:1: warning: job 'fall' at 01:30 America/New_York: 2026-11-01 01:30 occurs twice "
                    + "(DST); it fires once, at the first (2026-11-01T01:30:00-04:00)",
                "etc/schedule:4:1: warning: job 'both' at 02:30 America/New_York: 2027-03-14 02:30 does not exist "
                    + "(DST); it fires once at 03:00",
            ])
        #expect(schedule.warnings[0].columns == 1..<11)
    }

    @Test func advisoryLooksOnlyAYearAhead() throws {
        // From 2027-03-15 the next New York gap is 2028-03-12 (within 366 days); the fall-back is at 01:00.
        let text = "CRON_TZ=America/New_York\n30 2 * * * spring local:/a"
        let later = Date(timeIntervalSince1970: 1_805_068_800)  // 2027-03-15T00:00:00Z
        let schedule = try ScheduleFile.parse(
            text: text, file: "s", config: scheduleConfig, now: later, systemZone: .utc)
        #expect(schedule.warnings.count == 1)
        #expect(schedule.warnings[0].message.contains("2028-03-12 02:30"))
        // A job that fires on a day without a change gets nothing.
        let yearly = try parseSchedule("CRON_TZ=America/New_York\n30 2 1 6 * june local:/a")
        #expect(yearly.warnings.isEmpty)
    }

    @Test func loadReportsAMissingFile() {
        do {
            _ = try ScheduleFile.load(path: "/nonexistent/schedule", config: scheduleConfig, now: scheduleNow)
            Issue.record("expected an error")
        } catch {
            #expect(
                error.map(\.description) == [
                    "/nonexistent/schedule: error: cannot read schedule: no such file '/nonexistent/schedule'"
                ])
        }
    }

    @Test func loadReadsAFile() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("schedule-\(UUID().uuidString)").path
        try "@daily web local:/a\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let schedule = try ScheduleFile.load(path: path, config: scheduleConfig, now: scheduleNow, systemZone: .utc)
        #expect(schedule.jobs.first?.location.file == path)
    }

    @Test(arguments: ["a", "web-1", "0db", String(repeating: "x", count: 63)])
    func acceptsJobName(_ name: String) {
        #expect(ScheduleFile.isValidJobName(name))
    }

    @Test(arguments: ["", "-a", "Web", "a_b", "a.b", "ä", String(repeating: "x", count: 64)])
    func rejectsJobName(_ name: String) {
        #expect(!ScheduleFile.isValidJobName(name))
    }
}

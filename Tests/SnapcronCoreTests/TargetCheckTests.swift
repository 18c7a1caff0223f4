import BackendTypes
import ExecDescriptor
import Foundation
import SnapshotBackend
import LocalDescriptor
import SnapcronConfig
import Testing
import TWCCDescriptor

@testable import SnapcronCore

/// Targets checked from the config alone (what `snapcronctl check` does), located like compiler errors.
@Suite struct TargetCheckTests {
    /// `local` with its default image store, `qemu` (exec) with a pattern, and `twcc`.
    static let config: SnapcronConfig = {
        var config = SnapcronConfig.default(stateDir: "/var/lib/snapcron")
        var qemu = BackendConfig(name: "qemu", type: .exec)
        qemu.exec = ExecBackendSettings(create: ["/bin/true"], targetPattern: "/.+\\.qcow2")
        config.backends["qemu"] = qemu
        config.backends["twcc"] = BackendConfig(name: "twcc", type: .twcc)
        return config
    }()

    struct Row: CustomTestStringConvertible, Sendable {
        var line: String
        /// The header of the one error, `file:line:col: error: message`; nil when the target is fine.
        var expected: String?
        var testDescription: String { line }
    }

    static let rows: [Row] = [
        Row(line: "@daily web local:/var/lib/libvirt/images/web.img", expected: nil),
        Row(
            line: "@daily web local:/tmp/../x/disk.img",
            expected: "etc/schedule:1:12: error: web: local validate failed for /tmp/../x/disk.img: "
                + "target must not contain '.' or '..' components (permanent)"),
        Row(
            line: "@daily web   local:/var/lib/snapcron/images/web",
            expected: "etc/schedule:1:14: error: web: local validate failed for /var/lib/snapcron/images/web: "
                + "target lies inside the image store /var/lib/snapcron/images (permanent)"),
        Row(
            line: "@daily web local:/var",
            expected: "etc/schedule:1:12: error: web: local validate failed for /var: "
                + "target contains the image store /var/lib/snapcron/images (permanent)"),
        Row(line: "@daily lab qemu:/vm/lab.qcow2", expected: nil),
        Row(
            line: "@daily lab qemu:/vm/lab.raw",
            expected: "etc/schedule:1:12: error: lab: qemu validate failed for /vm/lab.raw: "
                + "target does not match target_pattern /.+\\.qcow2 (permanent)"),
        Row(
            line: "@daily lab qemu:-rf",
            expected: "etc/schedule:1:12: error: lab: qemu validate failed for -rf: "
                + "target must not start with '-' (permanent)"),
        Row(line: "@daily site twcc:web01", expected: nil),
        Row(
            line: "@daily site twcc:0",
            expected: "etc/schedule:1:13: error: site: twcc validate failed for 0: "
                + "'0' is not a VCS site id (permanent)"),
        Row(
            line: "@daily site twcc:web/01",
            expected: "etc/schedule:1:13: error: site: twcc validate failed for web/01: "
                + "'web/01' is not a VCS site id or name (letters, digits, '-', '_', '.') (permanent)"),
    ]

    @Test(arguments: rows)
    func checksTargetsByTheRulesOfTheirBackendType(_ row: Row) throws {
        let schedule = try parseSchedule(row.line, config: Self.config)
        switch schedule.checkingTargets(with: Self.config.targetValidators) {
        case .success:
            #expect(row.expected == nil)
        case .failure(let diagnostics):
            let headers = diagnostics.map { "\($0.location) \($0.severity.rawValue): \($0.message)" }
            #expect(headers == [row.expected].compactMap { $0 })
        }
    }

    @Test func aRefusedTargetGetsACaretUnderItAndKeepsTheWarnings() throws {
        // 02:30 in New York is skipped once a year: a warning that stays beside the error.
        let text = "CRON_TZ=America/New_York\n30 2 * * *  db  local:/srv/./db.img\n"
        let schedule = try parseSchedule(text, config: Self.config)
        guard case .failure(let diagnostics) = schedule.checkingTargets(with: Self.config.targetValidators) else {
            Issue.record("a '.' component passed")
            return
        }
        #expect(diagnostics.map(\.severity) == [.warning, .error])
        let error = try #require(diagnostics.last)
        #expect(
            error.description == """
                etc/schedule:2:17: error: db: local validate failed for /srv/./db.img: \
                target must not contain '.' or '..' components (permanent)
                2 | 30 2 * * *  db  local:/srv/./db.img
                  |                 ^~~~~~~~~~~~~~~~~~~
                """)
    }

    @Test func aBackendWithoutAValidatorIsNotAvailable() throws {
        let schedule = try parseSchedule("@daily web local:/a", config: Self.config)
        guard case .failure(let diagnostics) = schedule.checkingTargets(with: [:]) else {
            Issue.record("a job without a backend passed")
            return
        }
        #expect(diagnostics.map(\.message) == ["backend 'local' of job 'web' is not available in this build"])
    }

    @Test func theLocalImageStoreDefaultsToTheStateDirectory() throws {
        var config = SnapcronConfig.default(stateDir: "/srv/snapcron/")
        let local = try #require(config.backends["local"])
        #expect(local.local?.imagesDirectory == "/srv/snapcron/images")
        var bare = local
        bare.local = nil
        config.backends["local"] = bare
        let validate = try #require(config.targetValidators["local"])
        #expect(throws: SnapshotBackendError.self) { try validate("/srv/snapcron/images/web") }
        let settings = LocalBackendDescriptor.settings(of: bare, stateDirectory: "/srv/snapcron/")
        #expect(settings.imagesDirectory == "/srv/snapcron/images")
    }
}

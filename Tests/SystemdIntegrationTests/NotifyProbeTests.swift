import Foundation
import SnapcronSystemd
import TestThreads
import Testing

/// `snapcron-notify-probe` as a Type=notify service under a real systemd 252: readiness, status, journal fields,
/// watchdog restarts and a clean stop, each in a sandbox of its own.
///
/// Needs root (CI runs as root); `SNAPCRON_SKIP_SYSTEMD_TESTS=1` skips the suite, otherwise a non-root run fails
/// with the reason. `SNAPCRON_KEEP_SANDBOX=1` keeps the sandbox folders under `.build/systemd-sandboxes`.
@Suite(
    .onOwnThreads,
    .enabled(if: !Sandbox.skipRequested, "SNAPCRON_SKIP_SYSTEMD_TESTS=1"),
    .timeLimit(.minutes(1))
)
struct NotifyProbeTests {
    static let unit = "snapcron-probe.service"
    static let status = "probe: 12 events logged, watchdog on"

    @Test func startReturnsOnlyAfterReadyWithTheStatusSent() throws {
        try withProbe(readyDelayMilliseconds: 1500) { sandbox in
            // When the probe waits 1.5 s before READY=1
            let started = ContinuousClock.now
            try sandbox.exec("systemctl", "start", Self.unit)
            let elapsed = ContinuousClock.now - started

            // Then `systemctl start` waited for it, and the service is up with the status sent
            #expect(elapsed >= .milliseconds(1500), "systemctl start returned after \(elapsed), before READY=1")
            let properties = try sandbox.properties("ActiveState", "SubState", "StatusText", of: Self.unit)
            #expect(properties["ActiveState"] == "active")
            #expect(properties["SubState"] == "running")
            #expect(properties["StatusText"] == Self.status)
        }
    }

    @Test func journalEntriesCarrySnapcronFieldsAndMessageIDs() throws {
        try withProbe { sandbox in
            try sandbox.exec("systemctl", "start", Self.unit)

            // journald may still be writing what the probe sent just before READY=1
            var entries: [[String: String]] = []
            try sandbox.wait("an entry for every event kind") {
                entries = try sandbox.journal("-u", Self.unit).filter { $0["MESSAGE_ID"] != nil && $0["_PID"] != "1" }
                return entries.count >= SnapcronEvent.all.count
            }
            #expect(Set(entries.compactMap { $0["MESSAGE_ID"] }) == Set(SnapcronEvent.all.map(\.messageID)))

            let succeeded = try #require(entries.first { $0["MESSAGE_ID"] == SnapcronEvent.runSucceeded.messageID })
            #expect(succeeded["MESSAGE"] == "Probe run.succeeded")
            #expect(succeeded["PRIORITY"] == "6")
            #expect(succeeded["SYSLOG_IDENTIFIER"] == "snapcron-notify-probe")
            #expect(succeeded["_SYSTEMD_UNIT"] == Self.unit)
            #expect(succeeded["CODE_FILE"]?.hasSuffix("main.swift") == true)
            #expect(Int(succeeded["CODE_LINE"] ?? "") != nil)
            #expect(succeeded["CODE_FUNC"]?.isEmpty == false)
            let expected = [
                "SNAPCRON_EVENT": "run.succeeded",
                "SNAPCRON_JOB": "probe-job",
                "SNAPCRON_RUN": "2",
                "SNAPCRON_TARGET": "local:/srv/probe.qcow2",
                "SNAPCRON_IMAGE": "snapcron-probe-job-20261129T090000Z",
                "SNAPCRON_STATE": "active",
                "SNAPCRON_SCHEDULED": "2026-11-29T09:00:00Z",
                "SNAPCRON_DURATION_MS": "5120",
                "SNAPCRON_ERROR": "none: probe",
                "SNAPCRON_BACKEND": "local",
                "SNAPCRON_PROBE_SEQUENCE": "1",  // a key outside the table: `probe.sequence`
            ]
            for (field, value) in expected {
                #expect(succeeded[field] == value, "\(field)")
            }
        }
    }

    @Test func missedWatchdogPingsGetTheServiceKilledAndRestarted() throws {
        try withProbe { sandbox in
            try sandbox.exec("systemctl", "start", Self.unit)
            let firstPID = try sandbox.properties("MainPID", of: Self.unit)["MainPID"]

            // When the probe stops pinging (SIGUSR1)
            try sandbox.exec("systemctl", "kill", "--kill-whom=main", "--signal=SIGUSR1", Self.unit)

            // Then systemd kills it for the watchdog, waits RestartSec= and starts it again
            var properties: [String: String] = [:]
            try sandbox.wait("the watchdog to kill the probe", timeout: .seconds(15)) {
                properties = try sandbox.properties("SubState", "Result", "NRestarts", of: Self.unit)
                return properties["SubState"] == "auto-restart"
            }
            #expect(properties["Result"] == "watchdog")
            try sandbox.wait("the probe to be restarted", timeout: .seconds(10)) {
                properties = try sandbox.properties("SubState", "NRestarts", "MainPID", of: Self.unit)
                return properties["SubState"] == "running"
            }
            #expect(properties["NRestarts"] == "1")
            #expect(properties["MainPID"] != firstPID)
            let messages = try sandbox.journal("-u", Self.unit).compactMap { $0["MESSAGE"] }
            #expect(messages.contains { $0.contains("Watchdog timeout") })
            #expect(messages.contains { $0.contains("Failed with result 'watchdog'") })
        }
    }

    @Test func stopSendsStoppingAndExitsCleanly() throws {
        try withProbe { sandbox in
            try sandbox.exec("systemctl", "start", Self.unit)
            let mainPID = try #require(sandbox.properties("MainPID", of: Self.unit)["MainPID"])
            // At debug level systemd logs every notification it accepts: the proof that STOPPING=1 arrived.
            try sandbox.exec("systemctl", "log-level", "debug")

            try sandbox.exec("systemctl", "stop", Self.unit)

            let properties = try sandbox.properties("ActiveState", "Result", "ExecMainStatus", of: Self.unit)
            #expect(properties["ActiveState"] == "inactive")
            #expect(properties["Result"] == "success")
            #expect(properties["ExecMainStatus"] == "0")
            var entries: [[String: String]] = []
            try sandbox.wait("STOPPING=1 and a clean exit in the journal") {
                entries = try sandbox.journal("-u", Self.unit)
                let systemd = entries.filter { $0["_PID"] == "1" }.compactMap { $0["MESSAGE"] }
                return systemd.contains { $0.contains("notification message from PID \(mainPID) (STOPPING=1)") }
                    && systemd.contains { $0.contains("Main process exited, code=exited, status=0/SUCCESS") }
            }
            #expect(
                entries.contains {
                    $0["MESSAGE_ID"] == SnapcronEvent.daemonStopping.messageID && $0["MESSAGE"] == "Probe stopping"
                })
        }
    }

    /// Boots a sandbox with the probe's unit installed (not started), runs `body`, and always stops the sandbox.
    private func withProbe(readyDelayMilliseconds: Int = 0, _ body: (Sandbox) throws -> Void) throws {
        let sandbox = try Sandbox.boot()
        do {
            try sandbox.installUnit(
                named: Self.unit, contents: Self.unitFile(readyDelayMilliseconds: readyDelayMilliseconds))
            try body(sandbox)
        } catch {
            try? sandbox.stop()
            sandbox.remove()
            throw error
        }
        try sandbox.stop()
        sandbox.remove()
    }

    private static func unitFile(readyDelayMilliseconds: Int) -> String {
        """
        [Unit]
        Description=snapcron notify probe

        [Service]
        Type=notify
        ExecStart=/srv/bin/snapcron-notify-probe --status "\(status)" --ready-delay-ms \(readyDelayMilliseconds)
        # Swift's crash backtracer catches the watchdog's SIGABRT and hung until TimeoutStopSec= here.
        Environment=SWIFT_BACKTRACE=enable=no
        WatchdogSec=3s
        Restart=on-failure
        RestartSec=2s
        TimeoutStartSec=20s
        TimeoutStopSec=10s

        """
    }
}

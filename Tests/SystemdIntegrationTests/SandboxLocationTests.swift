import Foundation
import TestThreads
import Testing

/// The harness itself (`scripts/systemd-sandbox`) where a checkout may live: `make test` in a clone under /var/tmp or
/// in a CI workspace under /var/lib puts the sandbox folders under /var too, beneath the sandbox's /var overlay.
@Suite(
    .onOwnThreads,
    .enabled(if: !Sandbox.skipRequested, "SNAPCRON_SKIP_SYSTEMD_TESTS=1"),
    .timeLimit(.minutes(1))
)
struct SandboxLocationTests {
    /// A stand-in checkout under /var/tmp: the harness script and a marker file, the sandbox folder inside it as
    /// the end-to-end tests make it (`.build/systemd-sandboxes/...`).
    @Test func aCheckoutAndItsSandboxFolderUnderVarWork() throws {
        let checkout = URL(fileURLWithPath: "/var/tmp/snapcron-harness-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: checkout) }
        let script = checkout.appendingPathComponent("scripts/systemd-sandbox")
        try FileManager.default.createDirectory(
            at: script.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Sandbox.script, to: script)
        let marker = checkout.appendingPathComponent("marker")
        try "the checkout\n".write(to: marker, atomically: true, encoding: .utf8)
        let folder = checkout.appendingPathComponent(".build/systemd-sandboxes/\(UUID().uuidString)")

        let sandbox = try Sandbox.start(directory: folder, script: script)
        do {
            // The checkout is there at its own path (make install-files runs from it), and read-only.
            #expect(try sandbox.exec("cat", marker.path) == "the checkout\n")
            #expect(try sandbox.attempt("touch", checkout.path + "/written-inside").status != 0)
            // Writes to /var inside land in the sandbox folder, not in the host's /var.
            try sandbox.exec("sh", "-c", "echo inside >/var/lib/snapcron-harness-probe")
            #expect(
                FileManager.default.contents(atPath: folder.path + "/var/lib/snapcron-harness-probe")
                    == Data("inside\n".utf8))
            #expect(!FileManager.default.fileExists(atPath: "/var/lib/snapcron-harness-probe"))
            // A Type=notify service from /srv/bin (the folder's srv/) starts and reaches the journal.
            try sandbox.succeed(["install-bin", folder.path, Sandbox.probeExecutable().path])
            try sandbox.installUnit(
                named: "probe.service",
                contents: """
                    [Service]
                    Type=notify
                    ExecStart=/srv/bin/snapcron-notify-probe --status "under /var"
                    Environment=SWIFT_BACKTRACE=enable=no

                    """)
            try sandbox.exec("systemctl", "start", "probe.service")
            #expect(try sandbox.properties("ActiveState", "StatusText", of: "probe.service") == [
                "ActiveState": "active", "StatusText": "under /var",
            ])
            #expect(try !sandbox.journal("-u", "probe.service").isEmpty)
        } catch {
            try? sandbox.stop()
            throw error
        }
        try sandbox.stop()
        // The journal copy taken at stop is in the folder too.
        #expect(try !sandbox.journal("-u", "probe.service").isEmpty)
    }
}

import Foundation
import TestThreads
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The built `snapcronctl`, next to `snapcrond`.
let snapcronctlBinary: URL? = snapcrondBinary.map {
    $0.deletingLastPathComponent().appendingPathComponent("snapcronctl")
}

/// Runs `snapcronctl` to its end; its output goes to files, so nothing blocks on a full pipe.
func runSnapcronctl(_ arguments: [String], in workspace: DaemonWorkspace) throws
    -> (status: Int32, stdout: String, stderr: String)
{
    try runSnapcronctl(arguments, inDirectory: workspace.path)
}

/// ``runSnapcronctl(_:in:)`` with its output files in `directory`.
func runSnapcronctl(_ arguments: [String], inDirectory directory: String) throws
    -> (status: Int32, stdout: String, stderr: String)
{
    let binary = try #require(snapcronctlBinary, "snapcronctl not found next to the test bundle; run swift build")
    let id = UUID().uuidString
    let stdoutPath = directory + "/ctl-out-\(id)"
    let stderrPath = directory + "/ctl-err-\(id)"
    _ = FileManager.default.createFile(atPath: stdoutPath, contents: nil)
    _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
    let stdout = try FileHandle(forWritingTo: URL(fileURLWithPath: stdoutPath))
    let stderr = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
    let process = Process()
    process.executableURL = binary
    process.arguments = arguments
    process.standardOutput = stdout
    process.standardError = stderr
    try process.run()
    process.waitUntilExit()
    try stdout.close()
    try stderr.close()
    return (
        process.terminationStatus, try String(contentsOfFile: stdoutPath, encoding: .utf8),
        try String(contentsOfFile: stderrPath, encoding: .utf8)
    )
}

/// `snapcronctl check` without a daemon and `snapcronctl reload` of a real `snapcrond` judge targets alike.
@Suite(.onOwnThreads, .serialized) struct CheckAgreesWithReloadTests {
    @Test func checkRefusesEveryTargetThatReloadRefusesWithTheSameDiagnostics() throws {
        let workspace = try DaemonWorkspace()
        let socket = workspace.path + "/control.sock"
        let key = workspace.path + "/twcc-key"
        _ = FileManager.default.createFile(
            atPath: key, contents: Data("not-a-real-key".utf8), attributes: [.posixPermissions: 0o600])
        // One backend of each type; the check needs neither the TWCC key nor the network.
        try """
            [daemon]
            state_dir = "\(workspace.state)"
            socket_path = "\(socket)"
            [backends.local]
            type = "local"
            [backends.qemu]
            type = "exec"
            create = ["/bin/true"]
            target_pattern = "/.+\\\\.qcow2"
            [backends.twcc]
            type = "twcc"
            project_id = 1
            api_key_file = "\(key)"
            """.write(toFile: workspace.config, atomically: true, encoding: .utf8)
        try """
            CRON_TZ=UTC
            0 3 * * *   disk   local:\(workspace.disk)   paused=yes
            0 4 * * *   lab    qemu:/vm/lab.qcow2        paused=yes
            0 5 * * *   site   twcc:web01                paused=yes
            """.write(toFile: workspace.schedule, atomically: true, encoding: .utf8)
        let good = try runSnapcronctl(["check", workspace.schedule, "--config", workspace.config], in: workspace)
        #expect(good.status == 0, "\(good.stderr)")

        let daemon = try DaemonProcess(workspace)
        #expect(eventually(within: 30) { daemon.stderr.contains("Scheduler started") }, "\(daemon.stderr)")

        try """
            CRON_TZ=UTC
            0 3 * * *   disk   local:\(workspace.path)/tmp/../disk.img
            0 4 * * *   lab    qemu:/vm/lab.raw
            0 5 * * *   site   twcc:0
            0 6 * * *   store  local:\(workspace.images)/x
            """.write(toFile: workspace.schedule, atomically: true, encoding: .utf8)
        let check = try runSnapcronctl(["check", workspace.schedule, "--config", workspace.config], in: workspace)
        let reload = try runSnapcronctl(["reload", "--socket", socket], in: workspace)
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(within: 10) == 0)

        #expect(check.status == 1, "\(check.stderr)")
        #expect(reload.status == 1, "\(reload.stderr)")
        /// Each diagnostic's header, source line and caret (not the summaries, which differ).
        func diagnostics(_ stderr: String) -> [String] {
            stderr.split(separator: "\n").map(String.init).filter { $0.contains(": error: ") || $0.contains(" | ") }
        }
        #expect(
            diagnostics(check.stderr) == diagnostics(reload.stderr),
            "check:\n\(check.stderr)\nreload:\n\(reload.stderr)")
        let headers = diagnostics(check.stderr).filter { $0.contains(": error: ") }
        #expect(
            headers == [
                "\(workspace.schedule):2:20: error: disk: local validate failed for \(workspace.path)/tmp/../disk.img: "
                    + "target must not contain '.' or '..' components (permanent)",
                "\(workspace.schedule):3:20: error: lab: qemu validate failed for /vm/lab.raw: "
                    + "target does not match target_pattern /.+\\.qcow2 (permanent)",
                "\(workspace.schedule):4:20: error: site: twcc validate failed for 0: "
                    + "'0' is not a VCS site id (permanent)",
                "\(workspace.schedule):5:20: error: store: local validate failed for \(workspace.images)/x: "
                    + "target lies inside the image store \(workspace.images) (permanent)",
            ], "\(check.stderr)")
    }
}

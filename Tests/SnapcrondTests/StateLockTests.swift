import Foundation
import TestThreads
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// One state directory, one daemon: a second `snapcrond` (say one started by hand next to the service) must not
/// schedule the same jobs again.
@Suite(.onOwnThreads, .serialized) struct StateLockTests {
    /// `snapcrond` on the workspace with its own control socket, so that only the state directory is shared.
    static func daemon(_ workspace: DaemonWorkspace, socket: String) throws -> DaemonProcess {
        try DaemonProcess(
            workspace,
            arguments: [
                "--config", workspace.config, "--schedule", workspace.schedule, "--socket", workspace.path + "/" + socket,
            ])
    }

    @Test func aSecondDaemonOnTheSameStateDirectoryExitsOneNamingItAndTheHolder() throws {
        let workspace = try DaemonWorkspace()
        try workspace.writeSchedule(firingAt: minutesAgo(-120))
        let first = try Self.daemon(workspace, socket: "first.sock")
        #expect(eventually(within: 30) { first.stderr.contains("Scheduler started") }, "\(first.stderr)")
        let holder = first.process.processIdentifier
        let lockFile = workspace.state + "/snapcrond.lock"
        #expect((try? String(contentsOfFile: lockFile, encoding: .utf8)) == "\(holder)\n")

        let second = try Self.daemon(workspace, socket: "second.sock")
        #expect(second.waitForExit(within: 20) == 1, "the second daemon kept running: \(second.stderr)")
        #expect(
            second.stderr.contains(
                "snapcrond: the state directory \(workspace.state) is in use by another snapcrond (pid \(holder), "),
            "\(second.stderr)")
        #expect(!second.stderr.contains("Scheduler started"), "\(second.stderr)")
        // It touched nothing: no socket of its own, and the first one still runs, still holding the lock.
        #expect(!FileManager.default.fileExists(atPath: workspace.path + "/second.sock"))
        #expect(first.process.isRunning)
        #expect((try? String(contentsOfFile: lockFile, encoding: .utf8)) == "\(holder)\n")

        // The kernel drops the lock with its holder, however it dies: after a SIGKILL the next daemon starts.
        first.signal(SIGKILL)
        #expect(first.waitForExit(within: 10) != nil)
        let third = try Self.daemon(workspace, socket: "third.sock")
        #expect(eventually(within: 30) { third.stderr.contains("Scheduler started") }, "\(third.stderr)")
        #expect(
            (try? String(contentsOfFile: lockFile, encoding: .utf8)) == "\(third.process.processIdentifier)\n")
        third.signal(SIGTERM)
        #expect(third.waitForExit(within: 10) == 0, "\(third.stderr)")
    }
}

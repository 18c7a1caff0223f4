import TestThreads
import Testing

/// `images` and `prune` take a job or `--orphaned`, exactly one: anything else is a usage error (2) before any
/// connection is tried.
@Suite(.onOwnThreads) struct OrphanedUsageTests {
    @Test(arguments: [["images"], ["prune"], ["prune", "--dry-run"]])
    func neitherJobNorOrphanedIsAUsageError(_ arguments: [String]) throws {
        let result = try Snapcronctl.run(arguments + ["--socket", "/nonexistent/control.sock"])
        #expect(result.status == 2, "\(arguments): \(result.stderr)")
        #expect(result.stderr.contains("missing JOB (or --orphaned"), "\(result.stderr)")
    }

    @Test(arguments: [["images", "web", "--orphaned"], ["prune", "web", "--orphaned", "--dry-run"]])
    func bothJobAndOrphanedIsAUsageError(_ arguments: [String]) throws {
        let result = try Snapcronctl.run(arguments + ["--socket", "/nonexistent/control.sock"])
        #expect(result.status == 2, "\(arguments): \(result.stderr)")
        #expect(result.stderr.contains("give JOB or --orphaned, not both"), "\(result.stderr)")
    }

    @Test func helpMentionsOrphaned() throws {
        for command in ["images", "prune"] {
            let result = try Snapcronctl.run([command, "--help"])
            #expect(result.status == 0)
            #expect(result.stdout.contains("--orphaned"), "\(command): \(result.stdout)")
        }
    }
}

import SnapcronCore
import Foundation
import GRDB
import SnapcronStore
import TestThreads
import Testing

#if canImport(Glibc)
    import Glibc  // kill, SIGKILL, usleep
#endif

/// SIGKILLs a process hammering the store at random moments, then checks that no change was half-written.
///
/// The child is `snapcron-store-torture` (built next to this test binary; `SNAPCRON_STORE_TORTURE` overrides
/// its path). Real time is unavoidable here: the point is to kill a real process mid-write. Replay a failure
/// with `SNAPCRON_TORTURE_SEED=<printed seed>`.
@Suite(.onOwnThreads) struct CrashSafetyTests {
    static let kills = 20

    @Test(.timeLimit(.minutes(1))) func survivesSIGKILLAtRandomMoments() throws {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["SNAPCRON_TORTURE_SEED"].flatMap(UInt64.init) ?? UInt64.random(in: .min ... .max)
        print("crash-safety seed: \(seed) (replay with SNAPCRON_TORTURE_SEED=\(seed))")
        var random = SplitMix64(seed: seed)
        let directory = try TemporaryDirectory()
        let path = directory.path("state.db")
        let torture = try Self.tortureExecutable()

        var runCount = 0
        var killsMidRun = 0
        for round in 0..<Self.kills {
            // Given a child that resumed what the last one left and is now hammering the store
            let stderrPath = directory.path("stderr-\(round).txt")
            _ = FileManager.default.createFile(atPath: stderrPath, contents: nil)
            let child = Process()
            child.executableURL = torture
            child.arguments = [path, String(random.next())]
            let output = Pipe()
            child.standardOutput = output
            child.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
            try child.run()
            let ready = output.fileHandleForReading.availableData  // blocks until "ready" or the child's end
            let errors = { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
            try #require(String(decoding: ready, as: UTF8.self) == "ready\n", "torture did not start: \(errors())")

            // When it is killed at a random moment
            usleep(UInt32.random(in: 2_000...120_000, using: &random))
            #expect(kill(child.processIdentifier, SIGKILL) == 0)
            child.waitUntilExit()
            try #require(
                child.terminationReason == .uncaughtSignal,
                "torture exited by itself (status \(child.terminationStatus)): \(errors())")

            // Then the file is consistent
            let (runs, unfinished) = try Self.verify(path: path, round: round)
            #expect(runs >= runCount, "runs disappeared after kill \(round)")
            runCount = runs
            killsMidRun += unfinished > 0 ? 1 : 0
        }
        print("crash-safety: \(Self.kills) kills, \(runCount) runs, \(killsMidRun) kills left a run unfinished")
        #expect(runCount > Self.kills, "the torture child made too little progress to prove anything")
    }

    /// Reopens the database and checks every invariant a half-written change would break.
    private static func verify(path: String, round: Int) throws -> (runs: Int, unfinished: Int) {
        let db = try SnapcronDatabase(path: path)
        defer { try? db.close() }
        #expect(db.healthCheck().isOK, "after kill \(round)")
        // Decoding every row proves every state and trigger is legal.
        let runs = try db.runs(limit: .max)

        let raw = try DatabaseQueue(path: path)
        defer { try? raw.close() }
        try raw.read { sql in
            func count(_ query: String) throws -> Int { try Int.fetchOne(sql, sql: query) ?? -1 }
            let duplicateFires = try count(
                "SELECT COUNT(*) FROM (SELECT 1 FROM runs GROUP BY job, scheduled_at HAVING COUNT(*) > 1)")
            #expect(duplicateFires == 0, "after kill \(round)")
            // markWaiting writes the run and its image together.
            let runsWithoutImage = try count(
                """
                SELECT COUNT(*) FROM runs r
                WHERE r.image_id IS NOT NULL
                  AND NOT EXISTS (SELECT 1 FROM images i WHERE i.backend = r.backend AND i.id = r.image_id
                                                         AND i.run_id = r.id)
                """)
            #expect(runsWithoutImage == 0, "after kill \(round)")
            let waitingWithoutImageID = try count(
                "SELECT COUNT(*) FROM runs WHERE state IN ('waiting', 'succeeded') AND image_id IS NULL")
            #expect(waitingWithoutImageID == 0, "after kill \(round)")
            let imagesWithoutRun = try count(
                """
                SELECT COUNT(*) FROM images i
                WHERE NOT EXISTS (SELECT 1 FROM runs r WHERE r.id = i.run_id AND r.image_id = i.id)
                """)
            #expect(imagesWithoutRun == 0, "after kill \(round)")
            // finishRun writes the run and its image state together.
            let succeededNotActive = try count(
                """
                SELECT COUNT(*) FROM runs r JOIN images i ON i.backend = r.backend AND i.id = r.image_id
                WHERE r.state = 'succeeded' AND i.state <> 'active'
                """)
            #expect(succeededNotActive == 0, "after kill \(round)")
            // claimRun advances the job's last fire in the same transaction (recordSkipped too, also when it
            // extends a skipped row's span instead of inserting one).
            let lastFireMismatch = try count(
                """
                SELECT COUNT(*) FROM jobs j
                WHERE j.last_scheduled_at IS NOT (SELECT MAX(COALESCE(repeated_until, scheduled_at)) FROM runs r
                                                  WHERE r.job = j.name AND r.trigger <> 'manual')
                """)
            let badSpans = try count(
                """
                SELECT COUNT(*) FROM runs
                WHERE (repeated_until IS NULL) <> (repeat_count = 1)
                   OR (repeated_until IS NOT NULL AND state <> 'skipped')
                """)
            #expect(badSpans == 0, "after kill \(round)")
            #expect(lastFireMismatch == 0, "after kill \(round)")
            let unattempted = try count(
                "SELECT COUNT(*) FROM runs WHERE state IN ('creating', 'waiting', 'succeeded') AND attempts < 1")
            #expect(unattempted == 0, "after kill \(round)")
        }

        // A fire claimed before the kill stays claimed.
        for run in runs.prefix(5) {
            let again = try db.claimRun(
                job: run.job, scheduledAt: run.scheduledAt, trigger: run.trigger, imageName: "again", backend: "fake",
                target: "vm-1", now: run.claimedAt)
            #expect(again == nil, "fire \(run.scheduledAt) of \(run.job) claimed twice after kill \(round)")
        }
        return (runs.count, try db.unfinishedRuns().count)
    }

    private static func tortureExecutable() throws -> URL {
        if let path = ProcessInfo.processInfo.environment["SNAPCRON_STORE_TORTURE"] {
            return URL(fileURLWithPath: path)
        }
        let testBinary = Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
        let url = testBinary.deletingLastPathComponent().appendingPathComponent("snapcron-store-torture")
        try #require(
            FileManager.default.isExecutableFile(atPath: url.path),
            "snapcron-store-torture not found at \(url.path); build it or set SNAPCRON_STORE_TORTURE")
        return url
    }
}

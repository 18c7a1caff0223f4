import SnapcronCore
import Foundation
import GRDB
import Testing

@testable import SnapcronStore

/// The history limit: old deleted or gone images and finished runs go; nothing current does.
@Suite struct HistoryPruneTests {
    let db: SnapcronDatabase

    init() throws { db = try .inMemory() }

    @Test func prunesOldFinishedHistoryAndNothingCurrent() throws {
        // Given, before the cutoff at minute 100: a run whose image was deleted, one whose image is gone,
        // a missed and a skipped fire, and history that must stay
        try db.activeImage("web", at: 0, image: "deleted")
        try db.markImageDeleted(id: "deleted", backend: "fake", now: minute(10), reason: "beyond keep=1")
        let goneRun = try db.waitingRun("web", at: 1, image: "gone")
        try db.finishRun(runID: goneRun.id, state: .failed, error: "error", now: minute(2))
        try db.updateImageState(id: "gone", backend: "fake", state: .gone, now: minute(20))
        try db.recordMissed(job: "web", scheduledAt: minute(3), now: minute(6), reason: "down")
        try db.recordSkipped(job: "db", scheduledAt: minute(4), now: minute(7), reason: "paused")
        // (kept: an active image and its run, a run still claimed, a waiting run, an image being deleted, an error
        // image, a run whose image was deleted after the cutoff, a shared skipped row that ended after it)
        try db.activeImage("web", at: 5, image: "active")
        let claimed = try #require(try db.claim("web", at: 6))
        try db.waitingRun("web", at: 7, image: "queued")
        try db.activeImage("web", at: 8, image: "deleting")
        try #require(try db.beginDeleting(id: "deleting", backend: "fake", reason: "old", now: minute(9)) != nil)
        let errorRun = try db.waitingRun("web", at: 9, image: "error")
        try db.finishRun(runID: errorRun.id, state: .failed, error: "error", now: minute(10))
        try db.activeImage("web", at: 11, image: "deleted-late")
        try db.markImageDeleted(id: "deleted-late", backend: "fake", now: minute(150), reason: "beyond keep=1")
        try db.recordSkipped(job: "batch", scheduledAt: minute(12), now: minute(12), reason: "paused")
        try db.recordSkipped(job: "batch", scheduledAt: minute(120), now: minute(120), reason: "paused")
        try db.setPaused(name: "web", true, now: minute(13))
        let jobsBefore = try db.allJobStates()

        // When history older than minute 100 is pruned
        let result = try db.pruneHistory(olderThan: minute(100))

        // Then exactly the old finished history went
        #expect(result == HistoryPruneResult(runs: 4, images: 2))
        let images = try ["web"].flatMap { try db.images(job: $0, includeDeleted: true) }.map(\.id)
        #expect(Set(images) == ["active", "queued", "deleting", "error", "deleted-late"])
        #expect(try db.runs(job: "web").map(\.scheduledAt) == [11, 9, 8, 7, 6, 5].map(minute))
        #expect(try db.runs(job: "db").isEmpty)
        #expect(try db.runs(job: "batch").map(\.repeatCount) == [2])
        #expect(try db.run(id: claimed.id)?.state == .claimed)
        // And job state is untouched: the pruned fires stay handled
        #expect(try db.allJobStates() == jobsBefore)
        #expect(try db.pruneHistory(olderThan: minute(100)) == HistoryPruneResult(runs: 0, images: 0))
    }

    @Test func aPrunedRunTakesItsHookResultsAlong() throws {
        let gone = try db.waitingRun("web", at: 1, image: "gone")
        try db.finishRun(runID: gone.id, state: .failed, error: "error", now: minute(2))
        try db.updateImageState(id: "gone", backend: "fake", state: .gone, now: minute(20))
        let kept = try db.waitingRun("web", at: 150, image: "kept")
        for run in [gone.id, kept.id] {
            try db.recordHookResult(
                HookRecord(
                    runID: run, phase: .pre, hookSet: "freeze", result: "exit 1", exitStatus: 1, durationMs: 5,
                    finishedAt: minute(2)))
        }
        #expect(try db.pruneHistory(olderThan: minute(100)).runs == 1)
        let left = try db.hookResults(runIDs: [gone.id, kept.id])
        #expect(left[gone.id] == nil && left[kept.id]?.map(\.result) == ["exit 1"])
    }

    @Test func theCutoffItselfIsKept() throws {
        try db.activeImage("web", at: 0, image: "img-1")
        try db.markImageDeleted(id: "img-1", backend: "fake", now: minute(10), reason: "old")
        #expect(try db.pruneHistory(olderThan: minute(10)) == HistoryPruneResult(runs: 0, images: 0))
        #expect(try db.pruneHistory(olderThan: minute(10) + 1) == HistoryPruneResult(runs: 1, images: 1))
    }

    @Test func everyPruneStatementReadsAnIndex() throws {
        // One row per table, so the planner has a table to plan for; the plan does not depend on the rows.
        for sql in SnapcronDatabase.pruneImagesSQL + SnapcronDatabase.pruneRunsSQL {
            let detail = try db.read { db in
                try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: [0]).map { $0["detail"] as String }
            }
            #expect(!detail.contains { $0.hasPrefix("SCAN") }, "\(sql): \(detail)")
        }
    }
}

/// Pruning a large history on a real WAL file (no timing asserted: the indexes are checked above).
@Suite struct HistoryPruneFileTests {
    @Test func prunesHalfOfAHundredThousandRuns() throws {
        let directory = try TemporaryDirectory()
        let db = try SnapcronDatabase(path: directory.path("state.db"))
        // Given 100,000 runs a minute apart: every tenth image still active, every thousandth run (ending in 5)
        // still claimed, every other image deleted 40 s after its run started
        try db.write { db in
            try db.execute(
                sql: """
                    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
                    INSERT INTO runs (id, job, scheduled_at, trigger, state, attempts, image_name, image_id, backend,
                                      target, claimed_at, started_at, finished_at)
                    SELECT i, 'job-' || (i % 100), i * 60, 'schedule',
                           CASE WHEN i % 1000 = 5 THEN 'claimed' ELSE 'succeeded' END, 1, 'n-' || i,
                           CASE WHEN i % 1000 = 5 THEN NULL ELSE 'img-' || i END, 'fake', 'vm', i * 60, i * 60,
                           CASE WHEN i % 1000 = 5 THEN NULL ELSE i * 60 + 30 END
                    FROM n;
                    INSERT INTO images (backend, id, job, target, name, created_at, updated_at, state, deleted_at,
                                        run_id)
                    SELECT 'fake', image_id, job, target, image_name, claimed_at, claimed_at + 40,
                           CASE WHEN id % 10 = 0 THEN 'active' ELSE 'deleted' END,
                           CASE WHEN id % 10 = 0 THEN NULL ELSE claimed_at + 40 END, id
                    FROM runs WHERE image_id IS NOT NULL;
                    WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 99)
                    INSERT INTO jobs (name, paused, last_scheduled_at, updated_at)
                    SELECT 'job-' || i, 0, 6000000 - i, 6000000 FROM n;
                    """)
        }
        let jobsBefore = try db.allJobStates()
        // When history before the 50,000th minute is pruned
        let result = try db.pruneHistory(olderThan: Date(epochSeconds: 50_000 * 60))
        // Then the finished runs before it whose image was deleted went, with those images
        let expected = (1..<50_000).filter { $0 % 1000 != 5 && $0 % 10 != 0 }.count
        #expect(result == HistoryPruneResult(runs: expected, images: expected))
        let (runs, images) = try db.read { db in
            (
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM runs"),
                try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM images")
            )
        }
        #expect(runs == 100_000 - expected)
        #expect(images == 100_000 - 100 - expected)
        #expect(try db.allJobStates() == jobsBefore)
        #expect(db.healthCheck().isOK)
    }
}

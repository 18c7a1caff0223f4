import SnapcronCore
import Foundation
import GRDB

extension SnapcronDatabase {
    /// Removes history older than `cutoff`, in one transaction.
    ///
    /// First images `deleted` before `cutoff` (by `deletedAt`) and images `gone` whose state was last updated
    /// before it; then finished runs (every terminal state) that finished before `cutoff` (claimed before it, for a
    /// row without a finish time) and that no remaining image refers to. Unfinished runs, images in any other state
    /// and per-job state are never touched: `lastScheduledAt` keeps a pruned job's old fires from firing again.
    /// Times are whole seconds, `cutoff` rounded down.
    public func pruneHistory(olderThan cutoff: Date) throws -> HistoryPruneResult {
        try write { db in
            var counts = (images: 0, runs: 0)
            for sql in Self.pruneImagesSQL {
                try db.execute(sql: sql, arguments: [cutoff.epochSeconds])
                counts.images += db.changesCount
            }
            for sql in Self.pruneRunsSQL {
                try db.execute(sql: sql, arguments: [cutoff.epochSeconds])
                counts.runs += db.changesCount
            }
            return HistoryPruneResult(runs: counts.runs, images: counts.images)
        }
    }

    /// Each reads a partial index of its state by its time (v3).
    static let pruneImagesSQL = [
        "DELETE FROM images WHERE state = 'deleted' AND deleted_at < ?",
        "DELETE FROM images WHERE state = 'gone' AND updated_at < ?",
    ]

    /// Each reads runs_by_state_finished, one range per terminal state; images_by_run answers NOT EXISTS.
    static let pruneRunsSQL = [
        """
        DELETE FROM runs
        WHERE state IN ('succeeded', 'failed', 'timed_out', 'missed', 'skipped', 'cancelled') AND finished_at < ?
          AND NOT EXISTS (SELECT 1 FROM images WHERE images.run_id = runs.id)
        """,
        """
        DELETE FROM runs
        WHERE state IN ('succeeded', 'failed', 'timed_out', 'missed', 'skipped', 'cancelled')
          AND finished_at IS NULL AND claimed_at < ?
          AND NOT EXISTS (SELECT 1 FROM images WHERE images.run_id = runs.id)
        """,
    ]

    // MARK: - Clock steps

    /// Moves every job's `lastScheduledAt` that is later than `now` back to `now`, and returns those jobs' names.
    ///
    /// After the clock stepped forward and was then corrected, a last fire in the future would hold the job's next
    /// fire back until the clock caught up with it. Fires already recorded stay taken.
    public func clampLastScheduled(notAfter now: Date) throws -> [String] {
        try write { db in
            let names = try String.fetchAll(
                db, sql: "SELECT name FROM jobs WHERE last_scheduled_at > ? ORDER BY name",
                arguments: [now.epochSeconds])
            if !names.isEmpty {
                try db.execute(
                    sql: "UPDATE jobs SET last_scheduled_at = ?, updated_at = ? WHERE last_scheduled_at > ?",
                    arguments: [now.epochSeconds, now.epochSeconds, now.epochSeconds])
            }
            return names
        }
    }

    /// This store's installation id (made when the store was created), carried in image markers.
    public func installationID() throws -> String {
        try read { db in try String.fetchOne(db, sql: "SELECT id FROM installation WHERE only = 1") ?? "" }
    }

    /// The latest instant the store recorded as seen on the clock: when a run was claimed, a scheduled or catch-up
    /// fire (a shared skipped row's latest included), when an image was created. Nil for an empty store.
    ///
    /// Later than the clock at start-up means the clock went backwards since. Each part reads an index.
    public func latestRecordedInstant() throws -> Date? {
        try read { db in
            let latest = try [
                "SELECT MAX(claimed_at) FROM runs",
                "SELECT scheduled_at FROM runs WHERE trigger <> 'manual' ORDER BY scheduled_at DESC LIMIT 1",
                "SELECT MAX(repeated_until) FROM runs WHERE repeated_until IS NOT NULL",
                "SELECT MAX(created_at) FROM images",
            ].compactMap { sql in try Int64.fetchOne(db, sql: sql) }.max()
            return latest.map(Date.init(epochSeconds:))
        }
    }
}

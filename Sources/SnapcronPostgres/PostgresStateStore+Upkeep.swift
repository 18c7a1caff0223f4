import Foundation
import PostgresNIO
import SnapcronCore

extension PostgresStateStore: StateStore {
    // MARK: - Start-up

    public func allJobStates() async throws -> [JobStateRecord] {
        try await transaction { transaction in
            try await transaction.rows("SELECT * FROM jobs ORDER BY name COLLATE \"C\"").map(JobStateRecord.init(row:))
        }
    }

    public func pausedJobNames() async throws -> Set<String> {
        try await transaction(.readCommitted) { transaction in
            Set(try await transaction.rows("SELECT name FROM jobs WHERE paused").map { try $0.decode(String.self) })
        }
    }

    public func setPaused(name: String, _ paused: Bool, now: Date) async throws -> JobStateRecord {
        try await transaction { transaction in
            try JobStateRecord(
                row: try await transaction.rows(
                    """
                    INSERT INTO jobs (name, paused, updated_at) VALUES (\(name), \(paused), \(now.epochSeconds))
                    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at
                    RETURNING *
                    """)[0])
        }
    }

    /// The latest claim, scheduled or catch-up fire (a shared skipped row's latest included) or image creation.
    public func latestRecordedInstant() async throws -> Date? {
        try await transaction { transaction in
            let row = try await transaction.rows(
                """
                SELECT GREATEST(
                    (SELECT max(claimed_at) FROM runs),
                    (SELECT max(scheduled_at) FROM runs WHERE trigger <> 'manual'),
                    (SELECT max(repeated_until) FROM runs WHERE repeated_until IS NOT NULL),
                    (SELECT max(created_at) FROM images))
                """)[0]
            return try row.decode(Int64?.self).map(Date.init(epochSeconds:))
        }
    }

    public func targetsOfRunsEndedWithoutImage(since: Date) async throws -> [(backend: String, target: String)] {
        let pairs = try await transaction { transaction in
            try await transaction.rows(
                """
                SELECT DISTINCT backend COLLATE "C" AS backend, target COLLATE "C" AS target FROM runs
                WHERE state IN ('failed', 'timed_out', 'cancelled') AND finished_at >= \(since.epochSeconds)
                  AND image_id IS NULL AND started_at IS NOT NULL AND backend IS NOT NULL AND target IS NOT NULL
                ORDER BY 1, 2
                """
            ).map { row in try row.decode((String, String).self) }.map { Pair(backend: $0.0, target: $0.1) }
        }
        return pairs.map { ($0.backend, $0.target) }
    }

    public func recordHookResult(_ record: HookRecord) async throws {
        try await transaction { transaction in
            try await transaction.execute(
                """
                INSERT INTO hook_results (run_id, phase, hook_set, result, exit_status, duration_ms, finished_at)
                VALUES (\(record.runID), \(record.phase.rawValue), \(record.hookSet), \(record.result),
                        \(record.exitStatus), \(Int64(max(0, record.durationMs))), \(record.finishedAt.epochSeconds))
                """)
        }
    }

    public func installationID() async throws -> String {
        try await transaction { transaction in
            try await transaction.rows("SELECT id FROM installation WHERE singleton").first?.decode(String.self) ?? ""
        }
    }

    public func clampLastScheduled(notAfter now: Date) async throws -> [String] {
        try await transaction { transaction in
            try await transaction.rows(
                """
                UPDATE jobs SET last_scheduled_at = \(now.epochSeconds), updated_at = \(now.epochSeconds)
                WHERE last_scheduled_at > \(now.epochSeconds) RETURNING name
                """
            ).map { try $0.decode(String.self) }.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        }
    }

    // MARK: - Upkeep

    /// As SQLite's: deleted images by `deletedAt`, gone ones by their last update, then finished runs (by finish
    /// time, or claim time without one) that no remaining image refers to.
    public func pruneHistory(olderThan cutoff: Date) async throws -> HistoryPruneResult {
        try await transaction { transaction in
            let cutoff = cutoff.epochSeconds
            let images = try await transaction.rows(
                """
                DELETE FROM images WHERE (state = 'deleted' AND deleted_at < \(cutoff))
                    OR (state = 'gone' AND updated_at < \(cutoff))
                RETURNING 1
                """
            ).count
            let runs = try await transaction.rows(
                """
                DELETE FROM runs
                WHERE state IN ('succeeded', 'failed', 'timed_out', 'missed', 'skipped', 'cancelled')
                  AND COALESCE(finished_at, claimed_at) < \(cutoff)
                  AND NOT EXISTS (SELECT 1 FROM images WHERE images.run_id = runs.id)
                RETURNING 1
                """
            ).count
            return HistoryPruneResult(runs: runs, images: images)
        }
    }

    /// Whether the server answers and the schema is one this code knows.
    public func health() async -> StoreHealth {
        do {
            let version = try await transaction { transaction in
                try await transaction.rows("SELECT version FROM snapcron_schema").first?.decode(Int32.self)
            }
            guard let version, Int(version) <= PostgresSchema.latestVersion else {
                return StoreHealth(
                    isOK: false, message: "schema version \(version.map(String.init) ?? "missing") is not known")
            }
            return StoreHealth(isOK: true, message: "ok")
        } catch {
            return StoreHealth(isOK: false, message: "\(error)")
        }
    }
}

/// A (backend, target) pair carried out of a transaction.
private struct Pair: Sendable {
    var backend: String
    var target: String
}

import Foundation
import PostgresNIO
import SnapcronCore

/// The reads the control socket and the metrics make beside the run engine's.
extension PostgresStateStore {
    public func jobState(name: String) async throws -> JobStateRecord? {
        try await transaction { transaction in
            try await transaction.rows("SELECT * FROM jobs WHERE name = \(name)").first.map(JobStateRecord.init(row:))
        }
    }

    public func hookResults(runIDs: [Int64]) async throws -> [Int64: [HookRecord]] {
        guard !runIDs.isEmpty else { return [:] }
        return try await transaction { transaction in
            var results: [Int64: [HookRecord]] = [:]
            for row in try await transaction.rows(
                """
                SELECT run_id, phase, hook_set, result, exit_status, duration_ms, finished_at FROM hook_results
                WHERE run_id = ANY(\(runIDs)) ORDER BY seq
                """)
            {
                let row = row.makeRandomAccess()
                let record = HookRecord(
                    runID: try row.value("run_id"), phase: try row.enumValue("phase"),
                    hookSet: try row.value("hook_set"), result: try row.value("result"),
                    exitStatus: try row.value("exit_status", as: Int32?.self),
                    durationMs: Int(try row.value("duration_ms", as: Int64.self)),
                    finishedAt: try row.date("finished_at"))
                results[record.runID, default: []].append(record)
            }
            return results
        }
    }

    public func imageCensus(notAfter now: Date) async throws -> [ImageCensusRow] {
        try await transaction { transaction in
            try await transaction.rows(
                """
                SELECT job, state, count(*) AS count, COALESCE(sum(size_bytes), 0)::bigint AS bytes,
                       max(CASE WHEN created_at <= \(now.epochSeconds) THEN created_at END) AS newest
                FROM images WHERE state <> 'deleted'
                GROUP BY job, state
                """
            ).map { row in
                let row = row.makeRandomAccess()
                return ImageCensusRow(
                    job: try row.value("job"), state: try row.enumValue("state"),
                    count: Int(try row.value("count", as: Int64.self)), bytes: try row.value("bytes"),
                    newestCreatedAt: try row.optionalDate("newest"))
            }
        }
    }

    public func lastSuccessfulRunEnds(jobs: [String]) async throws -> [String: Date] {
        guard !jobs.isEmpty else { return [:] }
        return try await transaction { transaction in
            var result: [String: Date] = [:]
            for row in try await transaction.rows(
                """
                SELECT DISTINCT ON (job) job, finished_at FROM runs
                WHERE job = ANY(\(jobs)) AND state = 'succeeded' AND finished_at IS NOT NULL
                ORDER BY job, scheduled_at DESC
                """)
            {
                let row = row.makeRandomAccess()
                result[try row.value("job")] = try row.date("finished_at")
            }
            return result
        }
    }

    /// Nothing to do: PostgreSQL checkpoints its write-ahead log itself.
    public func checkpoint() async throws {}
}

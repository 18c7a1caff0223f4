import Foundation
import GRDB
import SnapcronCore

extension SnapcronDatabase {
    /// Images not deleted, counted by job and state, with their sizes and the newest creation time not after `now`.
    /// One pass over the live images (the `images_live` index), for the metrics.
    public func imageCensus(notAfter now: Date) throws -> [ImageCensusRow] {
        try read { db in
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: """
                    SELECT job, state, COUNT(*) AS count, COALESCE(SUM(size_bytes), 0) AS bytes,
                           MAX(CASE WHEN created_at <= ? THEN created_at END) AS newest
                    FROM images WHERE state <> 'deleted'
                    GROUP BY job, state
                    """), arguments: [now.epochSeconds])
            return try rows.compactMap { row in
                let stateText: String = try row.decode(forColumn: "state")
                guard let state = StoredImageState(rawValue: stateText) else { return nil }
                let newest: Int64? = try row.decode(forColumn: "newest")
                return ImageCensusRow(
                    job: try row.decode(forColumn: "job"), state: state, count: try row.decode(forColumn: "count"),
                    bytes: try row.decode(forColumn: "bytes"), newestCreatedAt: newest.map(Date.init(epochSeconds:)))
            }
        }
    }

    /// When each of `jobs`' newest succeeded run ended (jobs without one are left out). One indexed lookup per job
    /// (the (job, scheduled_at) key, newest first): the runs table holds the whole history.
    public func lastSuccessfulRunEnds(jobs: [String]) throws -> [String: Date] {
        try read { db in
            let statement = try db.cachedStatement(sql: """
                SELECT finished_at FROM runs
                WHERE job = ? AND state = 'succeeded' AND finished_at IS NOT NULL
                ORDER BY scheduled_at DESC LIMIT 1
                """)
            var result: [String: Date] = [:]
            for job in jobs {
                if let finished = try Int64.fetchOne(statement, arguments: [job]) {
                    result[job] = Date(epochSeconds: finished)
                }
            }
            return result
        }
    }
}

import Foundation
import GRDB
import SnapcronCore

extension SnapcronDatabase {
    /// The creation time of each job's newest ACTIVE image, by job (for `snapcronctl monitor`).
    public func newestActiveImageDates() throws -> [String: Date] {
        try newestActiveImageDates(notAfterSeconds: nil)
    }

    /// The creation time of each job's newest ACTIVE image created no later than `now`, by job.
    ///
    /// An image dated in the future (made while the clock was ahead) does not make its job look fresh.
    public func newestActiveImageDates(notAfter now: Date) throws -> [String: Date] {
        try newestActiveImageDates(notAfterSeconds: now.epochSeconds)
    }

    private func newestActiveImageDates(notAfterSeconds bound: Int64?) throws -> [String: Date] {
        try read { db in
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: """
                    SELECT job, MAX(created_at) AS newest FROM images
                    WHERE state = 'active' AND (? IS NULL OR created_at <= ?)
                    GROUP BY job
                    """), arguments: [bound, bound])
            var result: [String: Date] = [:]
            for row in rows {
                let job: String = try row.decode(forColumn: "job")
                let newest: Int64 = try row.decode(forColumn: "newest")
                result[job] = Date(epochSeconds: newest)
            }
            return result
        }
    }
}

import Foundation
import GRDB

extension SnapcronDatabase {
    /// The creation time of each job's newest ACTIVE image, by job (for `snapcronctl monitor`).
    public func newestActiveImageDates() throws -> [String: Date] {
        try read { db in
            let rows = try Row.fetchAll(
                db, sql: "SELECT job, MAX(created_at) AS newest FROM images WHERE state = 'active' GROUP BY job")
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

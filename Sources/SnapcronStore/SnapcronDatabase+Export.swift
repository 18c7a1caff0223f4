import Foundation
import GRDB
import SnapcronCore

extension SnapcronDatabase {
    /// Everything in the store, read in one transaction (a consistent copy even if a writer is busy).
    public func exportAll() throws -> StoreExport {
        try read { db in
            let runs = try Row.fetchAll(db, sql: "SELECT * FROM runs ORDER BY id").map(RunRecord.init(row:))
            let images = try Row.fetchAll(db, sql: "SELECT * FROM images ORDER BY created_at, backend, id").map {
                ExportedImage(record: try ImageRecord(row: $0), updatedAt: Date(epochSeconds: $0["updated_at"]))
            }
            let jobs = try Row.fetchAll(db, sql: "SELECT * FROM jobs ORDER BY name").map(JobStateRecord.init(row:))
            let hooks = try Row.fetchAll(
                db,
                sql: """
                    SELECT run_id, phase, hook_set, result, exit_status, duration_ms, finished_at FROM hook_results
                    ORDER BY rowid
                    """
            ).compactMap { row -> HookRecord? in
                guard let phase = HookPhase(rawValue: row["phase"]) else { return nil }
                return HookRecord(
                    runID: row["run_id"], phase: phase, hookSet: row["hook_set"], result: row["result"],
                    exitStatus: (row["exit_status"] as Int64?).map { Int32(truncatingIfNeeded: $0) },
                    durationMs: row["duration_ms"], finishedAt: Date(epochSeconds: row["finished_at"]))
            }
            let installation = try String.fetchOne(db, sql: "SELECT id FROM installation WHERE only = 1") ?? ""
            return StoreExport(installationID: installation, runs: runs, images: images, jobs: jobs, hookResults: hooks)
        }
    }
}

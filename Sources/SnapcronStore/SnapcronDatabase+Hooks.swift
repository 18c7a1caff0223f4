import Foundation
import GRDB
import SnapcronCore

extension SnapcronDatabase {
    /// Keeps how one hook command of a run ended. A run pruned from the history takes its hook results along.
    public func recordHookResult(_ record: HookRecord) throws {
        try write { db in
            try db.cachedStatement(sql: """
                    INSERT INTO hook_results (run_id, phase, hook_set, result, exit_status, duration_ms, finished_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """).execute(arguments: [
                    record.runID, record.phase.rawValue, record.hookSet, record.result, record.exitStatus.map { Int64($0) },
                    max(0, record.durationMs), record.finishedAt.epochSeconds,
                ])
        }
    }

    /// The hook results of these runs, each run's in the order they ended.
    public func hookResults(runIDs: [Int64]) throws -> [Int64: [HookRecord]] {
        guard !runIDs.isEmpty else { return [:] }
        return try read { db in
            var results: [Int64: [HookRecord]] = [:]
            for chunk in stride(from: 0, to: runIDs.count, by: 500).map({ Array(runIDs[$0..<min($0 + 500, runIDs.count)]) }) {
                let marks = Array(repeating: "?", count: chunk.count).joined(separator: ", ")
                let rows = try Row.fetchAll(
                    db,
                    sql: """
                        SELECT run_id, phase, hook_set, result, exit_status, duration_ms, finished_at FROM hook_results
                        WHERE run_id IN (\(marks)) ORDER BY rowid
                        """, arguments: StatementArguments(chunk))
                for row in rows {
                    guard let phase = HookPhase(rawValue: row["phase"]) else { continue }
                    let record = HookRecord(
                        runID: row["run_id"], phase: phase, hookSet: row["hook_set"], result: row["result"],
                        exitStatus: (row["exit_status"] as Int64?).map { Int32(truncatingIfNeeded: $0) },
                        durationMs: row["duration_ms"], finishedAt: Date(epochSeconds: row["finished_at"]))
                    results[record.runID, default: []].append(record)
                }
            }
            return results
        }
    }
}

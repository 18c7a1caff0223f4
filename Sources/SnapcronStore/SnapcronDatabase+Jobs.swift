import Foundation
import GRDB
import SnapcronCore

extension SnapcronDatabase {
    /// The stored state of job `name`; nil until it was claimed, missed, skipped or paused once.
    public func jobState(name: String) throws -> JobStateRecord? {
        try read { db in
            try Row.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM jobs WHERE name = ?"), arguments: [name])
                .map(JobStateRecord.init(row:))
        }
    }

    /// The states of all jobs the store knows, by name.
    public func allJobStates() throws -> [JobStateRecord] {
        try read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM jobs ORDER BY name")).map(JobStateRecord.init(row:))
        }
    }

    /// Pauses or resumes job `name`; survives restarts.
    @discardableResult
    public func pausedJobNames() throws -> Set<String> {
        try read { db in Set(try String.fetchAll(db, sql: "SELECT name FROM jobs WHERE paused")) }
    }

    public func setPaused(name: String, _ paused: Bool, now: Date) throws -> JobStateRecord {
        try write { db in
            try db.cachedStatement(sql: """
                    INSERT INTO jobs (name, paused, updated_at) VALUES (?, ?, ?)
                    ON CONFLICT (name) DO UPDATE SET paused = excluded.paused, updated_at = excluded.updated_at
                    """).execute(arguments: [name, paused, now.epochSeconds])
            return try Row.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM jobs WHERE name = ?"), arguments: [name])
                .map(JobStateRecord.init(row:))!
        }
    }

    /// The latest scheduled or catch-up fire of `job` that was claimed, missed or skipped.
    public func lastScheduledAt(job: String) throws -> Date? {
        try jobState(name: job)?.lastScheduledAt
    }

    /// Moves the job's last handled fire forward (never back: fires may be recorded out of order).
    func advanceLastScheduled(_ db: Database, job: String, to scheduledAt: Date, now: Date) throws {
        try db.cachedStatement(sql: """
                INSERT INTO jobs (name, paused, last_scheduled_at, updated_at) VALUES (?, 0, ?, ?)
                ON CONFLICT (name) DO UPDATE SET
                    last_scheduled_at = MAX(COALESCE(last_scheduled_at, excluded.last_scheduled_at),
                                            excluded.last_scheduled_at),
                    updated_at = excluded.updated_at
                """).execute(arguments: [job, scheduledAt.epochSeconds, now.epochSeconds])
    }
}

extension JobStateRecord {
    init(row: Row) throws {
        self.init(
            name: try row.decode(forColumn: "name"),
            paused: try row.decode(forColumn: "paused"),
            lastScheduledAt: try decodeDate(row, "last_scheduled_at"),
            updatedAt: Date(epochSeconds: try row.decode(forColumn: "updated_at")))
    }
}

import Foundation
import GRDB
import SnapcronCore

extension SnapcronDatabase {
    // MARK: - Claiming fires

    /// Claims the fire (`job`, `scheduledAt`) and fixes its image name; nil when it was already claimed.
    ///
    /// A fire is taken when a run of the job has that `scheduledAt`, or when it lies within a skipped row's span
    /// (from its `scheduledAt` to its `repeatedUntil`, see ``recordSkipped(job:scheduledAt:trigger:now:reason:)``).
    ///
    /// A scheduled or catch-up claim also advances the job's `lastScheduledAt`, in the same transaction.
    /// A manual claim does not: it is not a fire of the schedule. `scheduledAt` is stored in whole seconds.
    @discardableResult
    public func claimRun(
        job: String,
        scheduledAt: Date,
        trigger: RunTrigger,
        imageName: String,
        backend: String,
        target: String,
        now: Date
    ) throws -> RunRecord? {
        try write { db in
            try insertRun(
                db, job: job, scheduledAt: scheduledAt, trigger: trigger, state: .claimed,
                imageName: imageName, backend: backend, target: target, error: nil, now: now)
        }
    }

    /// One fire to claim in ``claimRuns(_:now:)``.
    public typealias Claim = RunClaim

    /// Claims many fires in one transaction (the scheduler's tick): the result has one entry per claim, nil where
    /// that fire was already claimed. Each claim behaves as ``claimRun(job:scheduledAt:trigger:imageName:backend:target:now:)``.
    public func claimRuns(_ claims: [Claim], now: Date) throws -> [RunRecord?] {
        guard !claims.isEmpty else { return [] }
        return try write { db in
            try claims.map { claim in
                try insertRun(
                    db, job: claim.job, scheduledAt: claim.scheduledAt, trigger: claim.trigger, state: .claimed,
                    imageName: claim.imageName, backend: claim.backend, target: claim.target, error: nil, now: now)
            }
        }
    }

    /// Records a fire that was not run because the daemon was down past its deadline; nil if already handled.
    ///
    /// The slot is claimed, so the fire is never run later.
    @discardableResult
    public func recordMissed(job: String, scheduledAt: Date, now: Date, reason: String) throws -> RunRecord? {
        try write { db in
            try insertRun(
                db, job: job, scheduledAt: scheduledAt, trigger: .schedule, state: .missed,
                imageName: nil, backend: nil, target: nil, error: reason, now: now)
        }
    }

    /// Records a fire skipped (by the overlap policy, or a paused job); nil if already handled.
    ///
    /// The slot is claimed, so the fire is never run later. Consecutive skips share one row: when the job's newest
    /// row is skipped with the same `reason` and `trigger`, and `scheduledAt` is later than every fire it stands
    /// for, that row is updated instead (`repeatCount` + 1, `repeatedUntil` = `scheduledAt`, `finishedAt` = `now`)
    /// and returned. Any other row in between, or another reason, starts a new row. A fire within a row's span is
    /// already handled (nil). Non-manual skips advance the job's `lastScheduledAt` either way, in the same
    /// transaction. To skip a run that is already claimed, use ``finishRun(runID:state:error:sizeBytes:now:)``
    /// with `.skipped`.
    @discardableResult
    public func recordSkipped(
        job: String,
        scheduledAt: Date,
        trigger: RunTrigger = .schedule,
        now: Date,
        reason: String
    ) throws -> RunRecord? {
        try write { db in
            let fire = scheduledAt.epochSeconds
            if let newest = try newestRun(db, job: job), newest.state == .skipped, newest.error == reason,
                newest.trigger == trigger, fire > (newest.repeatedUntil ?? newest.scheduledAt).epochSeconds
            {
                try db.cachedStatement(sql: """
                        UPDATE runs SET repeat_count = repeat_count + 1, repeated_until = ?, finished_at = ?
                        WHERE id = ?
                        """).execute(arguments: [fire, now.epochSeconds, newest.id])
                if trigger != .manual {
                    try advanceLastScheduled(db, job: job, to: scheduledAt, now: now)
                }
                return try fetchRun(db, id: newest.id)
            }
            return try insertRun(
                db, job: job, scheduledAt: scheduledAt, trigger: trigger, state: .skipped,
                imageName: nil, backend: nil, target: nil, error: reason, now: now)
        }
    }

    // MARK: - Run transitions

    /// Moves a run to `creating` before a create request, counting the attempt.
    ///
    /// Legal from `claimed` (first attempt or a retry) and from `creating` (a create resumed after a crash,
    /// which must reuse the run's image name).
    @discardableResult
    public func markCreating(runID: Int64, now: Date) throws -> RunRecord {
        try write { db in
            _ = try fetchRunForTransition(db, runID: runID, to: .creating)
            try db.cachedStatement(sql: """
                    UPDATE runs SET state = 'creating', attempts = attempts + 1,
                        started_at = COALESCE(started_at, ?), next_poll_at = NULL
                    WHERE id = ?
                    """).execute(arguments: [now.epochSeconds, runID])
            return try fetchRun(db, id: runID)!
        }
    }

    /// Moves many runs to `creating` in one transaction (the scheduler's tick). A run that may not move (gone,
    /// or in another state) is left as it is and gets nil; the others move as with ``markCreating(runID:now:)``.
    public func markCreating(runIDs: [Int64], now: Date) throws -> [RunRecord?] {
        guard !runIDs.isEmpty else { return [] }
        return try write { db in
            try runIDs.map { runID in
                guard var run = try fetchRun(db, id: runID), run.state.allowsTransition(to: .creating) else {
                    return nil
                }
                try db.cachedStatement(sql: """
                        UPDATE runs SET state = 'creating', attempts = attempts + 1,
                            started_at = COALESCE(started_at, ?), next_poll_at = NULL
                        WHERE id = ?
                        """).execute(arguments: [now.epochSeconds, runID])
                // What the row now holds, without reading it back.
                run.state = .creating
                run.attempts += 1
                run.startedAt = run.startedAt ?? Date(timeIntervalSince1970: TimeInterval(now.epochSeconds))
                run.nextPollAt = nil
                return run
            }
        }
    }

    /// Records the image id the backend returned, moves the run to `waiting` and inserts the image (queued).
    @discardableResult
    public func markWaiting(
        runID: Int64,
        imageID: String,
        description: String? = nil,
        now: Date,
        nextPollAt: Date
    ) throws -> RunRecord {
        try write { db in
            let run = try fetchRunForTransition(db, runID: runID, to: .waiting)
            // A claimed or creating run always has these (CHECK constraint on runs).
            let (backend, target, name) = (run.backend!, run.target!, run.imageName!)
            if let existing = try fetchImage(db, id: imageID, backend: backend) {
                let owner = existing.runID.map { "run \($0)" } ?? "no run"
                throw SnapcronStoreError(
                    .conflict, "image \(imageID) at backend \(backend) is already recorded for \(owner)")
            }
            try db.cachedStatement(sql: """
                    UPDATE runs SET state = 'waiting', image_id = ?, next_poll_at = ?, error = NULL
                    WHERE id = ?
                    """).execute(arguments: [imageID, nextPollAt.epochSeconds, runID])
            try db.cachedStatement(sql: """
                    INSERT INTO images (backend, id, job, target, name, description, created_at, updated_at, state,
                                        pinned, run_id)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?)
                    """).execute(arguments: [
                    backend, imageID, run.job, target, name, description, now.epochSeconds, now.epochSeconds, runID,
                ])
            return try fetchRun(db, id: runID)!
        }
    }

    /// Records one poll of a `waiting` run: the image's state (and size, when known) and the next poll time.
    ///
    /// An image being deleted or deleted keeps its state (the poll raced the delete); only the run is updated.
    ///
    /// Finishing the run is a separate call (``finishRun(runID:state:error:now:)``).
    @discardableResult
    public func updatePoll(
        runID: Int64,
        imageState: StoredImageState,
        sizeBytes: Int64? = nil,
        nextPollAt: Date?,
        now: Date
    ) throws -> RunRecord {
        guard imageState != .deleted, imageState != .deleting else {
            throw SnapcronStoreError(
                .invalidArgument, "a poll cannot report an image as \(imageState.rawValue) (run \(runID))")
        }
        return try write { db in
            guard let run = try fetchRun(db, id: runID) else { throw Self.runNotFound(runID) }
            guard run.state == .waiting else {
                throw Self.illegalTransition(run, to: .waiting, because: "only a waiting run is polled")
            }
            // A delete under way or done is not undone by a poll that raced it.
            try db.cachedStatement(sql: """
                    UPDATE images SET state = ?, size_bytes = COALESCE(?, size_bytes), updated_at = ?
                    WHERE backend = ? AND id = ? AND state NOT IN ('deleting', 'deleted')
                    """).execute(arguments: [imageState.rawValue, sizeBytes, now.epochSeconds, run.backend, run.imageID])
            try db.cachedStatement(sql: "UPDATE runs SET next_poll_at = ? WHERE id = ?").execute(arguments: [nextPollAt?.epochSeconds, runID])
            return try fetchRun(db, id: runID)!
        }
    }

    /// Moves a run to the terminal `state`; a `succeeded` run's image becomes active (with its size, when known),
    /// a `failed` one's error.
    @discardableResult
    public func finishRun(
        runID: Int64, state: RunState, error: String?, sizeBytes: Int64? = nil, now: Date
    ) throws -> RunRecord {
        if let sizeBytes, sizeBytes < 0 {
            throw SnapcronStoreError(.invalidArgument, "image size must not be negative (run \(runID): \(sizeBytes))")
        }
        guard state.isTerminal else {
            throw SnapcronStoreError(.invalidArgument, "finishRun needs a terminal state, not \(state.rawValue)")
        }
        return try write { db in
            let run = try fetchRunForTransition(db, runID: runID, to: state)
            try db.cachedStatement(sql: """
                    UPDATE runs SET state = ?, error = ?, finished_at = ?, next_poll_at = NULL
                    WHERE id = ?
                    """).execute(arguments: [state.rawValue, error, now.epochSeconds, runID])
            if let imageID = run.imageID, let backend = run.backend {
                if let imageState = state.imageStateWhenRunEnds {
                    try db.cachedStatement(sql: """
                            UPDATE images SET state = ?, size_bytes = COALESCE(?, size_bytes), updated_at = ?
                            WHERE backend = ? AND id = ? AND state NOT IN ('gone', 'deleting', 'deleted')
                            """).execute(arguments: [imageState.rawValue, sizeBytes, now.epochSeconds, backend, imageID])
                }
            }
            return try fetchRun(db, id: runID)!
        }
    }

    /// Records a transient failure and when to try again.
    ///
    /// From `creating` the run returns to `claimed` (the next ``markCreating(runID:now:)`` retries with the
    /// same image name); from `waiting` it stays there and `nextAttemptAt` is its next poll.
    @discardableResult
    public func recordRetryableFailure(runID: Int64, error: String, nextAttemptAt: Date) throws -> RunRecord {
        try write { db in
            guard let run = try fetchRun(db, id: runID) else { throw Self.runNotFound(runID) }
            let next: RunState =
                switch run.state {
                case .creating: .claimed
                case .waiting: .waiting
                default:
                    throw Self.illegalTransition(run, to: .claimed, because: "only a create or a poll can be retried")
                }
            try db.cachedStatement(sql: "UPDATE runs SET state = ?, error = ?, next_poll_at = ? WHERE id = ?").execute(arguments: [next.rawValue, error, nextAttemptAt.epochSeconds, runID])
            return try fetchRun(db, id: runID)!
        }
    }

    // MARK: - Queries

    /// The run with `id`, if any.
    public func run(id: Int64) throws -> RunRecord? {
        try read { db in try fetchRun(db, id: id) }
    }

    /// The run of the fire (`job`, `scheduledAt`), if any: one row at most (UNIQUE (job, scheduled_at)).
    public func run(job: String, scheduledAt: Date) throws -> RunRecord? {
        try read { db in
            try fetchRuns(
                db, sql: "SELECT * FROM runs WHERE job = ? AND scheduled_at = ?",
                arguments: [job, scheduledAt.epochSeconds]
            ).first
        }
    }

    /// Runs a restarted daemon must resume (claimed, creating, waiting), oldest first.
    public func unfinishedRuns() throws -> [RunRecord] {
        try read { db in
            try fetchRuns(db, sql: "SELECT * FROM runs WHERE state IN ('claimed', 'creating', 'waiting') ORDER BY id")
        }
    }

    /// The unfinished runs of one job, oldest first (for the overlap policy).
    public func unfinishedRuns(job: String) throws -> [RunRecord] {
        try read { db in
            try fetchRuns(
                db,
                sql: "SELECT * FROM runs WHERE job = ? AND state IN ('claimed', 'creating', 'waiting') ORDER BY id",
                arguments: [job])
        }
    }

    /// How many unfinished runs use `target`, not counting run `excluding` (the run being checked).
    public func runningCount(target: String, excluding runID: Int64? = nil) throws -> Int {
        try read { db in
            try Int.fetchOne(
                db.cachedStatement(sql: """
                    SELECT COUNT(*) FROM runs
                    WHERE state IN ('claimed', 'creating', 'waiting') AND target = ? AND id IS NOT ?
                    """), arguments: [target, runID]) ?? 0
        }
    }

    /// Run history, newest fire first, optionally filtered by job, state and earliest fire time.
    public func runs(job: String? = nil, state: RunState? = nil, since: Date? = nil, limit: Int = 100) throws
        -> [RunRecord]
    {
        var conditions: [String] = []
        var arguments: StatementArguments = []
        if let job {
            conditions.append("job = ?")
            arguments += [job]
        }
        if let state {
            conditions.append("state = ?")
            arguments += [state.rawValue]
        }
        if let since {
            conditions.append("scheduled_at >= ?")
            arguments += [since.epochSeconds]
        }
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        arguments += [max(limit, 0)]
        let sql = "SELECT * FROM runs \(filter) ORDER BY scheduled_at DESC, id DESC LIMIT ?"
        return try read { db in try fetchRuns(db, sql: sql, arguments: arguments) }
    }

    /// The most recently finished failed or timed-out run (for the status line).
    public func lastFailure() throws -> RunRecord? {
        // Prepared once per connection: `status` asks on every call.
        try read { db in
            let statement = try db.cachedStatement(
                sql: """
                    SELECT * FROM runs WHERE state IN ('failed', 'timed_out')
                    ORDER BY finished_at DESC, id DESC LIMIT 1
                    """)
            return try Row.fetchOne(statement).map(RunRecord.init(row:))
        }
    }

    // MARK: - Helpers

    /// The run of `job` whose fires end latest: the highest `scheduledAt`, or a skipped row's `repeatedUntil`.
    private func newestRun(_ db: Database, job: String) throws -> RunRecord? {
        let byFire = try fetchRuns(
            db, sql: "SELECT * FROM runs WHERE job = ? ORDER BY scheduled_at DESC LIMIT 1", arguments: [job]
        ).first
        let bySpan = try fetchRuns(
            db,
            sql: """
                SELECT * FROM runs WHERE job = ? AND repeated_until IS NOT NULL
                ORDER BY repeated_until DESC LIMIT 1
                """,
            arguments: [job]
        ).first
        guard let bySpan, let byFire else { return byFire ?? bySpan }
        return bySpan.repeatedUntil! > byFire.scheduledAt ? bySpan : byFire
    }

    /// Inserts a run unless its fire is taken; advances the job's last handled fire for non-manual triggers.
    ///
    /// Taken: a run of the job has that fire time, or a skipped row's span covers it.
    private func insertRun(
        _ db: Database,
        job: String,
        scheduledAt: Date,
        trigger: RunTrigger,
        state: RunState,
        imageName: String?,
        backend: String?,
        target: String?,
        error: String?,
        now: Date
    ) throws -> RunRecord? {
        let finishedAt = state.isTerminal ? now.epochSeconds : nil
        let covered = try Bool.fetchOne(
            db.cachedStatement(sql: """
                SELECT 1 FROM runs WHERE job = ? AND repeated_until >= ? AND scheduled_at <= ? LIMIT 1
                """), arguments: [job, scheduledAt.epochSeconds, scheduledAt.epochSeconds]) ?? false
        if covered { return nil }
        try db.cachedStatement(sql: """
                INSERT INTO runs (job, scheduled_at, trigger, state, attempts, image_name, backend, target,
                                  claimed_at, finished_at, error)
                VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (job, scheduled_at) DO NOTHING
                """).execute(arguments: [
                job, scheduledAt.epochSeconds, trigger.rawValue, state.rawValue, imageName, backend, target,
                now.epochSeconds, finishedAt, error,
            ])
        guard db.changesCount == 1 else { return nil }
        let id = db.lastInsertedRowID
        if trigger != .manual {
            try advanceLastScheduled(db, job: job, to: scheduledAt, now: now)
        }
        return try fetchRun(db, id: id)
    }

    /// Loads a run and checks that it may move to `next`; throws (so the transaction rolls back) otherwise.
    private func fetchRunForTransition(_ db: Database, runID: Int64, to next: RunState) throws -> RunRecord {
        guard let run = try fetchRun(db, id: runID) else { throw Self.runNotFound(runID) }
        guard run.state.allowsTransition(to: next) else { throw Self.illegalTransition(run, to: next) }
        return run
    }

    func fetchRun(_ db: Database, id: Int64) throws -> RunRecord? {
        try fetchRuns(db, sql: "SELECT * FROM runs WHERE id = ?", arguments: [id]).first
    }

    private func fetchRuns(_ db: Database, sql: String, arguments: StatementArguments = []) throws -> [RunRecord] {
        try Row.fetchAll(
                db.cachedStatement(sql: sql), arguments: arguments).map(RunRecord.init(row:))
    }

    static func runNotFound(_ id: Int64, file: String = #fileID, line: Int = #line) -> SnapcronStoreError {
        SnapcronStoreError(.runNotFound, "run \(id) does not exist", file: file, line: line)
    }

    static func illegalTransition(
        _ run: RunRecord,
        to next: RunState,
        because reason: String? = nil,
        file: String = #fileID,
        line: Int = #line
    ) -> SnapcronStoreError {
        let message = "run \(run.id) of job \(run.job) cannot go from \(run.state.rawValue) to \(next.rawValue)"
        return SnapcronStoreError(
            .illegalTransition, reason.map { "\(message): \($0)" } ?? message, file: file, line: line)
    }
}

extension RunRecord {
    /// Decodes a `runs` row; an unknown state or trigger is reported as corruption, never trapped on.
    init(row: Row) throws {
        self.init(
            id: try row.decode(forColumn: "id"),
            job: try row.decode(forColumn: "job"),
            scheduledAt: Date(epochSeconds: try row.decode(forColumn: "scheduled_at")),
            trigger: try decodeEnum(row, "trigger"),
            state: try decodeEnum(row, "state"),
            attempts: try row.decode(forColumn: "attempts"),
            imageName: try row.decode(forColumn: "image_name"),
            imageID: try row.decode(forColumn: "image_id"),
            backend: try row.decode(forColumn: "backend"),
            target: try row.decode(forColumn: "target"),
            claimedAt: Date(epochSeconds: try row.decode(forColumn: "claimed_at")),
            startedAt: try decodeDate(row, "started_at"),
            finishedAt: try decodeDate(row, "finished_at"),
            nextPollAt: try decodeDate(row, "next_poll_at"),
            error: try row.decode(forColumn: "error"),
            repeatCount: try row.decode(forColumn: "repeat_count"),
            repeatedUntil: try decodeDate(row, "repeated_until"))
    }
}

/// Decodes a nullable epoch-seconds column.
func decodeDate(_ row: Row, _ column: String) throws -> Date? {
    let seconds: Int64? = try row.decode(forColumn: column)
    return seconds.map(Date.init(epochSeconds:))
}

/// Decodes a TEXT column into one of the store's enums.
func decodeEnum<E: RawRepresentable>(_ row: Row, _ column: String) throws -> E where E.RawValue == String {
    let raw: String = try row.decode(forColumn: column)
    guard let value = E(rawValue: raw) else {
        throw SnapcronStoreError(.corruptDatabase, "unknown \(column) '\(raw)' in the state database")
    }
    return value
}

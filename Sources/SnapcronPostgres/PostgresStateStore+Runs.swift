import Foundation
import PostgresNIO
import SnapcronCore

extension PostgresStateStore {
    // MARK: - Fires

    /// One statement claims the whole batch (arrays unnested in claim order), one more advances the jobs' last
    /// handled fires: two round trips whatever the batch size. Within a batch the first claim of a fire wins.
    public func claimRuns(_ claims: [RunClaim], now: Date) async throws -> [RunRecord?] {
        guard !claims.isEmpty else { return [] }
        let owner = ownerForClaims
        return try await transaction(.readCommitted) { transaction in
            try await transaction.lockFires(of: claims.map(\.job))
            let inserted = try await transaction.runs(
                """
                INSERT INTO runs (job, scheduled_at, trigger, state, attempts, image_name, backend, target, claimed_at,
                                  owner_node, owner_epoch)
                SELECT claim.job, claim.scheduled_at, claim.trigger, 'claimed', 0, claim.image_name, claim.backend,
                       claim.target, \(now.epochSeconds), \(owner.node)::text, \(owner.epoch)::int8
                FROM unnest(\(claims.map(\.job))::text[], \(claims.map(\.scheduledAt.epochSeconds))::int8[],
                            \(claims.map(\.trigger.rawValue))::text[], \(claims.map(\.imageName))::text[],
                            \(claims.map(\.backend))::text[], \(claims.map(\.target))::text[])
                     WITH ORDINALITY AS claim (job, scheduled_at, trigger, image_name, backend, target, position)
                WHERE NOT EXISTS (
                    SELECT 1 FROM runs WHERE runs.job = claim.job AND runs.repeated_until >= claim.scheduled_at
                      AND runs.scheduled_at <= claim.scheduled_at)
                ORDER BY claim.position
                ON CONFLICT (job, scheduled_at) DO NOTHING
                RETURNING \(unescaped: runColumns)
                """)
            let scheduled = inserted.filter { $0.trigger != .manual }
            if !scheduled.isEmpty {
                try await transaction.execute(
                    """
                    INSERT INTO jobs (name, paused, last_scheduled_at, updated_at)
                    SELECT fire.job, FALSE, max(fire.scheduled_at), \(now.epochSeconds)
                    FROM unnest(\(scheduled.map(\.job))::text[], \(scheduled.map(\.scheduledAt.epochSeconds))::int8[])
                         AS fire (job, scheduled_at)
                    GROUP BY fire.job
                    ON CONFLICT (name) DO UPDATE SET
                        last_scheduled_at = GREATEST(jobs.last_scheduled_at, excluded.last_scheduled_at),
                        updated_at = excluded.updated_at
                    """)
            }
            // Each inserted row answers the first claim of its fire; later claims of it in the batch get nil.
            var byFire: [FireKey: RunRecord] = [:]
            for run in inserted { byFire[FireKey(job: run.job, scheduledAt: run.scheduledAt)] = run }
            return claims.map { claim in
                let fire = Date(epochSeconds: claim.scheduledAt.epochSeconds)
                return byFire.removeValue(forKey: FireKey(job: claim.job, scheduledAt: fire))
            }
        }
    }

    public func recordMissed(job: String, scheduledAt: Date, now: Date, reason: String) async throws -> RunRecord? {
        try await transaction(.readCommitted) { [self] transaction in
            try await transaction.lockFires(of: [job])
            return try await insertRun(
                transaction, job: job, scheduledAt: scheduledAt, trigger: .schedule, state: .missed, imageName: nil,
                backend: nil, target: nil, error: reason, now: now)
        }
    }

    /// As SQLite's: consecutive skips of a job for one reason and trigger share the job's newest row, when the fire
    /// is later than every fire that row stands for; a fire within a row's span is already handled (nil).
    public func recordSkipped(job: String, scheduledAt: Date, trigger: RunTrigger, now: Date, reason: String)
        async throws -> RunRecord?
    {
        try await transaction(.readCommitted) { [self] transaction in
            try await transaction.lockFires(of: [job])
            let fire = scheduledAt.epochSeconds
            if let newest = try await newestRun(transaction, job: job), newest.state == .skipped,
                newest.error == reason, newest.trigger == trigger,
                fire > (newest.repeatedUntil ?? newest.scheduledAt).epochSeconds
            {
                let updated = try await transaction.runs(
                    """
                    UPDATE runs SET repeat_count = repeat_count + 1, repeated_until = \(fire),
                        finished_at = \(now.epochSeconds)
                    WHERE id = \(newest.id) RETURNING \(unescaped: runColumns)
                    """)
                if trigger != .manual {
                    try await advanceLastScheduled(transaction, job: job, to: scheduledAt, now: now)
                }
                return updated.first
            }
            return try await insertRun(
                transaction, job: job, scheduledAt: scheduledAt, trigger: trigger, state: .skipped, imageName: nil,
                backend: nil, target: nil, error: reason, now: now)
        }
    }

    // MARK: - Run transitions

    public func markCreating(runIDs: [Int64], now: Date) async throws -> [RunRecord?] {
        guard !runIDs.isEmpty else { return [] }
        // One statement for the batch (a tick starts thousands of creates at a busy minute): one round trip per run
        // cost 0.57 ms a run on loopback. Runs in another state (ended meanwhile) are left alone and answer nil.
        // In a cluster, only runs this node holds move: a run taken over meanwhile answers nil, never a create.
        let owner = ownerForClaims
        let moved = try await transaction { [self] transaction in
            try await fenceNode(transaction)
            return try await transaction.runs(
                """
                UPDATE runs SET state = 'creating', attempts = attempts + 1,
                    started_at = COALESCE(started_at, \(now.epochSeconds)), next_poll_at = NULL
                WHERE id = ANY(\(runIDs)) AND state IN ('claimed', 'creating')
                  AND owner_node IS NOT DISTINCT FROM \(owner.node)::text
                  AND owner_epoch IS NOT DISTINCT FROM \(owner.epoch)::int8
                RETURNING \(unescaped: runColumns)
                """)
        }
        let byID = Dictionary(moved.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        return runIDs.map { byID[$0] }
    }

    public func markWaiting(runID: Int64, imageID: String, description: String?, now: Date, nextPollAt: Date)
        async throws -> RunRecord
    {
        try await transaction { [self] transaction in
            let run = try await fetchRunForTransition(transaction, runID: runID, to: .waiting)
            // A claimed or creating run always has these (CHECK constraint on runs).
            let (backend, target, name) = (run.backend!, run.target!, run.imageName!)
            if let existing = try await fetchImage(transaction, id: imageID, backend: backend) {
                let owner = existing.runID.map { "run \($0)" } ?? "no run"
                throw PostgresStoreError(
                    .conflict, "image \(imageID) at backend \(backend) is already recorded for \(owner)")
            }
            let updated = try await transaction.runs(
                """
                UPDATE runs SET state = 'waiting', image_id = \(imageID), next_poll_at = \(nextPollAt.epochSeconds),
                    error = NULL
                WHERE id = \(runID) RETURNING \(unescaped: runColumns)
                """)
            try await transaction.execute(
                """
                INSERT INTO images (backend, id, job, target, name, description, created_at, updated_at, state,
                                    pinned, run_id)
                VALUES (\(backend), \(imageID), \(run.job), \(target), \(name), \(description), \(now.epochSeconds),
                        \(now.epochSeconds), 'queued', FALSE, \(runID))
                """)
            return updated[0]
        }
    }

    public func updatePoll(
        runID: Int64, imageState: StoredImageState, sizeBytes: Int64?, nextPollAt: Date?, now: Date
    ) async throws -> RunRecord {
        guard imageState != .deleted, imageState != .deleting else {
            throw PostgresStoreError(
                .invalidArgument, "a poll cannot report an image as \(imageState.rawValue) (run \(runID))")
        }
        return try await transaction { [self] transaction in
            guard let run = try await fetchRun(transaction, id: runID) else { throw Self.runNotFound(runID) }
            try await fence(transaction, runID: runID)
            guard run.state == .waiting else {
                throw Self.illegalTransition(run, to: .waiting, because: "only a waiting run is polled")
            }
            // A delete under way or done is not undone by a poll that raced it.
            try await transaction.execute(
                """
                UPDATE images SET state = \(imageState.rawValue), size_bytes = COALESCE(\(sizeBytes), size_bytes),
                    updated_at = \(now.epochSeconds)
                WHERE backend = \(run.backend) AND id = \(run.imageID) AND state NOT IN ('deleting', 'deleted')
                """)
            return try await transaction.runs(
                """
                UPDATE runs SET next_poll_at = \(nextPollAt?.epochSeconds) WHERE id = \(runID)
                RETURNING \(unescaped: runColumns)
                """)[0]
        }
    }

    public func finishRun(runID: Int64, state: RunState, error: String?, sizeBytes: Int64?, now: Date) async throws
        -> RunRecord
    {
        if let sizeBytes, sizeBytes < 0 {
            throw PostgresStoreError(.invalidArgument, "image size must not be negative (run \(runID): \(sizeBytes))")
        }
        guard state.isTerminal else {
            throw PostgresStoreError(.invalidArgument, "finishRun needs a terminal state, not \(state.rawValue)")
        }
        return try await transaction { [self] transaction in
            let run = try await fetchRunForTransition(transaction, runID: runID, to: state)
            let finished = try await transaction.runs(
                """
                UPDATE runs SET state = \(state.rawValue), error = \(error), finished_at = \(now.epochSeconds),
                    next_poll_at = NULL
                WHERE id = \(runID) RETURNING \(unescaped: runColumns)
                """)
            if let imageID = run.imageID, let backend = run.backend {
                if let imageState = state.imageStateWhenRunEnds {
                    try await transaction.execute(
                        """
                        UPDATE images SET state = \(imageState.rawValue),
                            size_bytes = COALESCE(\(sizeBytes), size_bytes), updated_at = \(now.epochSeconds)
                        WHERE backend = \(backend) AND id = \(imageID) AND state NOT IN ('gone', 'deleting', 'deleted')
                        """)
                }
            }
            return finished[0]
        }
    }

    public func recordRetryableFailure(runID: Int64, error: String, nextAttemptAt: Date) async throws -> RunRecord {
        try await transaction { [self] transaction in
            guard let run = try await fetchRun(transaction, id: runID) else { throw Self.runNotFound(runID) }
            try await fence(transaction, runID: runID)
            let next: RunState =
                switch run.state {
                case .creating: .claimed
                case .waiting: .waiting
                default:
                    throw Self.illegalTransition(run, to: .claimed, because: "only a create or a poll can be retried")
                }
            return try await transaction.runs(
                """
                UPDATE runs SET state = \(next.rawValue), error = \(error), next_poll_at = \(nextAttemptAt.epochSeconds)
                WHERE id = \(runID) RETURNING \(unescaped: runColumns)
                """)[0]
        }
    }

    public func adoptImage(runID: Int64, imageID: String, description: String?, now: Date) async throws -> RunRecord {
        try await transaction { [self] transaction in
            guard let run = try await fetchRun(transaction, id: runID) else { throw Self.runNotFound(runID) }
            guard [.failed, .timedOut, .cancelled].contains(run.state) else {
                throw PostgresStoreError(
                    .illegalTransition,
                    "run \(runID) of job \(run.job) is \(run.state.rawValue); only a failed, timed-out or cancelled "
                        + "run can adopt image \(imageID)")
            }
            if let existing = run.imageID {
                throw PostgresStoreError(
                    .illegalTransition, "run \(runID) of job \(run.job) already has image \(existing)")
            }
            let (backend, target, name) = (run.backend!, run.target!, run.imageName!)
            if let existing = try await fetchImage(transaction, id: imageID, backend: backend) {
                let owner = existing.runID.map { "run \($0)" } ?? "no run"
                throw PostgresStoreError(
                    .conflict, "image \(imageID) at backend \(backend) is already recorded for \(owner)")
            }
            let adopted = try await transaction.runs(
                "UPDATE runs SET image_id = \(imageID) WHERE id = \(runID) RETURNING \(unescaped: runColumns)")
            let createdAt = (run.startedAt ?? run.claimedAt).epochSeconds
            try await transaction.execute(
                """
                INSERT INTO images (backend, id, job, target, name, description, created_at, updated_at, state,
                                    pinned, run_id)
                VALUES (\(backend), \(imageID), \(run.job), \(target), \(name), \(description), \(createdAt),
                        \(now.epochSeconds), 'queued', FALSE, \(runID))
                """)
            return adopted[0]
        }
    }

    // MARK: - Queries

    public func run(id: Int64) async throws -> RunRecord? {
        try await transaction { [self] transaction in try await fetchRun(transaction, id: id, forUpdate: false) }
    }

    public func run(job: String, scheduledAt: Date) async throws -> RunRecord? {
        try await transaction { transaction in
            try await transaction.runs(
                """
                SELECT \(unescaped: runColumns) FROM runs
                WHERE job = \(job) AND scheduled_at = \(scheduledAt.epochSeconds)
                """
            ).first
        }
    }

    /// In a cluster: the runs this node takes over (its own of an earlier epoch, and those of lapsed nodes); the
    /// runs of live nodes are theirs.
    public func unfinishedRuns() async throws -> [RunRecord] {
        if membership != nil { return try await takeOverRuns() }
        return try await transaction { transaction in
            try await transaction.runs(
                """
                SELECT \(unescaped: runColumns) FROM runs WHERE state IN ('claimed', 'creating', 'waiting') ORDER BY id
                """)
        }
    }

    public func runs(job: String?, state: RunState?, since: Date?, limit: Int) async throws -> [RunRecord] {
        try await transaction { transaction in
            try await transaction.runs(
                """
                SELECT \(unescaped: runColumns) FROM runs
                WHERE (\(job)::text IS NULL OR job = \(job))
                  AND (\(state?.rawValue)::text IS NULL OR state = \(state?.rawValue))
                  AND (\(since?.epochSeconds)::bigint IS NULL OR scheduled_at >= \(since?.epochSeconds))
                ORDER BY scheduled_at DESC, id DESC LIMIT \(Int64(max(limit, 0)))
                """)
        }
    }

    public func lastFailure() async throws -> RunRecord? {
        try await transaction { transaction in
            try await transaction.runs(
                """
                SELECT \(unescaped: runColumns) FROM runs WHERE state IN ('failed', 'timed_out')
                ORDER BY finished_at DESC NULLS LAST, id DESC LIMIT 1
                """
            ).first
        }
    }

    // MARK: - Helpers

    /// The run of `job` whose fires end latest: the highest `scheduledAt`, or a skipped row's `repeatedUntil`.
    private func newestRun(_ transaction: Transaction, job: String) async throws -> RunRecord? {
        let byFire = try await transaction.runs(
            "SELECT \(unescaped: runColumns) FROM runs WHERE job = \(job) ORDER BY scheduled_at DESC LIMIT 1"
        ).first
        let bySpan = try await transaction.runs(
            """
            SELECT \(unescaped: runColumns) FROM runs WHERE job = \(job) AND repeated_until IS NOT NULL
            ORDER BY repeated_until DESC LIMIT 1
            """
        ).first
        guard let bySpan, let byFire else { return byFire ?? bySpan }
        return bySpan.repeatedUntil! > byFire.scheduledAt ? bySpan : byFire
    }

    /// Inserts a run unless its fire is taken (a run of the job has that fire time, or a skipped row's span covers
    /// it); advances the job's last handled fire for non-manual triggers. One statement claims: the UNIQUE index
    /// decides between nodes claiming the same fire together.
    private func insertRun(
        _ transaction: Transaction, job: String, scheduledAt: Date, trigger: RunTrigger, state: RunState,
        imageName: String?, backend: String?, target: String?, error: String?, now: Date
    ) async throws -> RunRecord? {
        let fire = scheduledAt.epochSeconds
        let finishedAt = state.isTerminal ? now.epochSeconds : nil
        let inserted = try await transaction.runs(
            """
            INSERT INTO runs (job, scheduled_at, trigger, state, attempts, image_name, backend, target, claimed_at,
                              finished_at, error)
            SELECT \(job), \(fire), \(trigger.rawValue), \(state.rawValue), 0, \(imageName), \(backend), \(target),
                   \(now.epochSeconds), \(finishedAt), \(error)
            WHERE NOT EXISTS (
                SELECT 1 FROM runs WHERE job = \(job) AND repeated_until >= \(fire) AND scheduled_at <= \(fire))
            ON CONFLICT (job, scheduled_at) DO NOTHING
            RETURNING \(unescaped: runColumns)
            """)
        guard let run = inserted.first else { return nil }
        if trigger != .manual {
            try await advanceLastScheduled(transaction, job: job, to: scheduledAt, now: now)
        }
        return run
    }

    /// Moves the job's last handled fire forward (never back: fires may be recorded out of order).
    func advanceLastScheduled(_ transaction: Transaction, job: String, to scheduledAt: Date, now: Date) async throws {
        try await transaction.execute(
            """
            INSERT INTO jobs (name, paused, last_scheduled_at, updated_at)
            VALUES (\(job), FALSE, \(scheduledAt.epochSeconds), \(now.epochSeconds))
            ON CONFLICT (name) DO UPDATE SET
                last_scheduled_at = GREATEST(jobs.last_scheduled_at, excluded.last_scheduled_at),
                updated_at = excluded.updated_at
            """)
    }

    /// Loads a run (locking its row) and checks that it may move to `next`; throws, so the transaction rolls back,
    /// otherwise.
    private func fetchRunForTransition(_ transaction: Transaction, runID: Int64, to next: RunState) async throws
        -> RunRecord
    {
        guard let run = try await fetchRun(transaction, id: runID) else { throw Self.runNotFound(runID) }
        try await fence(transaction, runID: runID)
        guard run.state.allowsTransition(to: next) else { throw Self.illegalTransition(run, to: next) }
        return run
    }

    /// The run with `id`; `forUpdate` locks its row until the transaction ends (a node changing it waits rather
    /// than aborting).
    func fetchRun(_ transaction: Transaction, id: Int64, forUpdate: Bool = true) async throws -> RunRecord? {
        try await transaction.runs(
            "SELECT \(unescaped: runColumns) FROM runs WHERE id = \(id) \(unescaped: forUpdate ? "FOR UPDATE" : "")"
        ).first
    }

    static func runNotFound(_ id: Int64, file: String = #fileID, line: Int = #line) -> PostgresStoreError {
        PostgresStoreError(.runNotFound, "run \(id) does not exist", file: file, line: line)
    }

    static func illegalTransition(
        _ run: RunRecord, to next: RunState, because reason: String? = nil, file: String = #fileID, line: Int = #line
    ) -> PostgresStoreError {
        let message = "run \(run.id) of job \(run.job) cannot go from \(run.state.rawValue) to \(next.rawValue)"
        return PostgresStoreError(
            .illegalTransition, reason.map { "\(message): \($0)" } ?? message, file: file, line: line)
    }
}

/// A fire: a job and a scheduled time in whole seconds.
private struct FireKey: Hashable {
    var job: String
    var scheduledAt: Date
}

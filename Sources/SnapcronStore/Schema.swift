import GRDB

/// The schema, as one migrator with named steps.
///
/// Steps are frozen once released: never edit one, add the next. Their SQL spells states out literally
/// rather than deriving them from `RunState`, so a later code change cannot alter what an old step did.
/// Times are INTEGER seconds since 1970 UTC everywhere.
enum Schema {
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        // Never erase: a schema mismatch must surface as an error, not as lost state.
        migrator.eraseDatabaseOnSchemaChange = false
        migrator.registerMigration("v1-runs-images-jobs", migrate: v1)
        migrator.registerMigration("v2-index-unfinished-images", migrate: v2)
        migrator.registerMigration("v3-deleting-repeats-history", migrate: v3)
        migrator.registerMigration("v4-installation", migrate: v4)
        migrator.registerMigration("v5-hook-results", migrate: v5)
        return migrator
    }

    /// How each hook command of a run ended; deleted with its run (history pruning).
    private static func v5(_ db: Database) throws {
        try db.execute(
            sql: """
                CREATE TABLE hook_results (
                    run_id       INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                    phase        TEXT    NOT NULL CHECK (phase IN ('pre', 'post', 'success', 'failure')),
                    hook_set     TEXT    NOT NULL,
                    result       TEXT    NOT NULL,
                    exit_status  INTEGER,
                    duration_ms  INTEGER NOT NULL CHECK (duration_ms >= 0),
                    finished_at  INTEGER NOT NULL
                ) STRICT;
                CREATE INDEX hook_results_by_run ON hook_results (run_id);
                """)
    }

    /// One random id per store, written once: it goes into every image's marker, so the sweep can tell an image
    /// of this installation whose run was never recorded (a claim lost to a power cut) from another's.
    private static func v4(_ db: Database) throws {
        var generator = SystemRandomNumberGenerator()
        let id = String(generator.next() as UInt64, radix: 16)
        try db.execute(
            sql: """
                CREATE TABLE installation (
                    id    TEXT NOT NULL CHECK (length(id) > 0),
                    only  INTEGER PRIMARY KEY CHECK (only = 1)
                ) STRICT;
                INSERT INTO installation (id, only) VALUES (?, 1);
                """, arguments: [id])
    }

    /// images.state gains 'deleting' (a delete under way at the backend, which a pin must not race); runs gain
    /// repeat_count and repeated_until (one skipped row stands for many fires); indexes for history pruning,
    /// found images, clock-step checks and orphaned targets.
    ///
    /// SQLite cannot alter a CHECK, so the images table is rebuilt: same columns in the same order, every row,
    /// the v1/v2 indexes, the foreign key to runs. GRDB runs the step with foreign keys off and checks them before
    /// commit; the explicit check below says so where the rebuild happens.
    private static func v3(_ db: Database) throws {
        try db.execute(
            sql: """
                CREATE TABLE images_v3 (
                    backend        TEXT    NOT NULL,
                    id             TEXT    NOT NULL,
                    job            TEXT    NOT NULL,
                    target         TEXT    NOT NULL,
                    name           TEXT    NOT NULL,
                    description    TEXT,
                    created_at     INTEGER NOT NULL,
                    updated_at     INTEGER NOT NULL,
                    state          TEXT    NOT NULL CHECK (state IN ('queued', 'saving', 'active', 'error', 'gone',
                                           'deleting', 'deleted')),
                    size_bytes     INTEGER CHECK (size_bytes >= 0),
                    pinned         INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
                    deleted_at     INTEGER,
                    run_id         INTEGER REFERENCES runs (id),
                    keep_reason    TEXT,
                    delete_reason  TEXT,
                    PRIMARY KEY (backend, id),
                    CHECK ((state = 'deleted') = (deleted_at IS NOT NULL)),
                    -- A pinned image is never deleted, so none is being deleted.
                    CHECK (state <> 'deleting' OR pinned = 0)
                ) STRICT;
                INSERT INTO images_v3 (backend, id, job, target, name, description, created_at, updated_at, state,
                                       size_bytes, pinned, deleted_at, run_id, keep_reason, delete_reason)
                SELECT backend, id, job, target, name, description, created_at, updated_at, state,
                       size_bytes, pinned, deleted_at, run_id, keep_reason, delete_reason
                FROM images;
                DROP TABLE images;
                ALTER TABLE images_v3 RENAME TO images;

                -- As in v1 and v2 (dropped with the old table).
                CREATE INDEX images_by_job ON images (job, created_at);
                CREATE INDEX images_by_run ON images (run_id);
                CREATE INDEX images_unfinished ON images (created_at, id) WHERE state IN ('queued', 'saving');
                -- imagesBeingDeleted()
                CREATE INDEX images_deleting ON images (created_at, id) WHERE state = 'deleting';
                -- pruneHistory(olderThan:)
                CREATE INDEX images_deleted ON images (deleted_at) WHERE state = 'deleted';
                CREATE INDEX images_gone ON images (updated_at) WHERE state = 'gone';
                -- imageTargets(), jobsWithImages()
                CREATE INDEX images_live ON images (job, backend, target) WHERE state <> 'deleted';
                -- latestRecordedInstant()
                CREATE INDEX images_by_created ON images (created_at);

                ALTER TABLE runs ADD COLUMN repeat_count INTEGER NOT NULL DEFAULT 1 CHECK (repeat_count >= 1);
                -- Only a skipped row stands for later fires, up to and including this one.
                ALTER TABLE runs ADD COLUMN repeated_until INTEGER
                    CHECK (repeated_until IS NULL OR (state = 'skipped' AND repeated_until > scheduled_at));
                -- Whether a fire lies inside a skipped row's span (claims), and the newest span of a job.
                CREATE INDEX runs_repeated ON runs (job, repeated_until) WHERE repeated_until IS NOT NULL;
                -- (recordFoundImage finds the run that chose an image's name among its job's runs through the
                -- UNIQUE (job, scheduled_at) index: rare, and an index on names would cost every claim.)
                -- latestRecordedInstant()
                CREATE INDEX runs_by_claimed ON runs (claimed_at);
                """)
        try db.checkForeignKeys()
    }

    /// imagesLeftUnfinished(): the few images still in progress, without reading every image.
    private static func v2(_ db: Database) throws {
        try db.execute(
            sql: """
                CREATE INDEX images_unfinished ON images (created_at, id) WHERE state IN ('queued', 'saving');
                """)
    }

    private static func v1(_ db: Database) throws {
        try db.execute(sql: "PRAGMA application_id = \(SnapcronDatabase.applicationID)")
        try db.execute(
            sql: """
                CREATE TABLE runs (
                    id            INTEGER PRIMARY KEY,
                    job           TEXT    NOT NULL,
                    scheduled_at  INTEGER NOT NULL,
                    trigger       TEXT    NOT NULL CHECK (trigger IN ('schedule', 'catch-up', 'manual')),
                    state         TEXT    NOT NULL CHECK (state IN ('claimed', 'creating', 'waiting', 'succeeded',
                                          'failed', 'timed_out', 'missed', 'skipped', 'cancelled')),
                    attempts      INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
                    image_name    TEXT,
                    image_id      TEXT,
                    backend       TEXT,
                    target        TEXT,
                    claimed_at    INTEGER NOT NULL,
                    started_at    INTEGER,
                    finished_at   INTEGER,
                    next_poll_at  INTEGER,
                    error         TEXT,
                    -- A fire is claimed once, across crashes, restarts and (later) replicas.
                    UNIQUE (job, scheduled_at),
                    -- Only fires recorded without a claim (missed, skipped) may lack a name and a target.
                    CHECK (state IN ('missed', 'skipped')
                           OR (image_name IS NOT NULL AND backend IS NOT NULL AND target IS NOT NULL)),
                    CHECK (state <> 'waiting' OR image_id IS NOT NULL)
                ) STRICT;

                -- unfinishedRuns(), runningCount(target:), history filtered by state
                CREATE INDEX runs_by_state_target ON runs (state, target);
                -- lastFailure()
                CREATE INDEX runs_by_state_finished ON runs (state, finished_at);
                -- history across all jobs, newest first (per job: the UNIQUE index)
                CREATE INDEX runs_by_scheduled ON runs (scheduled_at);

                CREATE TABLE images (
                    backend        TEXT    NOT NULL,
                    id             TEXT    NOT NULL,
                    job            TEXT    NOT NULL,
                    target         TEXT    NOT NULL,
                    name           TEXT    NOT NULL,
                    description    TEXT,
                    created_at     INTEGER NOT NULL,
                    updated_at     INTEGER NOT NULL,
                    state          TEXT    NOT NULL CHECK (state IN ('queued', 'saving', 'active', 'error', 'gone',
                                           'deleted')),
                    size_bytes     INTEGER CHECK (size_bytes >= 0),
                    pinned         INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
                    deleted_at     INTEGER,
                    run_id         INTEGER REFERENCES runs (id),
                    keep_reason    TEXT,
                    delete_reason  TEXT,
                    -- Image ids are unique only within one backend.
                    PRIMARY KEY (backend, id),
                    CHECK ((state = 'deleted') = (deleted_at IS NOT NULL))
                ) STRICT;

                -- images(job:) and retention, newest first
                CREATE INDEX images_by_job ON images (job, created_at);
                -- the foreign key, and a run's image
                CREATE INDEX images_by_run ON images (run_id);

                CREATE TABLE jobs (
                    name               TEXT    NOT NULL PRIMARY KEY,
                    paused             INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
                    last_scheduled_at  INTEGER,
                    updated_at         INTEGER NOT NULL
                ) STRICT;
                """)
    }
}

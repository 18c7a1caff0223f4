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
        return migrator
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

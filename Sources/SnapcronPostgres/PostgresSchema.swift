/// The PostgreSQL schema: numbered steps, each applied once in its own transaction, the version kept in
/// `snapcron_schema`.
///
/// Steps are frozen once released: never edit one, add the next. The tables mean what SQLite's do
/// (Sources/SnapcronStore/Schema.swift, as of its v5): times are BIGINT whole seconds since 1970 UTC, states are TEXT
/// spelled out literally, flags are BOOLEAN. Text is ordered with `COLLATE "C"` in queries, as SQLite orders it.
enum PostgresSchema {
    /// The newest version this code knows; a database at a higher version is refused.
    static let latestVersion = 2

    /// The statements of each step, by the version it brings the database to; `installationID` (hex digits, made
    /// once per database) is written by the first.
    static func steps(installationID: String) -> [Int: [String]] {
        [1: v1(installationID: installationID), 2: v2]
    }

    private static func v1(installationID: String) -> [String] {
        [
            """
            CREATE TABLE runs (
                id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                job            TEXT    NOT NULL,
                scheduled_at   BIGINT  NOT NULL,
                trigger        TEXT    NOT NULL CHECK (trigger IN ('schedule', 'catch-up', 'manual')),
                state          TEXT    NOT NULL CHECK (state IN ('claimed', 'creating', 'waiting', 'succeeded',
                                       'failed', 'timed_out', 'missed', 'skipped', 'cancelled')),
                attempts       INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
                image_name     TEXT,
                image_id       TEXT,
                backend        TEXT,
                target         TEXT,
                claimed_at     BIGINT  NOT NULL,
                started_at     BIGINT,
                finished_at    BIGINT,
                next_poll_at   BIGINT,
                error          TEXT,
                repeat_count   INTEGER NOT NULL DEFAULT 1 CHECK (repeat_count >= 1),
                -- Only a skipped row stands for later fires, up to and including this one.
                repeated_until BIGINT
                    CHECK (repeated_until IS NULL OR (state = 'skipped' AND repeated_until > scheduled_at)),
                -- A fire is claimed once, across crashes, restarts and every node of a cluster.
                UNIQUE (job, scheduled_at),
                -- Only fires recorded without a claim (missed, skipped) may lack a name and a target.
                CHECK (state IN ('missed', 'skipped')
                       OR (image_name IS NOT NULL AND backend IS NOT NULL AND target IS NOT NULL)),
                CHECK (state <> 'waiting' OR image_id IS NOT NULL)
            )
            """,
            "CREATE INDEX runs_by_state_target ON runs (state, target)",
            "CREATE INDEX runs_by_state_finished ON runs (state, finished_at)",
            "CREATE INDEX runs_by_scheduled ON runs (scheduled_at)",
            "CREATE INDEX runs_repeated ON runs (job, repeated_until) WHERE repeated_until IS NOT NULL",
            "CREATE INDEX runs_by_claimed ON runs (claimed_at)",
            """
            CREATE TABLE images (
                backend        TEXT    NOT NULL,
                id             TEXT    NOT NULL,
                job            TEXT    NOT NULL,
                target         TEXT    NOT NULL,
                name           TEXT    NOT NULL,
                description    TEXT,
                created_at     BIGINT  NOT NULL,
                updated_at     BIGINT  NOT NULL,
                state          TEXT    NOT NULL CHECK (state IN ('queued', 'saving', 'active', 'error', 'gone',
                                       'deleting', 'deleted')),
                size_bytes     BIGINT  CHECK (size_bytes >= 0),
                pinned         BOOLEAN NOT NULL DEFAULT FALSE,
                deleted_at     BIGINT,
                run_id         BIGINT  REFERENCES runs (id),
                keep_reason    TEXT,
                delete_reason  TEXT,
                -- Image ids are unique only within one backend.
                PRIMARY KEY (backend, id),
                CHECK ((state = 'deleted') = (deleted_at IS NOT NULL)),
                -- A pinned image is never deleted, so none is being deleted.
                CHECK (state <> 'deleting' OR NOT pinned)
            )
            """,
            "CREATE INDEX images_by_job ON images (job, created_at)",
            "CREATE INDEX images_by_run ON images (run_id)",
            "CREATE INDEX images_unfinished ON images (created_at, id) WHERE state IN ('queued', 'saving')",
            "CREATE INDEX images_deleting ON images (created_at, id) WHERE state = 'deleting'",
            "CREATE INDEX images_deleted ON images (deleted_at) WHERE state = 'deleted'",
            "CREATE INDEX images_gone ON images (updated_at) WHERE state = 'gone'",
            "CREATE INDEX images_live ON images (job, backend, target) WHERE state <> 'deleted'",
            "CREATE INDEX images_by_created ON images (created_at)",
            """
            CREATE TABLE jobs (
                name               TEXT    NOT NULL PRIMARY KEY,
                paused             BOOLEAN NOT NULL DEFAULT FALSE,
                last_scheduled_at  BIGINT,
                updated_at         BIGINT  NOT NULL
            )
            """,
            """
            CREATE TABLE hook_results (
                -- The order results were recorded in (SQLite's rowid).
                seq          BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                run_id       BIGINT  NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
                phase        TEXT    NOT NULL CHECK (phase IN ('pre', 'post', 'success', 'failure')),
                hook_set     TEXT    NOT NULL,
                result       TEXT    NOT NULL,
                exit_status  INTEGER,
                duration_ms  BIGINT  NOT NULL CHECK (duration_ms >= 0),
                finished_at  BIGINT  NOT NULL
            )
            """,
            "CREATE INDEX hook_results_by_run ON hook_results (run_id)",
            """
            CREATE TABLE installation (
                singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
                id         TEXT    NOT NULL CHECK (length(id) > 0)
            )
            """,
            "INSERT INTO installation (id) VALUES ('\(installationID)')",
        ]
    }

    /// Cluster mode: the daemons sharing the store, and which of them holds each unfinished run.
    private static let v2: [String] = [
        """
        CREATE TABLE nodes (
            name         TEXT    NOT NULL PRIMARY KEY,
            -- Raised each time the node (re)starts or its lease lapsed: a write of an older epoch is refused.
            epoch        BIGINT  NOT NULL CHECK (epoch >= 1),
            -- The database's clock, never the nodes': their clocks may disagree.
            lease_until  BIGINT  NOT NULL,
            last_seen    BIGINT  NOT NULL,
            started_at   BIGINT  NOT NULL,
            host         TEXT    NOT NULL,
            -- The machine (/etc/machine-id): only it may take the name over while the lease lives.
            instance     TEXT    NOT NULL,
            pid          INTEGER NOT NULL,
            version      TEXT    NOT NULL,
            -- Each job's fingerprint (name, expression, zone, target, options), to tell schedules that differ.
            schedule     TEXT    NOT NULL DEFAULT '{}'
        )
        """,
        "ALTER TABLE runs ADD COLUMN owner_node TEXT, ADD COLUMN owner_epoch BIGINT",
        """
        CREATE INDEX runs_unfinished_by_owner ON runs (owner_node, owner_epoch)
            WHERE state IN ('claimed', 'creating', 'waiting')
        """,
        // One retention pass per job across the cluster: the node running it, under its epoch.
        """
        CREATE TABLE retention_passes (
            job    TEXT    NOT NULL PRIMARY KEY,
            node   TEXT    NOT NULL,
            epoch  BIGINT  NOT NULL,
            since  BIGINT  NOT NULL
        )
        """,
    ]
}

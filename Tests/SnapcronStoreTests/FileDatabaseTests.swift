import SnapcronCore
import Foundation
import GRDB
import Testing

@testable import SnapcronStore

/// Tests on a real file: WAL, reopening, migrations, and refusing files that are not ours.
@Suite struct FileDatabaseTests {
    let directory: TemporaryDirectory
    let path: String

    init() throws {
        directory = try TemporaryDirectory()
        path = directory.path("state.db")
    }

    @Test func createsAWALDatabaseWithItsSettings() throws {
        let db = try SnapcronDatabase(path: path)
        try db.claim("web", at: 0)
        #expect(FileManager.default.fileExists(atPath: path + "-wal"))
        let (journal, applicationID) = try DatabaseQueue(path: path).read { db in
            (
                try String.fetchOne(db, sql: "PRAGMA journal_mode"),
                try Int32.fetchOne(db, sql: "PRAGMA application_id")
            )
        }
        #expect(journal == "wal")
        #expect(applicationID == 0x534E_4150)
        let (synchronous, foreignKeys) = try db.writer.writeWithoutTransaction { db in
            (try Int.fetchOne(db, sql: "PRAGMA synchronous"), try Bool.fetchOne(db, sql: "PRAGMA foreign_keys"))
        }
        #expect(synchronous == 1)  // NORMAL: see SnapcronDatabase.prepare
        #expect(foreignKeys == true)
    }

    @Test func migrationsAreNamedAndAppliedOnce() throws {
        let first = try SnapcronDatabase(path: path)
        try first.claim("web", at: 0)
        let installation = try first.installationID()
        // Reopening applies nothing new and keeps the data, the installation id included.
        let reopened = try SnapcronDatabase(path: path)
        #expect(try reopened.runs().count == 1)
        #expect(try installation.count >= 1 && reopened.installationID() == installation)
        #expect(try SnapcronDatabase.inMemory().installationID() != installation)
        let applied = try DatabaseQueue(path: path).read { db in
            try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid")
        }
        #expect(
            applied == [
                "v1-runs-images-jobs", "v2-index-unfinished-images", "v3-deleting-repeats-history", "v4-installation",
                "v5-hook-results",
            ])
    }

    @Test func aVersion2FileIsUpgradedInPlaceKeepingEveryRowAndIndex() throws {
        // Given a file as the second release left it, with runs, images in every v2 state and job state
        let queue = try DatabaseQueue(path: path)
        try Schema.migrator.migrate(queue, upTo: "v2-index-unfinished-images")
        try queue.write { db in
            try db.execute(
                sql: """
                    INSERT INTO runs (id, job, scheduled_at, trigger, state, attempts, image_name, image_id, backend,
                                      target, claimed_at, started_at, finished_at, next_poll_at, error)
                    VALUES (1, 'web', 100, 'schedule', 'succeeded', 1, 'n1', 'img-1', 'fake', 'vm-1', 100, 101, 160,
                            NULL, NULL),
                           (2, 'web', 200, 'catch-up', 'waiting', 2, 'n2', 'img-2', 'fake', 'vm-1', 200, 201, NULL,
                            260, '503'),
                           (3, 'web', 300, 'schedule', 'skipped', 0, NULL, NULL, NULL, NULL, 300, NULL, 300, NULL,
                            'overlap'),
                           (4, 'db', 150, 'manual', 'failed', 3, 'n4', 'img-4', 'other', 'vm-2', 150, 151, 170,
                            NULL, 'disk full');
                    INSERT INTO images (backend, id, job, target, name, description, created_at, updated_at, state,
                                        size_bytes, pinned, deleted_at, run_id, keep_reason, delete_reason)
                    VALUES ('fake', 'img-1', 'web', 'vm-1', 'n1', 'd1', 101, 160, 'active', 4096, 1, NULL, 1,
                            'pinned', NULL),
                           ('fake', 'img-2', 'web', 'vm-1', 'n2', NULL, 201, 230, 'saving', NULL, 0, NULL, 2, NULL,
                            NULL),
                           ('other', 'img-4', 'db', 'vm-2', 'n4', NULL, 151, 170, 'error', NULL, 0, NULL, 4, NULL,
                            NULL),
                           ('fake', 'img-0', 'web', 'vm-1', 'n0', NULL, 50, 90, 'deleted', 10, 0, 90, NULL, NULL,
                            'beyond keep=1'),
                           ('other', 'img-5', 'db', 'vm-2', 'n5', NULL, 60, 95, 'gone', NULL, 0, NULL, NULL, NULL,
                            NULL);
                    INSERT INTO jobs (name, paused, last_scheduled_at, updated_at) VALUES ('web', 1, 300, 310);
                    """)
        }
        let dump = { (db: Database) in
            (
                try Row.fetchAll(db, sql: "SELECT * FROM runs ORDER BY id"),
                try Row.fetchAll(
                    db,
                    sql: """
                        SELECT backend, id, job, target, name, description, created_at, updated_at, state, size_bytes,
                               pinned, deleted_at, run_id, keep_reason, delete_reason
                        FROM images ORDER BY backend, id
                        """),
                try Row.fetchAll(db, sql: "SELECT * FROM jobs")
            )
        }
        let (runsBefore, imagesBefore, jobsBefore) = try queue.read(dump)
        try queue.close()

        // When snapcron opens it
        let upgraded = try SnapcronDatabase(path: path)

        // Then every row is intact, with the new run columns at their defaults
        let (runsAfter, imagesAfter, jobsAfter) = try upgraded.read(dump)
        #expect(imagesAfter == imagesBefore)
        #expect(jobsAfter == jobsBefore)
        #expect(runsAfter.count == runsBefore.count)
        for (before, after) in zip(runsBefore, runsAfter) {
            for column in before.columnNames {
                #expect(after[column] as DatabaseValue == before[column] as DatabaseValue, "runs.\(column)")
            }
            #expect(after["repeat_count"] as Int64? == 1)
            #expect(after["repeated_until"] as Int64? == nil)
        }
        #expect(try upgraded.run(id: 3)?.repeatCount == 1)
        #expect(try upgraded.image(id: "img-1", backend: "fake")?.pinned == true)
        // And the foreign key, the old indexes and the table's STRICT CHECKs survive the rebuild
        let (violations, indexes, tableSQL) = try upgraded.read { db in
            (
                try Row.fetchAll(db, sql: "PRAGMA foreign_key_check"),
                Set(try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'index'")),
                try String.fetchOne(db, sql: "SELECT sql FROM sqlite_master WHERE name = 'images'") ?? ""
            )
        }
        #expect(violations.isEmpty)
        #expect(
            indexes.isSuperset(of: [
                "images_by_job", "images_by_run", "images_unfinished", "images_deleting", "images_deleted",
                "images_gone", "images_live", "images_by_created", "runs_by_state_target", "runs_by_state_finished",
                "runs_by_scheduled", "runs_repeated", "runs_by_claimed",
            ]))
        #expect(tableSQL.contains("REFERENCES runs (id)"))
        #expect(tableSQL.hasSuffix("STRICT"))
        let orphan = #expect(throws: DatabaseError.self) {
            try upgraded.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO images (backend, id, job, target, name, created_at, updated_at, state, run_id)
                        VALUES ('fake', 'x', 'web', 'vm-1', 'x', 1, 1, 'queued', 999)
                        """)
            }
        }
        #expect(orphan?.resultCode == .SQLITE_CONSTRAINT)
        // And the new state works on an upgraded row
        let deleting = try upgraded.beginDeleting(id: "img-1", backend: "fake", reason: "x", now: minute(0))
        #expect(deleting == nil, "pinned")
        try upgraded.setPinned(id: "img-1", backend: "fake", false)
        let began = try upgraded.beginDeleting(id: "img-1", backend: "fake", reason: "x", now: minute(0))
        #expect(began?.state == .deleting)
    }

    @Test func aVersion1FileIsUpgradedInPlaceKeepingItsData() throws {
        // A file as the first release left it: only the first step applied.
        let queue = try DatabaseQueue(path: path)
        try Schema.migrator.migrate(queue, upTo: "v1-runs-images-jobs")
        try queue.close()
        let upgraded = try SnapcronDatabase(path: path)
        try upgraded.waitingRun("web", at: 0, image: "img-1")
        #expect(try upgraded.imagesLeftUnfinished(limit: 5).isEmpty, "its run still follows it")
        // The follow-up query reads the partial index, not every image.
        let detail = try upgraded.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    EXPLAIN QUERY PLAN SELECT images.* FROM images LEFT JOIN runs ON runs.id = images.run_id
                    WHERE images.state IN ('queued', 'saving')
                      AND (runs.id IS NULL OR runs.state NOT IN ('claimed', 'creating', 'waiting'))
                    ORDER BY images.created_at, images.id LIMIT 5
                    """
            ).map { $0["detail"] as String }
        }
        #expect(detail.contains { $0.contains("images_unfinished") }, "\(detail)")
    }

    @Test func claimsOnceAcrossConnections() throws {
        let first = try SnapcronDatabase(path: path)
        let second = try SnapcronDatabase(path: path)
        #expect(try first.claim("web", at: 0) != nil)
        #expect(try second.claim("web", at: 0) == nil)
        #expect(try second.claim("web", at: 60) != nil)
        #expect(try first.claim("web", at: 60) == nil)
    }

    @Test func keepsStateAcrossReopen() throws {
        do {
            let db = try SnapcronDatabase(path: path)
            try db.setPaused(name: "web", true, now: minute(0))
            try db.waitingRun("web", at: 0, image: "img-1")
            let done = try #require(try db.claim("web", at: 60))
            try db.finishRun(runID: done.id, state: .cancelled, error: "operator", now: minute(61))
            try db.claim("db", at: 30)
            try db.close()
        }
        let db = try SnapcronDatabase(path: path)
        #expect(try db.jobState(name: "web")?.paused == true)
        #expect(try db.unfinishedRuns().map(\.state) == [.waiting, .claimed])
        #expect(try db.unfinishedRuns().map(\.job) == ["web", "db"])
        #expect(try db.image(id: "img-1", backend: "fake")?.state == .queued)
        #expect(try db.claim("db", at: 30) == nil)
    }

    @Test func refusesAFileThatIsNotSQLite() throws {
        let text = Data("0 3 * * * web twcc:101\n".utf8)
        try text.write(to: URL(fileURLWithPath: path))
        let error = #expect(throws: SnapcronStoreError.self) { try SnapcronDatabase(path: path) }
        #expect(error?.code == .notASnapcronDatabase)
        #expect(error?.message == "\(path) is not a snapcron state database: not an SQLite file")
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == text)
    }

    @Test func refusesAnotherProgramsSQLiteDatabase() throws {
        try DatabaseQueue(path: path).write { db in
            try db.execute(sql: "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        }
        let error = #expect(throws: SnapcronStoreError.self) { try SnapcronDatabase(path: path) }
        #expect(error?.code == .notASnapcronDatabase)
        let tables = try DatabaseQueue(path: path).read { db in
            try String.fetchAll(db, sql: "SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        #expect(tables == ["notes"])
    }

    @Test func refusesACorruptDatabase() throws {
        do {
            let db = try SnapcronDatabase(path: path)
            for m in 0..<300 {
                try db.claimRun(
                    job: "web", scheduledAt: minute(m), trigger: .schedule,
                    imageName: String(repeating: "x", count: 200), backend: "fake", target: "vm-1", now: minute(m))
            }
            try db.checkpoint()
            try db.close()
        }
        // Overwrite everything after the first page (header and schema survive).
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        let size = try handle.seekToEnd()
        #expect(size > 8192)
        try handle.seek(toOffset: 4096)
        try handle.write(contentsOf: Data(repeating: 0xA5, count: Int(size) - 4096))
        try handle.close()

        let error = #expect(throws: SnapcronStoreError.self) { try SnapcronDatabase(path: path) }
        #expect(error?.code == .corruptDatabase)
    }

    @Test func refusesADatabaseFromANewerSnapcron() throws {
        try SnapcronDatabase(path: path).close()
        try DatabaseQueue(path: path).write { db in
            try db.execute(sql: "INSERT INTO grdb_migrations (identifier) VALUES ('v99-from-the-future')")
        }
        let error = #expect(throws: SnapcronStoreError.self) { try SnapcronDatabase(path: path) }
        #expect(error?.code == .newerSchema)
    }

    @Test func refusesAMissingDirectory() throws {
        let error = #expect(throws: SnapcronStoreError.self) {
            try SnapcronDatabase(path: directory.path("no-such-dir/state.db"))
        }
        #expect(error?.code == .cannotOpen)
    }

    @Test func reportsHealthAndCheckpoints() throws {
        let db = try SnapcronDatabase(path: path)
        try db.waitingRun("web", at: 0, image: "img-1")
        #expect(db.healthCheck() == StoreHealth(isOK: true, message: "ok"))
        try db.checkpoint()
        let walSize = try FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int
        #expect(walSize == 0)
        #expect(try SnapcronDatabase.inMemory().healthCheck().isOK)
    }
}

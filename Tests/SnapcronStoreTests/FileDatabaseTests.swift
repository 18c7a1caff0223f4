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
        try SnapcronDatabase(path: path).claim("web", at: 0)
        // Reopening applies nothing new and keeps the data.
        let reopened = try SnapcronDatabase(path: path)
        #expect(try reopened.runs().count == 1)
        let applied = try DatabaseQueue(path: path).read { db in
            try String.fetchAll(db, sql: "SELECT identifier FROM grdb_migrations ORDER BY rowid")
        }
        #expect(applied == ["v1-runs-images-jobs", "v2-index-unfinished-images"])
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

import Foundation
import GRDB
import SnapcronCore

/// The daemon's durable state: runs, images and per-job state in one SQLite file.
///
/// Every state change is one IMMEDIATE transaction, so a crash (even SIGKILL) leaves either the whole change
/// or none of it. Methods are synchronous and thread-safe; GRDB serializes writes and lets reads run
/// concurrently on a WAL snapshot.
public final class SnapcronDatabase: Sendable {
    /// The file this database lives in; nil for ``inMemory()``.
    public let path: String?

    let writer: any DatabaseWriter

    /// Marks the file as ours (`PRAGMA application_id`, "SNAP"), so a foreign SQLite file is refused.
    static let applicationID: Int32 = 0x534E_4150

    /// How long a write waits for another connection (another process) to release its lock.
    static let busyTimeout: TimeInterval = 5

    /// Opens the state database at `path`, creating the file (not its directory) if needed.
    ///
    /// Applies pending migrations. Throws ``SnapcronStoreError`` with code `.notASnapcronDatabase` for a file
    /// that is not SQLite or belongs to another program, `.corruptDatabase` when SQLite finds damage, and
    /// `.newerSchema` when a newer snapcron migrated the file. Never erases or recreates an existing file.
    public init(path: String) throws {
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue
        else {
            throw SnapcronStoreError(
                .cannotOpen, "cannot open state database \(path): directory \(directory) does not exist")
        }
        try Self.checkSQLiteHeader(path: path)

        let pool: DatabasePool
        do {
            pool = try DatabasePool(path: path, configuration: Self.configuration())
        } catch {
            throw Self.openError(error, path: path)
        }
        try Self.prepare(pool, description: path)
        self.path = path
        self.writer = pool
    }

    private init(inMemory queue: DatabaseQueue) {
        self.path = nil
        self.writer = queue
    }

    /// Opens a fresh, migrated in-memory database (for tests).
    public static func inMemory() throws -> SnapcronDatabase {
        let queue = try DatabaseQueue(configuration: configuration())
        try prepare(queue, description: "in-memory database")
        return SnapcronDatabase(inMemory: queue)
    }

    /// Closes the connections; any later call throws.
    public func close() throws {
        try writer.close()
    }

    /// Runs SQLite's `quick_check` and reports the result; never throws.
    public func healthCheck() -> StoreHealth {
        do {
            let problems = try writer.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check") }
            return problems == ["ok"]
                ? StoreHealth(isOK: true, message: "ok")
                : StoreHealth(isOK: false, message: problems.joined(separator: "; "))
        } catch {
            return StoreHealth(isOK: false, message: "quick_check failed: \(error)")
        }
    }

    /// Copies the WAL into the database file and truncates the WAL (a no-op for in-memory databases).
    public func checkpoint() throws {
        try writer.writeWithoutTransaction { db in
            _ = try db.checkpoint(.truncate)
        }
    }

    // MARK: - Opening

    private static func configuration() -> Configuration {
        var config = Configuration()
        config.label = "snapcron.state"
        config.foreignKeysEnabled = true
        config.busyMode = .timeout(busyTimeout)
        return config
    }

    /// Refuses a non-empty file that does not start with SQLite's magic header, before SQLite touches it.
    private static func checkSQLiteHeader(path: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { return }  // absent: SQLite creates it
        defer { try? handle.close() }
        let header = (try? handle.read(upToCount: 16)) ?? Data()
        if header.isEmpty { return }  // an empty file is a valid empty database
        guard header == Data("SQLite format 3\0".utf8) else {
            throw SnapcronStoreError(
                .notASnapcronDatabase, "\(path) is not a snapcron state database: not an SQLite file")
        }
    }

    /// Verifies identity and integrity, then applies pending migrations.
    private static func prepare(_ writer: some DatabaseWriter, description: String) throws {
        let migrator = Schema.migrator
        do {
            // WAL with synchronous=NORMAL: a crashed or killed process loses nothing (every commit is in the WAL),
            // and only a power loss can drop the last commits. That is recoverable: image names are derived from
            // (job, scheduled_at) and backends create idempotently by name, so a fire whose claim was lost finds
            // its image again instead of making a second one. FULL would fsync every commit, and 10,000 jobs
            // due in one minute would then spend seconds in fsync (measured: ~10 ms per run with FULL).
            try writer.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = NORMAL") }
            try writer.read { db in
                let foundID = try Int32.fetchOne(db, sql: "PRAGMA application_id") ?? 0
                let objectCount = try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM sqlite_master") ?? 0
                let isFresh = foundID == 0 && objectCount == 0
                if foundID != applicationID && !isFresh {
                    throw SnapcronStoreError(
                        .notASnapcronDatabase,
                        foundID == 0
                            ? "\(description) is not a snapcron state database: it has tables but no snapcron mark"
                            : "\(description) is not a snapcron state database: application_id is \(foundID)"
                    )
                }
                let problems = try String.fetchAll(db, sql: "PRAGMA quick_check")
                guard problems == ["ok"] else {
                    throw SnapcronStoreError(
                        .corruptDatabase,
                        "\(description) is corrupt: \(problems.prefix(3).joined(separator: "; "))")
                }
                if try migrator.hasBeenSuperseded(db) {
                    throw SnapcronStoreError(
                        .newerSchema, "\(description) was migrated by a newer snapcron; refusing to use it")
                }
            }
            try migrator.migrate(writer)
        } catch {
            throw openError(error, path: description)
        }
    }

    /// Maps SQLite's open-time failures to errors that say what is wrong with which file.
    private static func openError(_ error: any Error, path: String) -> any Error {
        guard let error = error as? DatabaseError else { return error }
        switch error.resultCode {
        case .SQLITE_NOTADB:
            return SnapcronStoreError(.notASnapcronDatabase, "\(path) is not a snapcron state database: \(error)")
        case .SQLITE_CORRUPT:
            return SnapcronStoreError(.corruptDatabase, "\(path) is corrupt: \(error)")
        case .SQLITE_CANTOPEN, .SQLITE_PERM, .SQLITE_READONLY:
            return SnapcronStoreError(.cannotOpen, "cannot open state database \(path): \(error)")
        default:
            return error
        }
    }

    // MARK: - Transactions

    /// Runs `updates` in one IMMEDIATE transaction: committed whole, or rolled back if anything throws.
    ///
    /// IMMEDIATE takes the write lock up front (waiting up to the busy timeout), so the checks made at the
    /// start of a transaction still hold when it writes, even with another process on the same file.
    func write<T>(_ updates: (Database) throws -> T) throws -> T {
        try mapErrors {
            try writer.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try updates(db)
                    return .commit
                }
                return result!  // inTransaction committed, so updates returned
            }
        }
    }

    /// Reads from a consistent snapshot.
    func read<T>(_ value: (Database) throws -> T) throws -> T {
        try mapErrors { try writer.read(value) }
    }

    private func mapErrors<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as DatabaseError where error.resultCode == .SQLITE_CORRUPT {
            throw SnapcronStoreError(.corruptDatabase, "\(path ?? "in-memory database") is corrupt: \(error)")
        }
    }
}

extension Date {
    /// Whole seconds since 1970 UTC, rounded down: the store's one time format.
    var epochSeconds: Int64 { Int64(timeIntervalSince1970.rounded(.down)) }

    init(epochSeconds: Int64) {
        self.init(timeIntervalSince1970: TimeInterval(epochSeconds))
    }
}

import Foundation
import Logging
import PostgresNIO

/// Brings a database to ``PostgresSchema/latestVersion``, at start (and later from `snapcronctl store migrate`).
///
/// Holds a session advisory lock meanwhile, so daemons starting together migrate one after another. Refuses a
/// database that has tables but no `snapcron_schema` (it belongs to something else) and one at a version newer
/// than this code knows. Each step is one transaction together with its version bump.
struct PostgresMigrator {
    let connection: PostgresConnection
    let location: PostgresStoreLocation
    let logger: Logger

    /// The advisory lock key of migrations ("SNAP" and 1, like SQLite's application_id).
    static let lockKey: Int64 = 0x534E_4150_0000_0001

    /// The version the database is at after migrating.
    @discardableResult
    func migrate() async throws -> Int { try await migrateReporting().after }

    /// The versions before and after migrating.
    func migrateReporting() async throws -> (before: Int, after: Int) {
        // Released when the connection closes (the caller closes it after migrating).
        try await run("SELECT pg_advisory_lock(\(Self.lockKey))")
        let before = try await currentVersion()
        var version = before
        guard version <= PostgresSchema.latestVersion else {
            throw PostgresStoreError(
                .newerSchema,
                "the store \(location) is at schema version \(version), newer than this snapcron knows "
                    + "(\(PostgresSchema.latestVersion)); refusing to use it: upgrade snapcron")
        }
        var generator = SystemRandomNumberGenerator()
        let steps = PostgresSchema.steps(installationID: String(generator.next() as UInt64, radix: 16))
        while version < PostgresSchema.latestVersion {
            let next = version + 1
            try await run("BEGIN")
            do {
                for statement in steps[next] ?? [] {
                    try await run(PostgresQuery(unsafeSQL: statement))
                }
                try await run(
                    "UPDATE snapcron_schema SET version = \(next), migrated_at = extract(epoch FROM now())::bigint")
                try await run("COMMIT")
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw PostgresStoreError(
                    .queryFailed,
                    "cannot migrate the store \(location) to schema version \(next): "
                        + PostgresStateStore.describe(error))
            }
            logger.info(
                "Store schema migrated", metadata: ["store.url": "\(location)", "store.schema_version": "\(next)"])
            version = next
        }
        return (before, version)
    }

    /// The version recorded in `snapcron_schema`, creating that table (at version 0) in an empty database.
    private func currentVersion() async throws -> Int {
        let hasSchemaTable =
            try await connection.query(
                "SELECT to_regclass('snapcron_schema') IS NOT NULL", logger: logger
            ).collect().first?.decode(Bool.self) ?? false
        if !hasSchemaTable {
            let tables =
                try await connection.query(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()", logger: logger
                ).collect().first?.decode(Int64.self) ?? 0
            guard tables == 0 else {
                throw PostgresStoreError(
                    .notASnapcronDatabase,
                    "the store \(location) is not a snapcron database: it has \(tables) tables but no snapcron_schema")
            }
            try await run(
                """
                CREATE TABLE snapcron_schema (
                    singleton    BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
                    version      INTEGER NOT NULL CHECK (version >= 0),
                    migrated_at  BIGINT
                )
                """)
            try await run("INSERT INTO snapcron_schema (version) VALUES (0) ON CONFLICT DO NOTHING")
        }
        let version = try await connection.query("SELECT version FROM snapcron_schema", logger: logger)
            .collect().first?.decode(Int32.self)
        guard let version else {
            throw PostgresStoreError(.corruptDatabase, "the store \(location) has an empty snapcron_schema table")
        }
        return Int(version)
    }

    private func run(_ query: PostgresQuery) async throws {
        _ = try await connection.query(query, logger: logger).collect()
    }
}

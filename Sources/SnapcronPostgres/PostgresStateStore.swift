import Foundation
import Logging
import PostgresNIO
import SnapcronCore
import Synchronization

/// The ``StateStore`` on a PostgreSQL that several daemons share (cluster mode).
///
/// Same contract and same meaning as the embedded SQLite store. Every method is one transaction, retried from the
/// start when PostgreSQL reports a serialization failure or a deadlock. Most are SERIALIZABLE: the transactions of
/// all nodes then behave as if run one after another, as SQLite's single writer does, so each method's checks (may
/// this run move? may this image be pinned?) still hold when it writes. The three that record fires (claims,
/// missed, skipped) are READ COMMITTED under per-job advisory locks instead (``Transaction/lockFires(of:)``):
/// under SERIALIZABLE, nodes claiming the same minute's fires abort each other's batches (measured: 300 fires
/// claimed by three nodes together took 45 s of retries). A fire is claimed once cluster-wide by
/// UNIQUE (job, scheduled_at) and `INSERT ... ON CONFLICT DO NOTHING RETURNING`, whatever the isolation.
///
/// Connections come from PostgresNIO's pool (``PostgresClient``), not one connection behind an actor: the control
/// socket's reads (status, history, metrics) must not queue behind the scheduler's claim of thousands of fires,
/// and the pool opens a new connection after the server restarted or failed over.
public final class PostgresStateStore: Sendable {
    /// Where this store lives (no password).
    public let location: PostgresStoreLocation

    private let client: PostgresClient
    private let runner: Task<Void, Never>
    let logger: Logger
    /// This daemon's node in the cluster; nil for a store opened by a tool (or a daemon on its own).
    let membership: ClusterMembership?
    /// Until when calls fail without waiting, after a wait for a connection timed out.
    let unreachableUntil = Mutex<ContinuousClock.Instant?>(nil)

    /// How many connections one daemon opens at most: the scheduler's writes and the control socket's reads.
    static let maximumConnections = 4
    /// Limits every session sets at its start. A node stalled or cut off inside a transaction (SIGSTOP, a
    /// partition) would otherwise hold its row and advisory locks until TCP noticed, hours later, and every other
    /// node's claims would wait on them: the server ends such a transaction after 15 s, and a statement waits at
    /// most 10 s for a lock (the call fails and the scheduler tries again).
    static let sessionLimits = [
        ("idle_in_transaction_session_timeout", "15s"), ("lock_timeout", "10s"), ("statement_timeout", "120s"),
    ]

    /// How many times a transaction is tried when PostgreSQL aborts it for a conflict with another node.
    static let maximumAttempts = 20

    /// Connects, checks the database and applies pending schema steps, then opens the pool.
    ///
    /// Throws ``PostgresStoreError`` with `.cannotConnect` (unreachable, wrong password, no such database),
    /// `.notASnapcronDatabase` (tables of something else), `.newerSchema` (migrated by a newer snapcron). Several
    /// daemons starting together migrate one after another (a session advisory lock).
    ///
    /// With a `node` (cluster mode), the daemon registers under a new epoch and holds the runs it claims under a
    /// lease (``ClusterNode/lease``); a node name that another host holds with a live lease is refused
    /// (`.nodeNameInUse`).
    public static func open(
        location: PostgresStoreLocation, password: String?, logger: Logger, node: ClusterNode? = nil
    ) async throws -> PostgresStateStore {
        let connection = try await connect(location: location, password: password, logger: logger)
        let membership = node.map(ClusterMembership.init(node:))
        do {
            try await PostgresMigrator(connection: connection, location: location, logger: logger).migrate()
            // Registered on this connection: the pool below is not running yet.
            try await register(membership, location: location, on: connection, logger: logger)
        } catch {
            try? await connection.close()
            throw error
        }
        try? await connection.close()

        var configuration = PostgresClient.Configuration(
            host: location.host, port: location.port, username: location.user, password: password,
            database: location.database, tls: location.clientTLS)
        configuration.options.additionalStartupParameters = sessionLimits
        configuration.options.maximumConnections = maximumConnections
        configuration.options.minimumConnections = 1
        let client = PostgresClient(configuration: configuration, backgroundLogger: logger)
        let runner = Task { await client.run() }
        return PostgresStateStore(
            location: location, client: client, runner: runner, logger: logger, membership: membership)
    }

    /// Applies pending schema steps without opening a store (`snapcronctl store migrate`); returns the schema
    /// version before and after. Same errors as ``open(location:password:logger:node:)``.
    public static func migrate(location: PostgresStoreLocation, password: String?, logger: Logger) async throws
        -> (before: Int, after: Int)
    {
        let connection = try await connect(location: location, password: password, logger: logger)
        do {
            let versions = try await PostgresMigrator(connection: connection, location: location, logger: logger)
                .migrateReporting()
            try? await connection.close()
            return versions
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// The schema version this snapcron knows.
    public static var schemaVersion: Int { PostgresSchema.latestVersion }

    /// ``open(location:password:logger:)`` from a `postgresql://USER@HOST[:PORT]/DATABASE` URL.
    public static func open(url: String, password: String?, logger: Logger, node: ClusterNode? = nil) async throws
        -> PostgresStateStore
    {
        try await open(location: PostgresStoreLocation(url: url), password: password, logger: logger, node: node)
    }

    private init(
        location: PostgresStoreLocation, client: PostgresClient, runner: Task<Void, Never>, logger: Logger,
        membership: ClusterMembership?
    ) {
        self.membership = membership
        self.location = location
        self.client = client
        self.runner = runner
        self.logger = logger
    }

    /// Closes the pool; any later call fails.
    public func close() async {
        runner.cancel()
        await runner.value
    }

    /// One connection for the start-up checks and migration, with the server's reason when it fails.
    private static func connect(location: PostgresStoreLocation, password: String?, logger: Logger) async throws
        -> PostgresConnection
    {
        var configuration = PostgresConnection.Configuration(
            host: location.host, port: location.port, username: location.user, password: password,
            database: location.database, tls: try location.connectionTLS())
        configuration.options.additionalStartupParameters = sessionLimits
        do {
            return try await PostgresConnection.connect(configuration: configuration, id: 0, logger: logger)
        } catch {
            throw PostgresStoreError(.cannotConnect, "cannot connect to the store \(location): \(describe(error))")
        }
    }

    // MARK: - Transactions

    /// Runs `body` in one SERIALIZABLE transaction on a pooled connection: committed whole, or rolled back if
    /// anything throws. A serialization failure or deadlock (another node's transaction won) runs it again.
    func transaction<T: Sendable>(
        _ isolation: Isolation = .serializable, _ body: @escaping @Sendable (Transaction) async throws -> T
    ) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await withConnection { connection in
                    let transaction = Transaction(connection: connection, logger: self.logger)
                    try await transaction.execute(
                        PostgresQuery(unsafeSQL: "BEGIN ISOLATION LEVEL \(isolation.rawValue)"))
                    do {
                        let value = try await body(transaction)
                        try await transaction.execute("COMMIT")
                        return value
                    } catch {
                        try? await transaction.execute("ROLLBACK")
                        throw error
                    }
                }
            } catch let error as PSQLError where Self.isConflict(error) && attempt < Self.maximumAttempts {
                attempt += 1
                await Task.yield()
            } catch let error as PSQLError {
                let code: PostgresStoreError.Code = error.serverInfo == nil ? .cannotConnect : .queryFailed
                throw PostgresStoreError(code, "store \(location): \(Self.describe(error))")
            } catch let error as ConnectionWaitTimedOut {
                throw PostgresStoreError(
                    .cannotConnect, "store \(location): no connection within \(error.limit) (the server is down or restarting)")
            } catch let error as PostgresStoreError {
                throw error
            } catch let error as RunFencedError {
                throw error
            } catch where !(error is CancellationError) && "\(type(of: error))".contains("ConnectionPool") {
                throw PostgresStoreError(.cannotConnect, "store \(location): \(error)")
            }
        }
    }

    /// How long a call waits for a pooled connection. The pool's own wait ends only after about a minute of failed
    /// connection attempts, and the scheduler's loop (which makes these calls) must keep its watchdog pings going
    /// while PostgreSQL restarts: the call fails after this, and the scheduler tries again later. 20 s, below the
    /// unit's 30 s watchdog, and well above a slow but working connection set-up (10 s was too short for a debug
    /// build's password exchange on a loaded two-core CI machine).
    static let connectionWait: Duration = .seconds(20)
    /// How long calls fail at once after a wait for a connection timed out.
    static let failFastAfterTimeout: Duration = .seconds(5)

    /// Runs `body` on a pooled connection, giving up if none comes within ``connectionWait``. Once `body` has its
    /// connection, it runs to its end: a transaction cut short could have committed without our knowing.
    private func withConnection<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T)
        async throws -> T
    {
        // Right after a wait for a connection timed out, the calls that follow fail at once: one scheduler tick
        // makes several store calls, and waiting for each in turn would outlast the watchdog.
        if let until = unreachableUntil.withLock({ $0 }), ContinuousClock.now < until {
            throw ConnectionWaitTimedOut(limit: Self.connectionWait)
        }
        let wait = ConnectionWait()
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { [client] in
                try await client.withConnection { connection in
                    // Either the body runs or the caller hears of a timeout, never both.
                    guard wait.connect() else { throw CancellationError() }
                    return try await body(connection)
                }
            }
            group.addTask {
                try? await Task.sleep(for: Self.connectionWait)
                return nil
            }
            while let result = try await group.next() {
                if let value = result {
                    group.cancelAll()
                    unreachableUntil.withLock { $0 = nil }
                    return value
                }
                if wait.abandon() {
                    group.cancelAll()
                    unreachableUntil.withLock { $0 = ContinuousClock.now + Self.failFastAfterTimeout }
                    throw ConnectionWaitTimedOut(limit: Self.connectionWait)
                }
            }
            throw CancellationError()
        }
    }

    /// How a transaction sees the others.
    enum Isolation: String {
        /// As if the transactions of all nodes ran one after another (the default).
        case serializable = "SERIALIZABLE"
        /// For the fire-recording methods, which serialize per job with ``Transaction/lockFires(of:)`` instead:
        /// many nodes claiming thousands of fires together would otherwise abort and retry whole batches.
        case readCommitted = "READ COMMITTED"
    }

    /// Serialization failure (40001) or deadlock (40P01): the transaction may succeed when run again.
    private static func isConflict(_ error: PSQLError) -> Bool {
        guard let state = error.serverInfo?[.sqlState] else { return false }
        return state == "40001" || state == "40P01"
    }

    /// What the server or the connection said, without the query's values (which PostgresNIO keeps for debugging).
    static func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let info = error.serverInfo, let message = info[.message] {
            return "\(message) (SQLSTATE \(info[.sqlState] ?? "?"))"
        }
        if let underlying = error.underlying { return "\(error.code): \(underlying)" }
        return "\(error.code)"
    }
}

/// One open transaction: runs statements and reads their rows.
struct Transaction {
    let connection: PostgresConnection
    let logger: Logger

    /// Runs a statement and returns every row it produced.
    @discardableResult
    func rows(_ query: PostgresQuery) async throws -> [PostgresRow] {
        try await connection.query(query, logger: logger).collect()
    }

    func execute(_ query: PostgresQuery) async throws {
        _ = try await rows(query)
    }

    /// The advisory lock class of fire records; the key is a bucket of the job's name.
    static let fireLockClass: Int32 = 0x534E_4150
    /// Jobs share this many locks: enough that nodes rarely wait on each other's jobs, few enough that a claim of
    /// 10,000 fires stays far below PostgreSQL's lock table (max_locks_per_transaction x max_connections).
    static let fireLockBuckets: UInt32 = 256

    /// Takes, until the transaction ends, the locks of these jobs' fire records (claims, missed and skipped
    /// fires), in ascending order so that two nodes never deadlock. Under READ COMMITTED this is what keeps the
    /// check "is this fire covered by a skipped row?" and the coalescing of skips true while they write.
    func lockFires(of jobs: some Sequence<String>) async throws {
        let buckets = Set(jobs.map(Self.fireLockBucket)).sorted()
        guard !buckets.isEmpty else { return }
        try await execute(
            """
            SELECT count(pg_advisory_xact_lock(\(Self.fireLockClass), bucket))
            FROM (SELECT bucket FROM unnest(\(buckets)::int4[]) AS bucket ORDER BY bucket) AS sorted
            """)
    }

    /// FNV-1a of the job's name: the same bucket on every node and every run.
    static func fireLockBucket(_ job: String) -> Int32 {
        var hash: UInt32 = 2_166_136_261
        for byte in job.utf8 {
            hash = (hash ^ UInt32(byte)) &* 16_777_619
        }
        return Int32(hash % fireLockBuckets)
    }

    /// The runs a statement returns (it must select or return every column of `runs`).
    func runs(_ query: PostgresQuery) async throws -> [RunRecord] {
        try await rows(query).map(RunRecord.init(row:))
    }

    func images(_ query: PostgresQuery) async throws -> [ImageRecord] {
        try await rows(query).map(ImageRecord.init(row:))
    }
}

// MARK: - Decoding

extension Date {
    /// Whole seconds since 1970 UTC, rounded down: the store's one time format (as SQLite's).
    var epochSeconds: Int64 { Int64(timeIntervalSince1970.rounded(.down)) }

    init(epochSeconds: Int64) {
        self.init(timeIntervalSince1970: TimeInterval(epochSeconds))
    }
}

extension PostgresRandomAccessRow {
    func value<T: PostgresDecodable>(_ column: String, as type: T.Type = T.self) throws -> T {
        try self[column].decode(T.self)
    }

    func date(_ column: String) throws -> Date { Date(epochSeconds: try value(column, as: Int64.self)) }

    func optionalDate(_ column: String) throws -> Date? {
        try value(column, as: Int64?.self).map(Date.init(epochSeconds:))
    }

    /// A TEXT column holding one of the store's enums; an unknown value is reported as corruption.
    func enumValue<E: RawRepresentable>(_ column: String, as type: E.Type = E.self) throws -> E
    where E.RawValue == String {
        let raw = try value(column, as: String.self)
        guard let value = E(rawValue: raw) else {
            throw PostgresStoreError(.corruptDatabase, "unknown \(column) '\(raw)' in the store")
        }
        return value
    }
}

/// Every column of `runs`, in the order RunRecord reads them.
let runColumns = """
    id, job, scheduled_at, trigger, state, attempts, image_name, image_id, backend, target, claimed_at, started_at,
    finished_at, next_poll_at, error, repeat_count, repeated_until
    """

extension RunRecord {
    init(row: PostgresRow) throws {
        let row = row.makeRandomAccess()
        self.init(
            id: try row.value("id"),
            job: try row.value("job"),
            scheduledAt: try row.date("scheduled_at"),
            trigger: try row.enumValue("trigger"),
            state: try row.enumValue("state"),
            attempts: Int(try row.value("attempts", as: Int32.self)),
            imageName: try row.value("image_name"),
            imageID: try row.value("image_id"),
            backend: try row.value("backend"),
            target: try row.value("target"),
            claimedAt: try row.date("claimed_at"),
            startedAt: try row.optionalDate("started_at"),
            finishedAt: try row.optionalDate("finished_at"),
            nextPollAt: try row.optionalDate("next_poll_at"),
            error: try row.value("error"),
            repeatCount: Int(try row.value("repeat_count", as: Int32.self)),
            repeatedUntil: try row.optionalDate("repeated_until"))
    }
}

extension ImageRecord {
    init(row: PostgresRow) throws {
        let row = row.makeRandomAccess()
        self.init(
            id: try row.value("id"),
            backend: try row.value("backend"),
            job: try row.value("job"),
            target: try row.value("target"),
            name: try row.value("name"),
            description: try row.value("description"),
            createdAt: try row.date("created_at"),
            state: try row.enumValue("state"),
            sizeBytes: try row.value("size_bytes"),
            pinned: try row.value("pinned"),
            deletedAt: try row.optionalDate("deleted_at"),
            runID: try row.value("run_id"),
            keepReason: try row.value("keep_reason"),
            deleteReason: try row.value("delete_reason"))
    }
}

extension JobStateRecord {
    init(row: PostgresRow) throws {
        let row = row.makeRandomAccess()
        self.init(
            name: try row.value("name"),
            paused: try row.value("paused"),
            lastScheduledAt: try row.optionalDate("last_scheduled_at"),
            updatedAt: try row.date("updated_at"))
    }
}

/// No pooled connection came within ``PostgresStateStore/connectionWait``.
struct ConnectionWaitTimedOut: Error {
    var limit: Duration
}

/// Whether a call got its connection before it gave up waiting: whichever comes first wins, once.
private final class ConnectionWait: Sendable {
    private let state = Atomic<Int>(0)  // 0 waiting, 1 connected, 2 abandoned

    /// True when the connection came in time; the body may run.
    func connect() -> Bool { state.compareExchange(expected: 0, desired: 1, ordering: .acquiringAndReleasing).exchanged }

    /// True when the call gives up now; false when the connection came first (the body runs to its end).
    func abandon() -> Bool { state.compareExchange(expected: 0, desired: 2, ordering: .acquiringAndReleasing).exchanged }
}

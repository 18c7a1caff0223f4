import Foundation
import PostgresNIO
import SnapcronCore
import Synchronization

/// Who a daemon is in a cluster: the name it registers under and how long its hold on its runs lasts.
public struct ClusterNode: Sendable, Hashable {
    public var name: String
    /// A node silent this long loses its unfinished runs to the others.
    public var lease: Duration
    /// Where it runs, for people (status).
    public var host: String
    /// Which machine it is (`/etc/machine-id`): a node name held by another machine with a live lease is refused,
    /// however alike their host names (cloned VMs).
    public var instance: String
    public var pid: Int32
    public var version: String
    /// The backends it has: it takes over only runs on these (nil: any).
    public var backends: Set<String>?

    public init(
        name: String, lease: Duration, host: String, instance: String? = nil, pid: Int32, version: String,
        backends: Set<String>? = nil
    ) {
        self.name = name
        self.lease = lease
        self.host = host
        self.instance = instance ?? host
        self.pid = pid
        self.version = version
        self.backends = backends
    }

    var leaseSeconds: Int64 { max(1, lease.components.seconds) }
}

/// This daemon's registration: its node and the epoch its writes carry.
final class ClusterMembership: Sendable {
    let node: ClusterNode
    private let currentEpoch = Atomic<Int64>(0)

    init(node: ClusterNode) { self.node = node }

    var epoch: Int64 {
        get { currentEpoch.load(ordering: .acquiring) }
        set { currentEpoch.store(newValue, ordering: .releasing) }
    }
}

/// The database's clock in whole seconds: leases are judged by one clock, never by the nodes' own.
let databaseNow = "floor(extract(epoch FROM clock_timestamp()))::bigint"

extension PostgresStateStore {
    public var runLease: Duration? { membership?.node.lease }

    /// Registers the node again under a new epoch (its lease lapsed): its earlier runs count as lapsed from now,
    /// and ``takeOverRuns()`` gives back whichever nobody took.
    func registerAgain() async throws {
        guard let membership else { return }
        membership.epoch = try await transaction(.readCommitted) { [self] transaction in
            try await Self.register(membership.node, on: transaction, location: location)
        }
    }

    /// Registers `membership`'s node at open, on the connection that migrated (the pool is not running yet).
    static func register(
        _ membership: ClusterMembership?, location: PostgresStoreLocation, on connection: PostgresConnection,
        logger: Logger
    ) async throws {
        guard let membership else { return }
        let transaction = Transaction(connection: connection, logger: logger)
        do {
            try await transaction.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
            membership.epoch = try await register(membership.node, on: transaction, location: location)
            try await transaction.execute("COMMIT")
        } catch {
            try? await transaction.execute("ROLLBACK")
            if let error = error as? PSQLError {
                throw PostgresStoreError(.queryFailed, "store \(location): \(describe(error))")
            }
            throw error
        }
    }

    /// Inserts the node, or raises its epoch when it is this host's or its lease lapsed; refused while another
    /// host holds the name with a live lease.
    private static func register(_ node: ClusterNode, on transaction: Transaction, location: PostgresStoreLocation)
        async throws -> Int64
    {
        let rows = try await transaction.rows(
            """
            INSERT INTO nodes AS n (name, epoch, lease_until, last_seen, started_at, host, instance, pid, version)
            VALUES (\(node.name), 1, \(unescaped: databaseNow) + \(node.leaseSeconds), \(unescaped: databaseNow),
                    \(unescaped: databaseNow), \(node.host), \(node.instance), \(node.pid), \(node.version))
            ON CONFLICT (name) DO UPDATE SET
                epoch = n.epoch + 1, lease_until = excluded.lease_until, last_seen = excluded.last_seen,
                started_at = excluded.started_at, host = excluded.host, instance = excluded.instance,
                pid = excluded.pid, version = excluded.version
            WHERE n.instance = excluded.instance OR n.lease_until < excluded.last_seen
            RETURNING epoch
            """)
        if let epoch = try rows.first.map({ try $0.decode(Int64.self) }) { return epoch }
        let holder = try await transaction.rows(
            "SELECT host, pid, lease_until - \(unescaped: databaseNow) FROM nodes WHERE name = \(node.name)"
        ).first.map { try $0.decode((String, Int32, Int64).self) }
        let detail = holder.map { "host \($0.0) (pid \($0.1)) holds it for \(max(0, $0.2)) s more" } ?? "it is held"
        throw PostgresStoreError(
            .nodeNameInUse,
            "node name '\(node.name)' is in use on \(location): \(detail); give each node its own node_name")
    }

    public func renewRunLease() async throws -> Bool {
        guard let membership else { return true }
        let node = membership.node
        let renewed = try await transaction(.readCommitted) { transaction in
            try await transaction.rows(
                """
                UPDATE nodes SET lease_until = \(unescaped: databaseNow) + \(node.leaseSeconds),
                    last_seen = \(unescaped: databaseNow)
                WHERE name = \(node.name) AND epoch = \(membership.epoch) AND lease_until >= \(unescaped: databaseNow)
                RETURNING epoch
                """
            ).count == 1
        }
        if renewed { return true }
        logger.warning(
            "Lease on runs lapsed; registering again",
            metadata: ["event": "cluster.lease_lapsed", "node": "\(node.name)", "epoch": "\(membership.epoch)"])
        try await registerAgain()
        return false
    }

    public func takeOverRuns() async throws -> [RunRecord] {
        guard let membership else { return [] }
        let node = membership.node
        let epoch = membership.epoch
        return try await transaction(.readCommitted) { transaction in
            try await transaction.runs(
                """
                WITH lapsed AS (
                    SELECT r.id FROM runs r LEFT JOIN nodes n ON n.name = r.owner_node
                    WHERE r.state IN ('claimed', 'creating', 'waiting')
                      AND (r.owner_node IS NULL OR n.name IS NULL OR n.epoch <> r.owner_epoch
                           OR n.lease_until < \(unescaped: databaseNow))
                      AND (\(node.backends == nil) OR r.backend = ANY(\(Array(node.backends ?? []))::text[]))
                      AND EXISTS (SELECT 1 FROM nodes me WHERE me.name = \(node.name) AND me.epoch = \(epoch)
                                  AND me.lease_until >= \(unescaped: databaseNow))
                    ORDER BY r.id
                    FOR UPDATE OF r SKIP LOCKED
                )
                UPDATE runs SET owner_node = \(node.name), owner_epoch = \(epoch)
                WHERE id IN (SELECT id FROM lapsed)
                RETURNING \(unescaped: runColumns)
                """
            ).sorted { $0.id < $1.id }
        }
    }

    public func ownUnfinishedRun(job: String, scheduledAt: Date) async throws -> RunRecord? {
        let owner = ownerForClaims
        return try await transaction(.readCommitted) { transaction in
            try await transaction.runs(
                """
                SELECT \(unescaped: runColumns) FROM runs
                WHERE job = \(job) AND scheduled_at = \(scheduledAt.epochSeconds)
                  AND state IN ('claimed', 'creating', 'waiting')
                  AND owner_node IS NOT DISTINCT FROM \(owner.node)::text
                  AND owner_epoch IS NOT DISTINCT FROM \(owner.epoch)::int8
                """
            ).first
        }
    }

    public func clusterNodes() async throws -> [ClusterNodeRecord] {
        let me = membership?.node.name
        return try await transaction(.readCommitted) { transaction in
            try await transaction.rows(
                """
                SELECT n.name, n.host, n.pid, n.version, n.started_at, n.last_seen,
                       n.lease_until >= \(unescaped: databaseNow) AS live,
                       (SELECT count(*) FROM runs r WHERE r.owner_node = n.name AND r.owner_epoch = n.epoch
                          AND r.state IN ('claimed', 'creating', 'waiting')) AS held
                FROM nodes n ORDER BY n.name COLLATE "C"
                """
            ).map { row in
                let (name, host, pid, version, started, seen, live, held) = try row.decode(
                    (String, String, Int32, String, Int64, Int64, Bool, Int64).self)
                return ClusterNodeRecord(
                    name: name, host: host, pid: pid, version: version, startedAt: Date(epochSeconds: started),
                    lastSeen: Date(epochSeconds: seen), leaseLive: live, runsHeld: Int(held), isSelf: name == me)
            }
        }
    }

    public func beginRetention(job: String) async throws -> Bool {
        guard let membership else { return true }
        let node = membership.node
        let epoch = membership.epoch
        return try await transaction(.readCommitted) { transaction in
            try await transaction.rows(
                """
                INSERT INTO retention_passes AS p (job, node, epoch, since)
                VALUES (\(job), \(node.name), \(epoch), \(unescaped: databaseNow))
                ON CONFLICT (job) DO UPDATE SET node = excluded.node, epoch = excluded.epoch, since = excluded.since
                WHERE (p.node = excluded.node AND p.epoch = excluded.epoch)  -- a pass this node failed to give back
                   OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.name = p.node AND n.epoch = p.epoch
                                  AND n.lease_until >= \(unescaped: databaseNow))
                RETURNING 1
                """
            ).count == 1
        }
    }

    public func endRetention(job: String) async throws {
        guard let membership else { return }
        try await transaction(.readCommitted) { transaction in
            try await transaction.execute(
                "DELETE FROM retention_passes WHERE job = \(job) AND node = \(membership.node.name)")
        }
    }

    public func publishSchedule(_ fingerprints: [String: String]) async throws -> [String: [String]] {
        guard let membership else { return [:] }
        let node = membership.node
        let json = String(decoding: try JSONEncoder().encode(fingerprints), as: UTF8.self)
        let others = try await transaction(.readCommitted) { transaction in
            try await transaction.execute("UPDATE nodes SET schedule = \(json) WHERE name = \(node.name)")
            return try await transaction.rows(
                """
                SELECT name, schedule FROM nodes
                WHERE name <> \(node.name) AND lease_until >= \(unescaped: databaseNow) AND schedule <> '{}'
                ORDER BY name COLLATE "C"
                """
            ).map { try $0.decode((String, String).self) }
        }
        var differences: [String: [String]] = [:]
        for (name, text) in others {
            guard let theirs = try? JSONDecoder().decode([String: String].self, from: Data(text.utf8)) else { continue }
            let jobs = Set(theirs.keys).union(fingerprints.keys).filter { theirs[$0] != fingerprints[$0] }.sorted()
            if !jobs.isEmpty { differences[name] = jobs }
        }
        return differences
    }

    /// Throws ``RunFencedError`` unless the run is this node's, under its current epoch and a live lease. A store
    /// without a node (one daemon, or a tool) owns everything.
    func fence(_ transaction: Transaction, runID: Int64) async throws {
        guard let membership else { return }
        let node = membership.node
        let epoch = membership.epoch
        let held = try await transaction.rows(
            """
            SELECT r.owner_node IS NOT DISTINCT FROM \(node.name) AND r.owner_epoch IS NOT DISTINCT FROM \(epoch)
                   AND EXISTS (SELECT 1 FROM nodes me WHERE me.name = \(node.name) AND me.epoch = \(epoch)
                               AND me.lease_until >= \(unescaped: databaseNow))
            FROM runs r WHERE r.id = \(runID)
            """
        ).first.map { try $0.decode(Bool.self) }
        guard held == false else { return }  // no such run: the caller says so
        throw RunFencedError(
            runID: runID,
            "run \(runID) is not node \(node.name)'s any more (its lease of epoch \(epoch) lapsed); nothing written")
    }

    /// Throws ``RunFencedError`` unless this node's lease is live (before a batch write of its runs).
    func fenceNode(_ transaction: Transaction) async throws {
        guard let membership else { return }
        let node = membership.node
        let epoch = membership.epoch
        let live = try await transaction.rows(
            """
            SELECT 1 FROM nodes WHERE name = \(node.name) AND epoch = \(epoch)
              AND lease_until >= \(unescaped: databaseNow)
            """
        ).count == 1
        guard !live else { return }
        throw RunFencedError(
            runID: nil, "node \(node.name)'s lease of epoch \(epoch) lapsed; its runs may be another node's now")
    }

    /// The owner columns of runs this node claims: NULL without a node.
    var ownerForClaims: (node: String?, epoch: Int64?) {
        guard let membership else { return (nil, nil) }
        return (membership.node.name, membership.epoch)
    }
}

import Foundation
import SnapcronCore

/// The SQLite store is the embedded ``StateStore``: its synchronous methods answer the protocol's async ones.
extension SnapcronDatabase: StateStore {
    public func health() async -> StoreHealth { healthCheck() }

    /// One daemon per state directory (its lock file): every unfinished run is its own, with no lease.
    public func ownUnfinishedRun(job: String, scheduledAt: Date) async throws -> RunRecord? {
        guard let run = try run(job: job, scheduledAt: scheduledAt), !run.state.isTerminal else { return nil }
        return run
    }

    public var runLease: Duration? { nil }
    public func renewRunLease() async throws -> Bool { true }
    public func takeOverRuns() async throws -> [RunRecord] { [] }
    public func clusterNodes() async throws -> [ClusterNodeRecord] { [] }
    /// The scheduler runs one pass per job at a time, and no other daemon shares the store.
    public func beginRetention(job: String) async throws -> Bool { true }
    public func endRetention(job: String) async throws {}
    public func publishSchedule(_ fingerprints: [String: String]) async throws -> [String: [String]] { [:] }
}

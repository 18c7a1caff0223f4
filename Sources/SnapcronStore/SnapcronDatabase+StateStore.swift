import Foundation
import SnapcronCore

/// The SQLite store is the embedded ``StateStore``: its synchronous methods answer the protocol's async ones.
extension SnapcronDatabase: StateStore {
    public func health() async -> StoreHealth { healthCheck() }

    /// One daemon per state directory (its lock file): every unfinished run is its own, with no lease.
    public var runLease: Duration? { nil }
    public func renewRunLease() async throws -> Bool { true }
    public func takeOverRuns() async throws -> [RunRecord] { [] }
}

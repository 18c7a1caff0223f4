import Foundation
import SnapcronCore

/// The SQLite store is the embedded ``StateStore``: its synchronous methods answer the protocol's async ones.
extension SnapcronDatabase: StateStore {
    public func health() async -> StoreHealth { healthCheck() }
}

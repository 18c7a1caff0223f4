import Foundation
import SnapcronCore

// TEMPORARY: placeholders until the store branch lands; removed at its merge.
extension SnapcronDatabase {
    public func beginDeleting(id: String, backend: String, reason: String, now: Date) throws -> ImageRecord? {
        guard let image = try image(id: id, backend: backend), image.state == .active, !image.pinned else { return nil }
        return image
    }
    public func abortDeleting(id: String, backend: String, error: String, now: Date) throws -> ImageRecord? { nil }
    public func imagesBeingDeleted() throws -> [ImageRecord] { [] }
    public func recordFoundImage(_ image: FoundImage, now: Date) throws -> ImageRecord? { nil }
    public func imageStates(backend: String) throws -> [String: StoredImageState] { [:] }
    public func adoptImage(runID: Int64, imageID: String, description: String?, now: Date) throws -> RunRecord {
        throw SnapcronStoreError(.invalidArgument, "not yet")
    }
    public func pruneHistory(olderThan cutoff: Date) throws -> HistoryPruneResult { HistoryPruneResult(runs: 0, images: 0) }
    public func clampLastScheduled(notAfter now: Date) throws -> [String] { [] }
    public func latestRecordedInstant() throws -> Date? { nil }
    public func newestActiveImageDates(notAfter now: Date) throws -> [String: Date] { try newestActiveImageDates() }
    public func imageTargets() throws -> [ImageTarget] { [] }
}

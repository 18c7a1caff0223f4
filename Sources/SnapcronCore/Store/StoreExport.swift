import Foundation

/// Everything a store holds, to move it into another store (`snapcronctl store copy`, SQLite to PostgreSQL).
public struct StoreExport: Sendable {
    /// The installation id: image markers carry it, so the sweep still knows these images after the move.
    public var installationID: String
    public var runs: [RunRecord]
    /// Every image, deleted ones too, with when it last changed (the records do not carry that).
    public var images: [ExportedImage]
    public var jobs: [JobStateRecord]
    /// Hook results in the order they were recorded.
    public var hookResults: [HookRecord]

    public init(
        installationID: String, runs: [RunRecord], images: [ExportedImage], jobs: [JobStateRecord],
        hookResults: [HookRecord]
    ) {
        self.installationID = installationID
        self.runs = runs
        self.images = images
        self.jobs = jobs
        self.hookResults = hookResults
    }
}

/// One image of a ``StoreExport``.
public struct ExportedImage: Sendable, Hashable {
    public var record: ImageRecord
    public var updatedAt: Date

    public init(record: ImageRecord, updatedAt: Date) {
        self.record = record
        self.updatedAt = updatedAt
    }
}

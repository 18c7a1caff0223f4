import SnapcronCore
import Foundation
import GRDB

extension SnapcronDatabase {
    /// Records an image found at its backend that the store did not know (e.g. a create whose reply was lost).
    ///
    /// Linked to the job's run that chose its name, if any (the newest, should several have). Returns nil,
    /// writing nothing, when the image is already recorded. Throws `.invalidArgument` for a state snapcron only
    /// sets itself (`deleting`, `deleted`) or a negative size.
    @discardableResult
    public func recordFoundImage(_ image: FoundImage, now: Date) throws -> ImageRecord? {
        guard image.state != .deleted, image.state != .deleting else {
            throw SnapcronStoreError(
                .invalidArgument,
                "image \(image.id) at backend \(image.backend) cannot be recorded as found \(image.state.rawValue)")
        }
        if let size = image.sizeBytes, size < 0 {
            throw SnapcronStoreError(
                .invalidArgument, "image size must not be negative (image \(image.id) at backend \(image.backend))")
        }
        return try write { db in
            guard try fetchImage(db, id: image.id, backend: image.backend) == nil else { return nil }
            let runID = try Int64.fetchOne(
                db.cachedStatement(sql: """
                    SELECT id FROM runs WHERE job = ? AND image_name = ? ORDER BY id DESC LIMIT 1
                    """), arguments: [image.job, image.name])
            try db.cachedStatement(sql: """
                    INSERT INTO images (backend, id, job, target, name, description, created_at, updated_at, state,
                                        size_bytes, pinned, run_id)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)
                    """).execute(arguments: [
                    image.backend, image.id, image.job, image.target, image.name, image.description,
                    image.createdAt.epochSeconds, now.epochSeconds, image.state.rawValue, image.sizeBytes, runID,
                ])
            return try fetchImage(db, id: image.id, backend: image.backend)
        }
    }

    /// Every image recorded at `backend`, in any state, by backend image id.
    public func imageStates(backend: String) throws -> [String: StoredImageState] {
        try read { db in
            let rows = try Row.fetchAll(
                db.cachedStatement(sql: "SELECT id, state FROM images WHERE backend = ?"), arguments: [backend])
            var states: [String: StoredImageState] = [:]
            states.reserveCapacity(rows.count)
            for row in rows {
                states[try row.decode(forColumn: "id")] = try decodeEnum(row, "state")
            }
            return states
        }
    }

    /// Gives a run that ended without an image id (failed, timed out or cancelled) the image found under its name.
    ///
    /// Records `imageID` on the run and inserts the image (`queued`, so the follow-up of images left unfinished
    /// learns its fate) linked to it; the run keeps its terminal state. The image's creation time is the run's first
    /// create attempt. Throws `.runNotFound`, `.illegalTransition` for a run in another state or one that has an
    /// image id, `.conflict` when the image is already recorded; nothing is written then.
    @discardableResult
    public func adoptImage(runID: Int64, imageID: String, description: String?, now: Date) throws -> RunRecord {
        try write { db in
            guard let run = try fetchRun(db, id: runID) else { throw Self.runNotFound(runID) }
            guard [.failed, .timedOut, .cancelled].contains(run.state) else {
                throw SnapcronStoreError(
                    .illegalTransition,
                    "run \(runID) of job \(run.job) is \(run.state.rawValue); only a failed, timed-out or cancelled "
                        + "run can adopt image \(imageID)")
            }
            if let existing = run.imageID {
                throw SnapcronStoreError(
                    .illegalTransition, "run \(runID) of job \(run.job) already has image \(existing)")
            }
            // A run that was claimed always has these (CHECK constraint on runs); only missed and skipped lack them.
            let (backend, target, name) = (run.backend!, run.target!, run.imageName!)
            if let existing = try fetchImage(db, id: imageID, backend: backend) {
                let owner = existing.runID.map { "run \($0)" } ?? "no run"
                throw SnapcronStoreError(
                    .conflict, "image \(imageID) at backend \(backend) is already recorded for \(owner)")
            }
            try db.cachedStatement(sql: "UPDATE runs SET image_id = ? WHERE id = ?").execute(arguments: [
                imageID, runID,
            ])
            let createdAt = (run.startedAt ?? run.claimedAt).epochSeconds
            try db.cachedStatement(sql: """
                    INSERT INTO images (backend, id, job, target, name, description, created_at, updated_at, state,
                                        pinned, run_id)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', 0, ?)
                    """).execute(arguments: [
                    backend, imageID, run.job, target, name, description, createdAt, now.epochSeconds, runID,
                ])
            return try fetchRun(db, id: runID)!
        }
    }

    /// Each (job, backend, target) that has images not deleted, with how many; for finding orphaned images (a job
    /// or target no longer configured).
    /// The (backend, target) pairs of runs that started a create and ended (failed, timed out, cancelled) without
    /// an image since `since`, for the sweep. Reads the (state, finished_at) index.
    public func targetsOfRunsEndedWithoutImage(since: Date) throws -> [(backend: String, target: String)] {
        try read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT DISTINCT backend, target FROM runs
                    WHERE state IN ('failed', 'timed_out', 'cancelled') AND finished_at >= ?
                      AND image_id IS NULL AND started_at IS NOT NULL AND backend IS NOT NULL AND target IS NOT NULL
                    ORDER BY backend, target
                    """, arguments: [since.epochSeconds]
            ).map { row in (try row.decode(forColumn: "backend"), try row.decode(forColumn: "target")) }
        }
    }

    public func imageTargets() throws -> [ImageTarget] {
        try read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT job, backend, target, COUNT(*) AS count FROM images WHERE state <> 'deleted'
                    GROUP BY job, backend, target ORDER BY job, backend, target
                    """
            ).map { row in
                ImageTarget(
                    job: try row.decode(forColumn: "job"), backend: try row.decode(forColumn: "backend"),
                    target: try row.decode(forColumn: "target"), count: try row.decode(forColumn: "count"))
            }
        }
    }
}

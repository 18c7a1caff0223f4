import Foundation
import GRDB
import SnapcronCore

extension SnapcronDatabase {
    /// The images of `job`, newest first; deleted ones only when `includeDeleted`.
    public func images(job: String, includeDeleted: Bool = false) throws -> [ImageRecord] {
        try read { db in
            try Row.fetchAll(
                db.cachedStatement(sql: """
                    SELECT * FROM images WHERE job = ? AND (? OR state <> 'deleted')
                    ORDER BY created_at DESC, id DESC
                    """), arguments: [job, includeDeleted]
            ).map(ImageRecord.init(row:))
        }
    }

    /// Images still `queued` or `saving` whose run gave up on them (timed out, cancelled, failed) or that have no
    /// run: nobody polls them any more, but the backend may still finish them. Oldest first, at most `limit`.
    public func imagesLeftUnfinished(limit: Int) throws -> [ImageRecord] {
        try read { db in
            try Row.fetchAll(
                db.cachedStatement(sql: """
                    SELECT images.* FROM images LEFT JOIN runs ON runs.id = images.run_id
                    WHERE images.state IN ('queued', 'saving')
                      AND (runs.id IS NULL OR runs.state NOT IN ('claimed', 'creating', 'waiting'))
                    ORDER BY images.created_at, images.id LIMIT ?
                    """), arguments: [limit]
            ).map(ImageRecord.init(row:))
        }
    }

    /// The image with backend image id `id` at `backend`, if snapcron recorded it.
    public func image(id: String, backend: String) throws -> ImageRecord? {
        try read { db in try fetchImage(db, id: id, backend: backend) }
    }

    /// Pins or unpins an image; retention never deletes a pinned image.
    ///
    /// Throws `.illegalTransition` (nothing written) when pinning an image that is being deleted: the backend
    /// delete is already under way. Unpinning is always allowed.
    @discardableResult
    public func setPinned(id: String, backend: String, _ pinned: Bool) throws -> ImageRecord {
        try write { db in
            let image = try fetchExistingImage(db, id: id, backend: backend)
            if pinned && image.state == .deleting {
                throw SnapcronStoreError(
                    .illegalTransition, "image \(id) at backend \(backend) is being deleted; it cannot be pinned")
            }
            try db.cachedStatement(sql: "UPDATE images SET pinned = ? WHERE backend = ? AND id = ?").execute(arguments: [pinned, backend, id])
            return try fetchImage(db, id: id, backend: backend)!
        }
    }

    /// Starts a retention delete: an `active`, unpinned image becomes `deleting`, with `reason` as its delete reason.
    ///
    /// Call it before asking the backend to delete, so a pin arriving meanwhile is refused instead of lost. Returns
    /// nil (nothing written) for an image that is pinned, not active, or not recorded. Finish with
    /// ``markImageDeleted(id:backend:now:reason:)`` or ``abortDeleting(id:backend:error:now:)``.
    public func beginDeleting(id: String, backend: String, reason: String, now: Date) throws -> ImageRecord? {
        try write { db in
            try db.cachedStatement(sql: """
                    UPDATE images SET state = 'deleting', delete_reason = ?, keep_reason = NULL, updated_at = ?
                    WHERE backend = ? AND id = ? AND state = 'active' AND pinned = 0
                    """).execute(arguments: [reason, now.epochSeconds, backend, id])
            guard db.changesCount == 1 else { return nil }
            return try fetchImage(db, id: id, backend: backend)
        }
    }

    /// Ends a delete the backend refused: the `deleting` image is `active` again, kept with the error as its reason
    /// until the next retention pass decides again. Returns nil (nothing written) if the image is not deleting.
    @discardableResult
    public func abortDeleting(id: String, backend: String, error: String, now: Date) throws -> ImageRecord? {
        try write { db in
            try db.cachedStatement(sql: """
                    UPDATE images SET state = 'active', delete_reason = NULL, keep_reason = ?, updated_at = ?
                    WHERE backend = ? AND id = ? AND state = 'deleting'
                    """).execute(arguments: [
                    "delete failed: \(error); retried at the next retention pass", now.epochSeconds, backend, id,
                ])
            guard db.changesCount == 1 else { return nil }
            return try fetchImage(db, id: id, backend: backend)
        }
    }

    /// Images whose delete was started and neither recorded nor aborted (a daemon stopped mid-delete), oldest first.
    public func imagesBeingDeleted() throws -> [ImageRecord] {
        try read { db in
            try Row.fetchAll(
                db.cachedStatement(sql: "SELECT * FROM images WHERE state = 'deleting' ORDER BY created_at, id")
            ).map(ImageRecord.init(row:))
        }
    }

    /// Records that snapcron deleted the image, and why; repeating it for a deleted image changes nothing.
    ///
    /// Normally follows ``beginDeleting(id:backend:reason:now:)``; an image in another state (not yet through
    /// `deleting`) may still be marked directly. Throws `.illegalTransition` for a pinned image: unpin it first.
    @discardableResult
    public func markImageDeleted(id: String, backend: String, now: Date, reason: String) throws -> ImageRecord {
        try write { db in
            let image = try fetchExistingImage(db, id: id, backend: backend)
            if image.state == .deleted { return image }  // a delete retried after a crash
            guard !image.pinned else {
                throw SnapcronStoreError(.illegalTransition, "image \(id) at backend \(backend) is pinned")
            }
            try db.cachedStatement(sql: """
                    UPDATE images SET state = 'deleted', deleted_at = ?, updated_at = ?, delete_reason = ?,
                        keep_reason = NULL
                    WHERE backend = ? AND id = ?
                    """).execute(arguments: [now.epochSeconds, now.epochSeconds, reason, backend, id])
            return try fetchImage(db, id: id, backend: backend)!
        }
    }

    /// Records one retention verdict (see ``recordRetentionDecisions(_:)``).
    @discardableResult
    public func recordRetentionDecision(id: String, backend: String, _ decision: RetentionDecision) throws
        -> ImageRecord
    {
        try recordRetentionDecisions([(ImageKey(id: id, backend: backend), decision)])[0]
    }

    /// Records a retention pass's verdicts in one transaction: the reason each image was kept or is to be deleted.
    ///
    /// A delete verdict only records the plan; ``markImageDeleted(id:backend:now:reason:)`` records the deletion.
    /// Throws `.illegalTransition` (nothing written) for a delete verdict on a pinned image, or on one already deleted
    /// or being deleted.
    @discardableResult
    public func recordRetentionDecisions(_ decisions: [(ImageKey, RetentionDecision)]) throws -> [ImageRecord] {
        try write { db in
            try decisions.map { key, decision in
                let image = try fetchExistingImage(db, id: key.id, backend: key.backend)
                let (keepReason, deleteReason): (String?, String?)
                switch decision {
                case .keep(let reason):
                    (keepReason, deleteReason) = (reason, nil)
                case .delete(let reason):
                    if let refusal = image.deleteRefusal {
                        throw SnapcronStoreError(
                            .illegalTransition,
                            "image \(key.id) at backend \(key.backend) cannot be deleted: \(refusal)")
                    }
                    (keepReason, deleteReason) = (nil, reason)
                }
                try db.cachedStatement(sql: "UPDATE images SET keep_reason = ?, delete_reason = ? WHERE backend = ? AND id = ?").execute(arguments: [keepReason, deleteReason, key.backend, key.id])
                return try fetchImage(db, id: key.id, backend: key.backend)!
            }
        }
    }

    /// Records an image state seen at the backend outside a run's polling (e.g. `gone` found by a list).
    ///
    /// Use ``beginDeleting(id:backend:reason:now:)`` and ``markImageDeleted(id:backend:now:reason:)`` for deletions.
    /// Throws `.illegalTransition` (nothing written) for an image that is deleted (final) or being deleted (only
    /// ``markImageDeleted(id:backend:now:reason:)`` and ``abortDeleting(id:backend:error:now:)`` move it on).
    @discardableResult
    public func updateImageState(id: String, backend: String, state: StoredImageState, sizeBytes: Int64? = nil, now: Date)
        throws -> ImageRecord
    {
        guard state != .deleted, state != .deleting else {
            throw SnapcronStoreError(
                .invalidArgument,
                "use beginDeleting and markImageDeleted to record that image \(id) is being deleted or was deleted")
        }
        return try write { db in
            let image = try fetchExistingImage(db, id: id, backend: backend)
            guard image.state != .deleted, image.state != .deleting else {
                let current = image.state == .deleted ? "is deleted" : "is being deleted"
                throw SnapcronStoreError(
                    .illegalTransition, "image \(id) at backend \(backend) \(current); cannot become \(state.rawValue)")
            }
            try db.cachedStatement(sql: """
                    UPDATE images SET state = ?, size_bytes = COALESCE(?, size_bytes), updated_at = ?
                    WHERE backend = ? AND id = ?
                    """).execute(arguments: [state.rawValue, sizeBytes, now.epochSeconds, backend, id])
            return try fetchImage(db, id: id, backend: backend)!
        }
    }

    // MARK: - Helpers

    func fetchImage(_ db: Database, id: String, backend: String) throws -> ImageRecord? {
        try Row.fetchOne(
                db.cachedStatement(sql: "SELECT * FROM images WHERE backend = ? AND id = ?"), arguments: [backend, id])
            .map(ImageRecord.init(row:))
    }

    private func fetchExistingImage(_ db: Database, id: String, backend: String) throws -> ImageRecord {
        guard let image = try fetchImage(db, id: id, backend: backend) else {
            throw SnapcronStoreError(.imageNotFound, "image \(id) at backend \(backend) is not recorded")
        }
        return image
    }
}

extension ImageRecord {
    /// Decodes an `images` row; an unknown state is reported as corruption.
    init(row: Row) throws {
        self.init(
            id: try row.decode(forColumn: "id"),
            backend: try row.decode(forColumn: "backend"),
            job: try row.decode(forColumn: "job"),
            target: try row.decode(forColumn: "target"),
            name: try row.decode(forColumn: "name"),
            description: try row.decode(forColumn: "description"),
            createdAt: Date(epochSeconds: try row.decode(forColumn: "created_at")),
            state: try decodeEnum(row, "state"),
            sizeBytes: try row.decode(forColumn: "size_bytes"),
            pinned: try row.decode(forColumn: "pinned"),
            deletedAt: try decodeDate(row, "deleted_at"),
            runID: try row.decode(forColumn: "run_id"),
            keepReason: try row.decode(forColumn: "keep_reason"),
            deleteReason: try row.decode(forColumn: "delete_reason"))
    }
}

extension SnapcronDatabase {
    /// The jobs that have at least one image not deleted: the only ones retention can have work for.
    public func jobsWithImages() throws -> Set<String> {
        try read { db in
            Set(try String.fetchAll(db.cachedStatement(sql: "SELECT DISTINCT job FROM images WHERE state <> 'deleted'")))
        }
    }
}

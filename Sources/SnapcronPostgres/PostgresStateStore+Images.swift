import Foundation
import PostgresNIO
import SnapcronCore

extension PostgresStateStore {
    public func images(job: String, includeDeleted: Bool) async throws -> [ImageRecord] {
        try await transaction { transaction in
            try await transaction.images(
                """
                SELECT * FROM images WHERE job = \(job) AND (\(includeDeleted) OR state <> 'deleted')
                ORDER BY created_at DESC, id COLLATE "C" DESC
                """)
        }
    }

    public func image(id: String, backend: String) async throws -> ImageRecord? {
        try await transaction { [self] transaction in try await fetchImage(transaction, id: id, backend: backend) }
    }

    /// Images still `queued` or `saving` whose run gave up on them or that have no run, oldest first.
    public func imagesLeftUnfinished(limit: Int) async throws -> [ImageRecord] {
        try await transaction { transaction in
            try await transaction.images(
                """
                SELECT images.* FROM images LEFT JOIN runs ON runs.id = images.run_id
                WHERE images.state IN ('queued', 'saving')
                  AND (runs.id IS NULL OR runs.state NOT IN ('claimed', 'creating', 'waiting'))
                ORDER BY images.created_at, images.id COLLATE "C" LIMIT \(Int64(max(limit, 0)))
                """)
        }
    }

    public func imageStates(backend: String) async throws -> [String: StoredImageState] {
        try await transaction { transaction in
            var states: [String: StoredImageState] = [:]
            for row in try await transaction.rows("SELECT id, state FROM images WHERE backend = \(backend)") {
                let row = row.makeRandomAccess()
                states[try row.value("id", as: String.self)] = try row.enumValue("state")
            }
            return states
        }
    }

    /// Linked to the job's newest run that chose the image's name, if any; nil (nothing written) when known.
    public func recordFoundImage(_ image: FoundImage, now: Date) async throws -> ImageRecord? {
        guard image.state != .deleted, image.state != .deleting else {
            throw PostgresStoreError(
                .invalidArgument,
                "image \(image.id) at backend \(image.backend) cannot be recorded as found \(image.state.rawValue)")
        }
        if let size = image.sizeBytes, size < 0 {
            throw PostgresStoreError(
                .invalidArgument, "image size must not be negative (image \(image.id) at backend \(image.backend))")
        }
        return try await transaction { transaction in
            try await transaction.images(
                """
                INSERT INTO images (backend, id, job, target, name, description, created_at, updated_at, state,
                                    size_bytes, pinned, run_id)
                VALUES (\(image.backend), \(image.id), \(image.job), \(image.target), \(image.name),
                        \(image.description), \(image.createdAt.epochSeconds), \(now.epochSeconds),
                        \(image.state.rawValue), \(image.sizeBytes), FALSE,
                        (SELECT id FROM runs WHERE job = \(image.job) AND image_name = \(image.name)
                         ORDER BY id DESC LIMIT 1))
                ON CONFLICT (backend, id) DO NOTHING
                RETURNING *
                """
            ).first
        }
    }

    public func imageTargets() async throws -> [ImageTarget] {
        try await transaction { transaction in
            try await transaction.rows(
                """
                SELECT job, backend, target, count(*) AS count FROM images WHERE state <> 'deleted'
                GROUP BY job, backend, target ORDER BY job COLLATE "C", backend COLLATE "C", target COLLATE "C"
                """
            ).map { row in
                let row = row.makeRandomAccess()
                return ImageTarget(
                    job: try row.value("job"), backend: try row.value("backend"), target: try row.value("target"),
                    count: Int(try row.value("count", as: Int64.self)))
            }
        }
    }

    /// A pin of an image being deleted is refused (`.illegalTransition`, nothing written); unpinning always works.
    public func setPinned(id: String, backend: String, _ pinned: Bool) async throws -> ImageRecord {
        try await transaction { [self] transaction in
            let image = try await fetchExistingImage(transaction, id: id, backend: backend)
            if pinned && image.state == .deleting {
                throw PostgresStoreError(
                    .illegalTransition, "image \(id) at backend \(backend) is being deleted; it cannot be pinned")
            }
            return try await transaction.images(
                "UPDATE images SET pinned = \(pinned) WHERE backend = \(backend) AND id = \(id) RETURNING *")[0]
        }
    }

    public func updateImageState(id: String, backend: String, state: StoredImageState, sizeBytes: Int64?, now: Date)
        async throws -> ImageRecord
    {
        guard state != .deleted, state != .deleting else {
            throw PostgresStoreError(
                .invalidArgument,
                "use beginDeleting and markImageDeleted to record that image \(id) is being deleted or was deleted")
        }
        return try await transaction { [self] transaction in
            let image = try await fetchExistingImage(transaction, id: id, backend: backend)
            guard image.state != .deleted, image.state != .deleting else {
                let current = image.state == .deleted ? "is deleted" : "is being deleted"
                throw PostgresStoreError(
                    .illegalTransition, "image \(id) at backend \(backend) \(current); cannot become \(state.rawValue)")
            }
            return try await transaction.images(
                """
                UPDATE images SET state = \(state.rawValue), size_bytes = COALESCE(\(sizeBytes), size_bytes),
                    updated_at = \(now.epochSeconds)
                WHERE backend = \(backend) AND id = \(id) RETURNING *
                """)[0]
        }
    }

    /// A delete verdict on a pinned image, or one deleted or being deleted, throws `.illegalTransition` and writes
    /// nothing of the whole pass.
    public func recordRetentionDecisions(_ decisions: [(ImageKey, RetentionDecision)]) async throws -> [ImageRecord] {
        let decisions = decisions.map { Decision(key: $0.0, decision: $0.1) }
        return try await transaction { [self] transaction in
            var records: [ImageRecord] = []
            for decision in decisions {
                let key = decision.key
                let image = try await fetchExistingImage(transaction, id: key.id, backend: key.backend)
                let (keepReason, deleteReason): (String?, String?)
                switch decision.decision {
                case .keep(let reason):
                    (keepReason, deleteReason) = (reason, nil)
                case .delete(let reason):
                    if let refusal = image.deleteRefusal {
                        throw PostgresStoreError(
                            .illegalTransition,
                            "image \(key.id) at backend \(key.backend) cannot be deleted: \(refusal)")
                    }
                    (keepReason, deleteReason) = (nil, reason)
                }
                records.append(
                    try await transaction.images(
                        """
                        UPDATE images SET keep_reason = \(keepReason), delete_reason = \(deleteReason)
                        WHERE backend = \(key.backend) AND id = \(key.id) RETURNING *
                        """)[0])
            }
            return records
        }
    }

    public func beginDeleting(id: String, backend: String, reason: String, now: Date) async throws -> ImageRecord? {
        try await transaction { transaction in
            try await transaction.images(
                """
                UPDATE images SET state = 'deleting', delete_reason = \(reason), keep_reason = NULL,
                    updated_at = \(now.epochSeconds)
                WHERE backend = \(backend) AND id = \(id) AND state = 'active' AND NOT pinned
                RETURNING *
                """
            ).first
        }
    }

    /// Repeating it for a deleted image changes nothing; a pinned image throws `.illegalTransition`.
    public func markImageDeleted(id: String, backend: String, now: Date, reason: String) async throws -> ImageRecord {
        try await transaction { [self] transaction in
            let image = try await fetchExistingImage(transaction, id: id, backend: backend)
            if image.state == .deleted { return image }  // a delete retried after a crash
            guard !image.pinned else {
                throw PostgresStoreError(.illegalTransition, "image \(id) at backend \(backend) is pinned")
            }
            return try await transaction.images(
                """
                UPDATE images SET state = 'deleted', deleted_at = \(now.epochSeconds), updated_at = \(now.epochSeconds),
                    delete_reason = \(reason), keep_reason = NULL
                WHERE backend = \(backend) AND id = \(id) RETURNING *
                """)[0]
        }
    }

    public func abortDeleting(id: String, backend: String, error: String, now: Date) async throws -> ImageRecord? {
        try await transaction { transaction in
            try await transaction.images(
                """
                UPDATE images SET state = 'active', delete_reason = NULL,
                    keep_reason = \("delete failed: \(error); retried at the next retention pass"),
                    updated_at = \(now.epochSeconds)
                WHERE backend = \(backend) AND id = \(id) AND state = 'deleting'
                RETURNING *
                """
            ).first
        }
    }

    public func imagesBeingDeleted() async throws -> [ImageRecord] {
        try await transaction { transaction in
            try await transaction.images(
                "SELECT * FROM images WHERE state = 'deleting' ORDER BY created_at, id COLLATE \"C\"")
        }
    }

    public func newestActiveImageDates(notAfter now: Date) async throws -> [String: Date] {
        try await transaction { transaction in
            var result: [String: Date] = [:]
            for row in try await transaction.rows(
                """
                SELECT job, max(created_at) AS newest FROM images
                WHERE state = 'active' AND created_at <= \(now.epochSeconds) GROUP BY job
                """)
            {
                let row = row.makeRandomAccess()
                result[try row.value("job")] = try row.date("newest")
            }
            return result
        }
    }

    public func jobsWithImages() async throws -> Set<String> {
        try await transaction { transaction in
            Set(
                try await transaction.rows("SELECT DISTINCT job FROM images WHERE state <> 'deleted'").map {
                    try $0.decode(String.self)
                })
        }
    }

    // MARK: - Helpers

    func fetchImage(_ transaction: Transaction, id: String, backend: String) async throws -> ImageRecord? {
        try await transaction.images("SELECT * FROM images WHERE backend = \(backend) AND id = \(id) FOR UPDATE").first
    }

    private func fetchExistingImage(_ transaction: Transaction, id: String, backend: String) async throws
        -> ImageRecord
    {
        guard let image = try await fetchImage(transaction, id: id, backend: backend) else {
            throw PostgresStoreError(.imageNotFound, "image \(id) at backend \(backend) is not recorded")
        }
        return image
    }
}

/// A retention verdict carried into a transaction (tuples are not Sendable-checked as one value).
private struct Decision: Sendable {
    var key: ImageKey
    var decision: RetentionDecision
}

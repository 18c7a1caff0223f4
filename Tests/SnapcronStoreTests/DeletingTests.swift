import SnapcronCore
import Foundation
import SnapcronStore
import Testing

/// Deleting is a state: a pin confirmed while a backend delete is under way must not be deleted anyway.
@Suite struct DeletingTests {
    let db: SnapcronDatabase

    init() throws { db = try .inMemory() }

    @Test func beginDeletingMarksAnActiveUnpinnedImageUntilItIsDeleted() throws {
        // Given an active image
        try db.activeImage("web", at: 0, image: "img-1")
        // When its delete begins
        let deleting = try #require(
            try db.beginDeleting(id: "img-1", backend: "fake", reason: "beyond keep=1", now: minute(10)))
        // Then it is deleting, with the reason, and listed for resuming
        #expect(deleting.state == .deleting)
        #expect(deleting.deleteReason == "beyond keep=1")
        #expect(deleting.deletedAt == nil)
        #expect(try db.imagesBeingDeleted() == [deleting])
        // When the backend delete succeeds
        let deleted = try db.markImageDeleted(id: "img-1", backend: "fake", now: minute(11), reason: "beyond keep=1")
        // Then it is deleted and no longer being deleted
        #expect(deleted.state == .deleted)
        #expect(deleted.deletedAt == minute(11))
        #expect(try db.imagesBeingDeleted().isEmpty)
        #expect(try db.markImageDeleted(id: "img-1", backend: "fake", now: minute(12), reason: "again") == deleted)
    }

    @Test func beginDeletingRefusesPinnedUnfinishedDeletedAndUnknownImages() throws {
        // Given a pinned active image, a queued one and a deleted one
        try db.activeImage("web", at: 0, image: "pinned")
        try db.setPinned(id: "pinned", backend: "fake", true)
        try db.waitingRun("web", at: 60, image: "queued")
        try db.activeImage("web", at: 120, image: "deleted")
        try db.markImageDeleted(id: "deleted", backend: "fake", now: minute(130), reason: "old")
        let before = try db.images(job: "web", includeDeleted: true)
        // When their deletes would begin, then none does and nothing is written
        for id in ["pinned", "queued", "deleted", "unknown"] {
            #expect(try db.beginDeleting(id: id, backend: "fake", reason: "old", now: minute(200)) == nil, "\(id)")
        }
        #expect(try db.beginDeleting(id: "pinned", backend: "other", reason: "old", now: minute(200)) == nil)
        #expect(try db.images(job: "web", includeDeleted: true) == before)
        #expect(try db.imagesBeingDeleted().isEmpty)
    }

    @Test func aPinDuringADeleteIsRefusedAndChangesNothing() throws {
        // Given an image whose backend delete is under way
        try db.activeImage("web", at: 0, image: "img-1")
        let deleting = try #require(
            try db.beginDeleting(id: "img-1", backend: "fake", reason: "beyond keep=1", now: minute(10)))
        // When an operator pins it
        let error = #expect(throws: SnapcronStoreError.self) { try db.setPinned(id: "img-1", backend: "fake", true) }
        // Then the pin is refused, saying why, and the image is unchanged
        #expect(error?.code == .illegalTransition)
        #expect(error?.message == "image img-1 at backend fake is being deleted; it cannot be pinned")
        #expect(try db.image(id: "img-1", backend: "fake") == deleting)
        // Unpinning is always allowed, and the delete completes
        #expect(try db.setPinned(id: "img-1", backend: "fake", false) == deleting)
        #expect(try db.markImageDeleted(id: "img-1", backend: "fake", now: minute(11), reason: "x").state == .deleted)
    }

    @Test func abortedDeleteMakesTheImageActiveAndPinnableAgain() throws {
        // Given an image being deleted
        try db.activeImage("web", at: 0, image: "img-1")
        try #require(
            try db.beginDeleting(id: "img-1", backend: "fake", reason: "beyond keep=1", now: minute(10)) != nil)
        // When the backend refuses the delete
        let aborted = try #require(
            try db.abortDeleting(id: "img-1", backend: "fake", error: "503 unavailable", now: minute(11)))
        // Then the image is active, kept with the error until the next pass
        #expect(aborted.state == .active)
        #expect(aborted.keepReason == "delete failed: 503 unavailable; retried at the next retention pass")
        #expect(aborted.deleteReason == nil)
        #expect(try db.imagesBeingDeleted().isEmpty)
        #expect(try db.setPinned(id: "img-1", backend: "fake", true).pinned)
        // And aborting again, or an image not being deleted, changes nothing
        #expect(try db.abortDeleting(id: "img-1", backend: "fake", error: "again", now: minute(12)) == nil)
        #expect(try db.abortDeleting(id: "img-9", backend: "fake", error: "x", now: minute(12)) == nil)
        #expect(try db.image(id: "img-1", backend: "fake")?.keepReason == aborted.keepReason)
    }

    @Test func pollsFinishesAndStateUpdatesNeverMoveADeletingImage() throws {
        // Given a waiting run whose image a poll saw active, and whose delete then began
        let run = try db.waitingRun("web", at: 0, image: "img-1")
        try db.updatePoll(runID: run.id, imageState: .active, nextPollAt: minute(2), now: minute(1))
        try #require(try db.beginDeleting(id: "img-1", backend: "fake", reason: "old", now: minute(2)) != nil)
        // When a late poll and the run's finish arrive
        try db.updatePoll(runID: run.id, imageState: .saving, sizeBytes: 10, nextPollAt: minute(3), now: minute(3))
        let finished = try db.finishRun(runID: run.id, state: .failed, error: "late error", now: minute(4))
        // Then the run moves on but the image stays deleting
        #expect(finished.state == .failed)
        #expect(try db.image(id: "img-1", backend: "fake")?.state == .deleting)
        // And a state update is refused, writing nothing
        let error = #expect(throws: SnapcronStoreError.self) {
            try db.updateImageState(id: "img-1", backend: "fake", state: .gone, now: minute(5))
        }
        #expect(error?.code == .illegalTransition)
        #expect(error?.message == "image img-1 at backend fake is being deleted; cannot become gone")
        #expect(try db.image(id: "img-1", backend: "fake")?.state == .deleting)
        let asked = #expect(throws: SnapcronStoreError.self) {
            try db.updateImageState(id: "img-1", backend: "fake", state: .deleting, now: minute(5))
        }
        #expect(asked?.code == .invalidArgument)
    }

    @Test func finishingARunLeavesADeletedImageDeleted() throws {
        // Given a waiting run whose image was deleted (an operator's prune raced it)
        let run = try db.waitingRun("web", at: 0, image: "img-1")
        try db.markImageDeleted(id: "img-1", backend: "fake", now: minute(1), reason: "manual prune")
        // When it is polled and finishes
        try db.updatePoll(runID: run.id, imageState: .active, nextPollAt: minute(3), now: minute(2))
        try db.finishRun(runID: run.id, state: .succeeded, error: nil, now: minute(3))
        // Then the image is still deleted
        #expect(try db.image(id: "img-1", backend: "fake")?.state == .deleted)
    }

    @Test func retentionCannotDecideToDeleteAnImageBeingDeleted() throws {
        // Given an image being deleted
        try db.activeImage("web", at: 0, image: "img-1")
        try #require(
            try db.beginDeleting(id: "img-1", backend: "fake", reason: "beyond keep=1", now: minute(10)) != nil)
        // When a retention pass decides to delete it again
        let error = #expect(throws: SnapcronStoreError.self) {
            try db.recordRetentionDecision(id: "img-1", backend: "fake", .delete(reason: "beyond keep=1"))
        }
        // Then the verdict is refused
        #expect(error?.code == .illegalTransition)
        #expect(error?.message == "image img-1 at backend fake cannot be deleted: it is being deleted")
    }

    @Test func imagesBeingDeletedAreOldestFirst() throws {
        for (m, id) in [(60, "b"), (0, "a"), (120, "c"), (180, "kept")] {
            try db.activeImage("web", at: m, image: id)
        }
        for id in ["c", "a", "b"] {
            try #require(try db.beginDeleting(id: id, backend: "fake", reason: "old", now: minute(300)) != nil)
        }
        #expect(try db.imagesBeingDeleted().map(\.id) == ["a", "b", "c"])
    }
}

/// A delete under way survives a crash: the restarted daemon finds it on the file.
@Suite struct DeletingFileTests {
    @Test func aDeleteUnderWayIsFoundAfterReopening() throws {
        let directory = try TemporaryDirectory()
        let path = directory.path("state.db")
        // Given a delete begun by a daemon that then stopped without closing the file
        do {
            let db = try SnapcronDatabase(path: path)
            try db.activeImage("web", at: 0, image: "img-1")
            try #require(
            try db.beginDeleting(id: "img-1", backend: "fake", reason: "beyond keep=1", now: minute(10)) != nil)
        }
        // When the file is opened again (and by a second connection meanwhile)
        let db = try SnapcronDatabase(path: path)
        let other = try SnapcronDatabase(path: path)
        // Then the image is being deleted, and a pin from the other connection is refused
        #expect(try db.imagesBeingDeleted().map(\.id) == ["img-1"])
        #expect(throws: SnapcronStoreError.self) { try other.setPinned(id: "img-1", backend: "fake", true) }
        #expect(try db.markImageDeleted(id: "img-1", backend: "fake", now: minute(11), reason: "x").pinned == false)
    }
}

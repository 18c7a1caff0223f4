import SnapcronCore
import Foundation
import SnapcronStore
import Testing

/// Images found at a backend that the store did not know, and runs that adopt them.
@Suite struct FoundImageTests {
    let db: SnapcronDatabase

    init() throws { db = try .inMemory() }

    func found(
        _ id: String, job: String = "web", name: String, state: StoredImageState = .active, at m: Int = 1,
        backend: String = "fake"
    ) -> FoundImage {
        FoundImage(
            id: id, backend: backend, job: job, target: "vm-1", name: name, description: "found",
            createdAt: minute(m), state: state, sizeBytes: 77)
    }

    @Test func recordsAFoundImageLinkedToTheRunThatChoseItsName() throws {
        // Given a run whose create reply was lost
        let run = try #require(try db.claim("web", at: 0))
        try db.markCreating(runID: run.id, now: minute(0))
        let failed = try db.finishRun(runID: run.id, state: .failed, error: "connection reset", now: minute(5))
        // When its image turns up at the backend
        let image = try #require(try db.recordFoundImage(found("img-9", name: "snapcron-web-0"), now: minute(30)))
        // Then it is recorded as found, linked to the run, which is unchanged
        #expect(image.runID == run.id)
        #expect(image.state == .active)
        #expect(image.createdAt == minute(1))
        #expect(image.sizeBytes == 77)
        #expect(image.description == "found")
        #expect(image.pinned == false)
        #expect(try db.run(id: run.id) == failed)
        // And finding it again writes nothing
        let again = found("img-9", name: "other", state: .error)
        #expect(try db.recordFoundImage(again, now: minute(31)) == nil)
        #expect(try db.image(id: "img-9", backend: "fake") == image)
    }

    @Test func aFoundImageNoRunNamedHasNoRun() throws {
        try db.claim("db", at: 0)  // the same name, another job
        let image = try db.recordFoundImage(found("img-1", name: "snapcron-db-0"), now: minute(2))
        #expect(image?.runID == nil)
        #expect(try db.imageStates(backend: "fake") == ["img-1": .active])
    }

    @Test func aFoundImageCannotBeRecordedDeletedOrDeleting() throws {
        for state in [StoredImageState.deleted, .deleting] {
            let error = #expect(throws: SnapcronStoreError.self) {
                try db.recordFoundImage(found("img-1", name: "n", state: state), now: minute(2))
            }
            #expect(error?.code == .invalidArgument)
        }
        #expect(try db.imageStates(backend: "fake").isEmpty)
    }

    @Test func imageStatesListsEveryImageOfOneBackend() throws {
        try db.activeImage("web", at: 0, image: "active")
        try db.activeImage("web", at: 1, image: "deleting")
        try #require(try db.beginDeleting(id: "deleting", backend: "fake", reason: "old", now: minute(5)) != nil)
        try db.activeImage("web", at: 2, image: "deleted")
        try db.markImageDeleted(id: "deleted", backend: "fake", now: minute(5), reason: "old")
        try db.recordFoundImage(found("gone", name: "x", state: .gone), now: minute(5))
        try db.recordFoundImage(found("elsewhere", name: "y", backend: "other"), now: minute(5))
        #expect(
            try db.imageStates(backend: "fake") == [
                "active": .active, "deleting": .deleting, "deleted": .deleted, "gone": .gone,
            ])
        #expect(try db.imageStates(backend: "none").isEmpty)
    }

    @Test func aRunThatEndedWithoutAnImageAdoptsTheOneFoundByName() throws {
        // Given a run that timed out before its create replied
        let run = try #require(try db.claim("web", at: 0))
        try db.markCreating(runID: run.id, now: minute(1))
        let ended = try db.finishRun(runID: run.id, state: .timedOut, error: "no reply", now: minute(30))
        // When it adopts the image found under its name
        let adopted = try db.adoptImage(runID: run.id, imageID: "img-1", description: "d", now: minute(40))
        // Then the run has the image id and keeps its end, and the image is queued, linked, and followed up
        var expected = ended
        expected.imageID = "img-1"
        #expect(adopted == expected)
        let image = try #require(try db.image(id: "img-1", backend: "fake"))
        #expect(image.state == .queued)
        #expect(image.runID == run.id)
        #expect(image.name == run.imageName)
        #expect(image.target == "vm-1")
        #expect(image.description == "d")
        #expect(image.createdAt == minute(1), "the run's first create attempt")
        #expect(try db.imagesLeftUnfinished(limit: 5).map(\.id) == ["img-1"])
    }

    @Test func adoptingIsRefusedWritingNothing() throws {
        // Given a cancelled run that adopted an image, a succeeded run, a skipped fire and a recorded image
        let cancelled = try #require(try db.claim("web", at: 0))
        try db.finishRun(runID: cancelled.id, state: .cancelled, error: "operator", now: minute(1))
        try db.adoptImage(runID: cancelled.id, imageID: "img-1", description: nil, now: minute(2))
        let succeeded = try db.waitingRun("web", at: 60, image: "img-2")
        try db.finishRun(runID: succeeded.id, state: .succeeded, error: nil, now: minute(61))
        let skipped = try #require(
            try db.recordSkipped(job: "web", scheduledAt: minute(90), now: minute(90), reason: "paused"))
        let failed = try #require(try db.claim("web", at: 120))
        try db.finishRun(runID: failed.id, state: .failed, error: "lost", now: minute(121))
        let before = (try db.runs(job: "web"), try db.images(job: "web", includeDeleted: true))

        let cases: [(Int64, String, SnapcronStoreError.Code)] = [
            (cancelled.id, "img-3", .illegalTransition),  // already has an image
            (succeeded.id, "img-3", .illegalTransition),  // did not end without one
            (skipped.id, "img-3", .illegalTransition),  // never claimed
            (failed.id, "img-2", .conflict),  // recorded for another run
            (failed.id + 100, "img-3", .runNotFound),
        ]
        for (runID, imageID, code) in cases {
            let error = #expect(throws: SnapcronStoreError.self) {
                try db.adoptImage(runID: runID, imageID: imageID, description: nil, now: minute(200))
            }
            #expect(error?.code == code, "run \(runID), \(imageID)")
        }
        #expect((try db.runs(job: "web"), try db.images(job: "web", includeDeleted: true)) == before)
    }
}

/// Which (job, backend, target) still have images, for `snapcronctl images --orphaned`.
@Suite struct ImageTargetTests {
    @Test func countsImagesNotDeletedPerJobBackendAndTarget() throws {
        let db = try SnapcronDatabase.inMemory()
        try db.activeImage("web", at: 0, image: "a")
        try db.activeImage("web", at: 1, image: "b")
        try #require(try db.beginDeleting(id: "b", backend: "fake", reason: "old", now: minute(5)) != nil)
        try db.activeImage("web", at: 2, image: "c")
        try db.markImageDeleted(id: "c", backend: "fake", now: minute(5), reason: "old")
        try db.activeImage("web", at: 3, image: "d", target: "vm-2")
        try db.activeImage("gone-job", at: 4, image: "e")
        try db.markImageDeleted(id: "e", backend: "fake", now: minute(5), reason: "old")
        try db.recordFoundImage(
            FoundImage(
                id: "f", backend: "other", job: "db", target: "vm-9", name: "n", description: nil,
                createdAt: minute(6), state: .error, sizeBytes: nil), now: minute(6))
        #expect(
            try db.imageTargets() == [
                ImageTarget(job: "db", backend: "other", target: "vm-9", count: 1),
                ImageTarget(job: "web", backend: "fake", target: "vm-1", count: 2),
                ImageTarget(job: "web", backend: "fake", target: "vm-2", count: 1),
            ])
    }
}

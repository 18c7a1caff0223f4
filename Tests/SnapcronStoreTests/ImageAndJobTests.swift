import SnapcronCore
import Foundation
import SnapcronStore
import Testing

@Suite struct ImageTests {
    let db: SnapcronDatabase

    init() throws { db = try .inMemory() }

    @Test func listsAJobsImagesNewestFirstWithoutDeletedOnes() throws {
        try db.waitingRun("web", at: 0, image: "img-1")
        try db.waitingRun("web", at: 60, image: "img-2")
        try db.waitingRun("db", at: 30, image: "img-3")
        try db.markImageDeleted(id: "img-1", backend: "fake", now: minute(90), reason: "keep=1")

        #expect(try db.images(job: "web").map(\.id) == ["img-2"])
        #expect(try db.images(job: "web", includeDeleted: true).map(\.id) == ["img-2", "img-1"])
        #expect(try db.image(id: "img-3", backend: "other") == nil)
    }

    @Test func pinnedImagesCannotBeDeleted() throws {
        // Given a pinned image
        try db.waitingRun("web", at: 0, image: "img-1")
        #expect(try db.setPinned(id: "img-1", backend: "fake", true).pinned)
        // When retention tries to delete it, then it is refused and nothing is written
        let deleteError = #expect(throws: SnapcronStoreError.self) {
            try db.markImageDeleted(id: "img-1", backend: "fake", now: minute(5), reason: "keep=0")
        }
        #expect(deleteError?.code == .illegalTransition)
        let verdictError = #expect(throws: SnapcronStoreError.self) {
            try db.recordRetentionDecision(id: "img-1", backend: "fake", .delete(reason: "keep=0"))
        }
        #expect(verdictError?.code == .illegalTransition)
        let image = try #require(try db.image(id: "img-1", backend: "fake"))
        #expect(image.state == .queued)
        #expect(image.deleteReason == nil)
        // When unpinned, then it can be deleted, and deleting again changes nothing
        try db.setPinned(id: "img-1", backend: "fake", false)
        let deleted = try db.markImageDeleted(id: "img-1", backend: "fake", now: minute(6), reason: "keep=0")
        #expect(deleted.state == .deleted)
        #expect(deleted.deletedAt == minute(6))
        #expect(deleted.deleteReason == "keep=0")
        #expect(try db.markImageDeleted(id: "img-1", backend: "fake", now: minute(7), reason: "again") == deleted)
    }

    @Test func recordsRetentionVerdictsAllOrNothing() throws {
        try db.waitingRun("web", at: 0, image: "img-1")
        try db.waitingRun("web", at: 60, image: "img-2")
        try db.setPinned(id: "img-2", backend: "fake", true)
        let key1 = ImageKey(id: "img-1", backend: "fake")
        let key2 = ImageKey(id: "img-2", backend: "fake")

        // A batch with one impossible verdict writes nothing
        let error = #expect(throws: SnapcronStoreError.self) {
            try db.recordRetentionDecisions([(key1, .keep(reason: "newest active")), (key2, .delete(reason: "old"))])
        }
        #expect(error?.code == .illegalTransition)
        #expect(try db.image(id: "img-1", backend: "fake")?.keepReason == nil)

        let records = try db.recordRetentionDecisions([
            (key1, .delete(reason: "beyond keep=1")), (key2, .keep(reason: "pinned")),
        ])
        #expect(records.map(\.deleteReason) == ["beyond keep=1", nil])
        #expect(records.map(\.keepReason) == [nil, "pinned"])
    }

    @Test func updatesStateUntilDeleted() throws {
        try db.waitingRun("web", at: 0, image: "img-1")
        let gone = try db.updateImageState(id: "img-1", backend: "fake", state: .gone, now: minute(5))
        #expect(gone.state == .gone)
        try db.markImageDeleted(id: "img-1", backend: "fake", now: minute(6), reason: "gone at backend")
        let error = #expect(throws: SnapcronStoreError.self) {
            try db.updateImageState(id: "img-1", backend: "fake", state: .active, now: minute(7))
        }
        #expect(error?.code == .illegalTransition)
        let missing = #expect(throws: SnapcronStoreError.self) {
            try db.setPinned(id: "img-9", backend: "fake", true)
        }
        #expect(missing?.code == .imageNotFound)
    }
}

@Suite struct JobStateTests {
    let db: SnapcronDatabase

    init() throws { db = try .inMemory() }

    @Test func pausesAndResumesJobs() throws {
        #expect(try db.jobState(name: "web") == nil)
        try db.claim("web", at: 0)
        let paused = try db.setPaused(name: "web", true, now: minute(3))
        #expect(paused.paused)
        #expect(paused.lastScheduledAt == minute(0))
        #expect(paused.updatedAt == minute(3))
        try db.setPaused(name: "db", true, now: minute(4))
        try db.setPaused(name: "db", false, now: minute(5))
        #expect(try db.allJobStates().map(\.name) == ["db", "web"])
        #expect(try db.jobState(name: "db")?.paused == false)
        #expect(try db.jobState(name: "db")?.lastScheduledAt == nil)
        #expect(try db.lastScheduledAt(job: "web") == minute(0))
    }
}

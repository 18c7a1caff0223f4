import SnapcronCore
import Foundation
import SnapcronStore
import Testing

/// A clock stepped forward and then corrected must not stop every job.
@Suite struct ClockStepTests {
    let db: SnapcronDatabase

    init() throws { db = try .inMemory() }

    @Test func clampsLastFiresLaterThanNow() throws {
        // Given a job whose last fire was recorded while the clock was ahead, one in the past, one never fired
        try db.claim("ahead", at: 100)
        try db.claim("behind", at: 10)
        try db.setPaused(name: "never", true, now: minute(5))
        // When last fires are clamped to minute 50
        let clamped = try db.clampLastScheduled(notAfter: minute(50))
        // Then only the job ahead moved, to now, and its recorded fire stays taken
        #expect(clamped == ["ahead"])
        #expect(try db.lastScheduledAt(job: "ahead") == minute(50))
        #expect(try db.jobState(name: "ahead")?.updatedAt == minute(50))
        #expect(try db.lastScheduledAt(job: "behind") == minute(10))
        #expect(try db.lastScheduledAt(job: "never") == nil)
        #expect(try db.claim("ahead", at: 100) == nil)
        #expect(try db.clampLastScheduled(notAfter: minute(50)).isEmpty)
    }

    @Test func latestRecordedInstantIsTheLatestClockReading() throws {
        #expect(try db.latestRecordedInstant() == nil)
        // A claim
        try db.claim("web", at: 10)
        #expect(try db.latestRecordedInstant() == minute(10))
        // A manual run's instant is its claim time, not its (operator-given) fire time
        try db.claimRun(
            job: "web", scheduledAt: minute(500), trigger: .manual, imageName: "n", backend: "fake", target: "vm-1",
            now: minute(20))
        #expect(try db.latestRecordedInstant() == minute(20))
        // A scheduled fire recorded later than its claim
        try db.recordMissed(job: "web", scheduledAt: minute(30), now: minute(25), reason: "down")
        #expect(try db.latestRecordedInstant() == minute(30))
        // An image's creation
        try db.recordFoundImage(
            FoundImage(
                id: "img-1", backend: "fake", job: "web", target: "vm-1", name: "x", description: nil,
                createdAt: minute(40), state: .active, sizeBytes: nil), now: minute(26))
        #expect(try db.latestRecordedInstant() == minute(40))
        // The latest fire a shared skipped row stands for
        try db.recordSkipped(job: "db", scheduledAt: minute(50), now: minute(27), reason: "paused")
        try db.recordSkipped(job: "db", scheduledAt: minute(60), now: minute(28), reason: "paused")
        #expect(try db.latestRecordedInstant() == minute(60))
    }

    @Test func newestActiveImageDatesIgnoreImagesFromTheFuture() throws {
        // Given active images of web at minutes 10 and 100, of db only at 200, and a deleted one at 20
        for (id, job, m) in [("w1", "web", 10), ("w2", "web", 100), ("d1", "db", 200), ("w0", "web", 20)] {
            try db.recordFoundImage(
                FoundImage(
                    id: id, backend: "fake", job: job, target: "vm-1", name: id, description: nil,
                    createdAt: minute(m), state: .active, sizeBytes: nil), now: minute(m))
        }
        try db.markImageDeleted(id: "w0", backend: "fake", now: minute(30), reason: "old")
        // Then at minute 50 only web's image of minute 10 counts; without a bound, the newest of each
        #expect(try db.newestActiveImageDates(notAfter: minute(50)) == ["web": minute(10)])
        #expect(try db.newestActiveImageDates(notAfter: minute(200)) == ["web": minute(100), "db": minute(200)])
        #expect(try db.newestActiveImageDates() == ["web": minute(100), "db": minute(200)])
    }
}

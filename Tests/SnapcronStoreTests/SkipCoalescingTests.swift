import SnapcronCore
import Foundation
import SnapcronStore
import Testing

/// A paused every-minute job must not add a row per minute for ever: consecutive skips share one row.
@Suite struct SkipCoalescingTests {
    let db: SnapcronDatabase

    init() throws { db = try .inMemory() }

    @Test func consecutiveSkipsForOneReasonShareARow() throws {
        // Given a first skipped fire
        let first = try #require(
            try db.recordSkipped(job: "web", scheduledAt: minute(0), now: minute(0), reason: "paused"))
        #expect(first.repeatCount == 1)
        #expect(first.repeatedUntil == nil)
        // When the next fires are skipped for the same reason
        var last = first
        for m in 1...3 {
            last = try #require(
                try db.recordSkipped(job: "web", scheduledAt: minute(m), now: minute(m) + 2, reason: "paused"))
        }
        // Then one row stands for all of them, and the job's last fire moved on
        #expect(last.id == first.id)
        #expect(last.repeatCount == 4)
        #expect(last.scheduledAt == minute(0))
        #expect(last.repeatedUntil == minute(3))
        #expect(last.claimedAt == minute(0))
        #expect(last.finishedAt == minute(3) + 2)
        #expect(last.state == .skipped)
        #expect(last.error == "paused")
        #expect(try db.runs(job: "web") == [last])
        #expect(try db.lastScheduledAt(job: "web") == minute(3))
    }

    @Test func anotherReasonTriggerOrRowInBetweenStartsANewRow() throws {
        // Given skips that share a row
        try db.recordSkipped(job: "web", scheduledAt: minute(0), now: minute(0), reason: "paused")
        try db.recordSkipped(job: "web", scheduledAt: minute(1), now: minute(1), reason: "paused")
        // When the reason changes, then changes back, a run comes between, and a catch-up is skipped
        try db.recordSkipped(job: "web", scheduledAt: minute(2), now: minute(2), reason: "run 1 still running")
        try db.recordSkipped(job: "web", scheduledAt: minute(3), now: minute(3), reason: "paused")
        try db.claim("web", at: 4)
        try db.recordSkipped(job: "web", scheduledAt: minute(5), now: minute(5), reason: "paused")
        try db.recordSkipped(job: "web", scheduledAt: minute(6), trigger: .catchUp, now: minute(6), reason: "paused")
        try db.recordMissed(job: "web", scheduledAt: minute(7), now: minute(7), reason: "paused")
        try db.recordSkipped(job: "web", scheduledAt: minute(8), now: minute(8), reason: "paused")
        // Then each starts a row of its own
        let runs = try db.runs(job: "web")
        #expect(runs.map(\.scheduledAt) == [8, 7, 6, 5, 4, 3, 2, 0].map(minute))
        #expect(runs.map(\.repeatCount) == [1, 1, 1, 1, 1, 1, 1, 2])
        #expect(try db.lastScheduledAt(job: "web") == minute(8))
    }

    @Test func aFireWithinASharedRowIsAlreadyHandled() throws {
        // Given a row standing for the fires of minutes 10 to 13
        for m in 10...13 {
            try db.recordSkipped(job: "web", scheduledAt: minute(m), now: minute(m), reason: "paused")
        }
        let row = try #require(try db.runs(job: "web").first)
        // When fires it covers are recorded or claimed again, however
        #expect(try db.recordSkipped(job: "web", scheduledAt: minute(12), now: minute(20), reason: "paused") == nil)
        #expect(try db.recordSkipped(job: "web", scheduledAt: minute(13), now: minute(20), reason: "paused") == nil)
        #expect(try db.recordSkipped(job: "web", scheduledAt: minute(10), now: minute(20), reason: "paused") == nil)
        #expect(try db.recordMissed(job: "web", scheduledAt: minute(11), now: minute(20), reason: "down") == nil)
        #expect(try db.claim("web", at: 12) == nil)
        #expect(try db.claim("web", at: 13, trigger: .catchUp) == nil)
        #expect(
            try db.claimRun(
                job: "web", scheduledAt: minute(11) + 30, trigger: .manual, imageName: "n", backend: "fake",
                target: "vm-1", now: minute(20)) == nil)
        // Then nothing changed
        #expect(try db.runs(job: "web") == [row])
        // But fires outside it, and other jobs, are new
        #expect(try db.claim("web", at: 9) != nil)
        #expect(try db.claim("db", at: 12) != nil)
        let next = try db.recordSkipped(job: "web", scheduledAt: minute(14), now: minute(14), reason: "paused")
        #expect(next?.id == row.id)
    }

    @Test func anEarlierFireRecordedLateIsARowOfItsOwn() throws {
        // Given a skipped fire at minute 10
        let later = try #require(
            try db.recordSkipped(job: "web", scheduledAt: minute(10), now: minute(10), reason: "paused"))
        // When an earlier fire is skipped for the same reason
        let earlier = try #require(
            try db.recordSkipped(job: "web", scheduledAt: minute(5), now: minute(11), reason: "paused"))
        // Then it does not extend the newer row, and the job's last fire does not move back
        #expect(earlier.id != later.id)
        #expect(try db.run(id: later.id) == later)
        #expect(try db.lastScheduledAt(job: "web") == minute(10))
    }

    @Test func manualSkipsShareARowWithoutMovingTheLastFire() throws {
        try db.claim("web", at: 0)
        for m in 1...3 {
            try db.recordSkipped(job: "web", scheduledAt: minute(m), trigger: .manual, now: minute(m), reason: "paused")
        }
        #expect(try db.runs(job: "web").map(\.repeatCount) == [3, 1])
        #expect(try db.lastScheduledAt(job: "web") == minute(0))
    }

    @Test func aSkippedClaimedRunIsExtendedBySkipsForItsReason() throws {
        // Given a claimed run the overlap policy skipped
        let run = try #require(try db.claim("web", at: 0))
        try db.finishRun(runID: run.id, state: .skipped, error: "run 1 still running", now: minute(0))
        // When the next fire is skipped for the same reason
        let shared = try db.recordSkipped(
            job: "web", scheduledAt: minute(1), now: minute(1), reason: "run 1 still running")
        // Then it shares that row
        #expect(shared?.id == run.id)
        #expect(shared?.repeatCount == 2)
        #expect(shared?.imageName == run.imageName)
    }
}

/// Shared skipped rows on a real file, seen by another connection.
@Suite struct SkipCoalescingFileTests {
    @Test func aSharedRowsFiresStayTakenAcrossConnections() throws {
        let directory = try TemporaryDirectory()
        let path = directory.path("state.db")
        let first = try SnapcronDatabase(path: path)
        let second = try SnapcronDatabase(path: path)
        // Given skips recorded alternately by two connections
        for m in 0...5 {
            let db = m.isMultiple(of: 2) ? first : second
            let recorded = try db.recordSkipped(job: "web", scheduledAt: minute(m), now: minute(m), reason: "paused")
            try #require(recorded != nil)
        }
        // Then one row stands for them all, and neither connection can take one of its fires
        #expect(try first.runs(job: "web").map(\.repeatCount) == [6])
        #expect(try second.claim("web", at: 3) == nil)
        #expect(try first.claim("web", at: 5) == nil)
        try first.close()
        let reopened = try SnapcronDatabase(path: path)
        #expect(try reopened.runs(job: "web").first?.repeatedUntil == minute(5))
        #expect(try reopened.lastScheduledAt(job: "web") == minute(5))
    }
}

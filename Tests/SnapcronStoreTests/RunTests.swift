import SnapcronCore
import Foundation
import SnapcronStore
import Testing

@Suite struct RunTests {
    let db: SnapcronDatabase

    init() throws { db = try .inMemory() }

    @Test func claimsAFireOnce() throws {
        // Given a claimed fire
        let run = try #require(try db.claim("web", at: 0))
        #expect(run.state == .claimed)
        #expect(run.attempts == 0)
        #expect(run.imageName == "snapcron-web-0")
        #expect(run.scheduledAt == minute(0))
        // When it is claimed again, even with other details
        let again = try db.claimRun(
            job: "web", scheduledAt: minute(0), trigger: .catchUp, imageName: "other", backend: "b", target: "t",
            now: minute(5))
        // Then the second claim gets nothing and the first is untouched
        #expect(again == nil)
        #expect(try db.run(id: run.id) == run)
        #expect(try db.runs(job: "web").count == 1)
        #expect(try db.lastScheduledAt(job: "web") == minute(0))
    }

    @Test func storesTimesInWholeSeconds() throws {
        let run = try #require(
            try db.claimRun(
                job: "web", scheduledAt: minute(0) + 0.75, trigger: .manual, imageName: "n", backend: "b",
                target: "t", now: minute(0)))
        #expect(run.scheduledAt == minute(0))
        #expect(
            try db.claimRun(
                job: "web", scheduledAt: minute(0) + 0.25, trigger: .manual, imageName: "n", backend: "b", target: "t",
                now: minute(0)) == nil)
    }

    @Test func manualClaimDoesNotAdvanceLastScheduled() throws {
        try db.claim("web", at: 0)
        try db.claim("web", at: 7, trigger: .manual)
        #expect(try db.lastScheduledAt(job: "web") == minute(0))
    }

    @Test func lastScheduledNeverMovesBack() throws {
        try db.claim("web", at: 10)
        try db.recordMissed(job: "web", scheduledAt: minute(5), now: minute(11), reason: "daemon down")
        #expect(try db.lastScheduledAt(job: "web") == minute(10))
        try db.claim("web", at: 20, trigger: .catchUp)
        #expect(try db.lastScheduledAt(job: "web") == minute(20))
    }

    @Test func missedAndSkippedFiresAreNeverClaimedLater() throws {
        let missed = try #require(
            try db.recordMissed(
                job: "web", scheduledAt: minute(0), now: minute(90), reason: "daemon down past deadline"))
        let skipped = try #require(
            try db.recordSkipped(job: "web", scheduledAt: minute(60), now: minute(60), reason: "run 1 still running"))
        #expect(missed.state == .missed)
        #expect(missed.error == "daemon down past deadline")
        #expect(missed.finishedAt == minute(90))
        #expect(skipped.state == .skipped)
        #expect(try db.claim("web", at: 0) == nil)
        #expect(try db.claim("web", at: 60) == nil)
        #expect(try db.recordMissed(job: "web", scheduledAt: minute(60), now: minute(90), reason: "x") == nil)
        #expect(try db.lastScheduledAt(job: "web") == minute(60))
    }

    @Test func followsARunToSuccess() throws {
        // Given a claimed run
        let run = try #require(try db.claim("web", at: 0))
        // When it is created, polled and finished
        let creating = try db.markCreating(runID: run.id, now: minute(1))
        #expect(creating.state == .creating)
        #expect(creating.attempts == 1)
        #expect(creating.startedAt == minute(1))
        let waiting = try db.markWaiting(
            runID: run.id, imageID: "img-1", description: "made by snapcron", now: minute(2), nextPollAt: minute(3))
        #expect(waiting.state == .waiting)
        #expect(waiting.imageID == "img-1")
        #expect(waiting.nextPollAt == minute(3))
        let image = try #require(try db.image(id: "img-1", backend: "fake"))
        #expect(image.state == .queued)
        #expect(image.runID == run.id)
        #expect(image.name == "snapcron-web-0")
        #expect(image.description == "made by snapcron")
        #expect(image.createdAt == minute(2))
        let polled = try db.updatePoll(
            runID: run.id, imageState: .saving, sizeBytes: 4096, nextPollAt: minute(5), now: minute(3))
        #expect(polled.nextPollAt == minute(5))
        #expect(try db.image(id: "img-1", backend: "fake")?.state == .saving)
        let done = try db.finishRun(runID: run.id, state: .succeeded, error: nil, now: minute(6))
        // Then the run is finished and its image active
        #expect(done.state == .succeeded)
        #expect(done.finishedAt == minute(6))
        #expect(done.nextPollAt == nil)
        let active = try #require(try db.image(id: "img-1", backend: "fake"))
        #expect(active.state == .active)
        #expect(active.sizeBytes == 4096)
        #expect(try db.unfinishedRuns().isEmpty)
    }

    @Test func imagesLeftUnfinishedAreThoseNoRunFollows() throws {
        var runIDs: [Int64] = []
        for (index, job) in ["following", "gaveUp", "done"].enumerated() {
            let run = try #require(try db.claim(job, at: 0))
            _ = try db.markCreating(runID: run.id, now: minute(1))
            _ = try db.markWaiting(
                runID: run.id, imageID: "img-\(index)", description: "d", now: minute(2), nextPollAt: minute(3))
            runIDs.append(run.id)
        }
        _ = try db.finishRun(runID: runIDs[1], state: .timedOut, error: "still queued", now: minute(30))
        _ = try db.finishRun(runID: runIDs[2], state: .succeeded, error: nil, now: minute(4))
        // Only the image of the run that gave up: the waiting one is followed, the finished one is active.
        #expect(try db.imagesLeftUnfinished(limit: 10).map(\.id) == ["img-1"])
        _ = try db.updateImageState(id: "img-1", backend: "fake", state: .active, sizeBytes: 7, now: minute(45))
        #expect(try db.imagesLeftUnfinished(limit: 10).isEmpty)
        #expect(try db.image(id: "img-1", backend: "fake")?.sizeBytes == 7)
    }

    @Test func finishingARunRecordsTheImageSizeAndRefusesANegativeOne() throws {
        let run = try #require(try db.claim("web", at: 0))
        _ = try db.markCreating(runID: run.id, now: minute(1))
        _ = try db.markWaiting(runID: run.id, imageID: "img-9", description: "d", now: minute(2), nextPollAt: minute(3))
        #expect(throws: SnapcronStoreError.self) {
            try db.finishRun(runID: run.id, state: .succeeded, error: nil, sizeBytes: -1, now: minute(4))
        }
        #expect(try db.run(id: run.id)?.state == .waiting, "the refused call wrote nothing")
        _ = try db.finishRun(runID: run.id, state: .succeeded, error: nil, sizeBytes: 123_456, now: minute(4))
        #expect(try db.image(id: "img-9", backend: "fake")?.sizeBytes == 123_456)
    }

    @Test func retriedCreateReusesTheImageName() throws {
        let run = try #require(try db.claim("web", at: 0))
        try db.markCreating(runID: run.id, now: minute(1))
        let retry = try db.recordRetryableFailure(runID: run.id, error: "429 throttled", nextAttemptAt: minute(2))
        #expect(retry.state == .claimed)
        #expect(retry.error == "429 throttled")
        #expect(retry.nextPollAt == minute(2))
        let second = try db.markCreating(runID: run.id, now: minute(2))
        #expect(second.attempts == 2)
        #expect(second.imageName == run.imageName)
        #expect(second.startedAt == minute(1))
        // A create resumed after a crash counts as another attempt.
        #expect(try db.markCreating(runID: run.id, now: minute(3)).attempts == 3)
        let waiting = try db.markWaiting(runID: run.id, imageID: "img-1", now: minute(3), nextPollAt: minute(4))
        #expect(waiting.error == nil)
        let pollRetry = try db.recordRetryableFailure(runID: run.id, error: "503", nextAttemptAt: minute(9))
        #expect(pollRetry.state == .waiting)
        #expect(pollRetry.nextPollAt == minute(9))
    }

    @Test func failedRunMarksItsImageErrorAndTimeoutLeavesIt() throws {
        let failed = try db.waitingRun("web", at: 0, image: "img-1")
        try db.updatePoll(runID: failed.id, imageState: .saving, nextPollAt: minute(2), now: minute(1))
        try db.finishRun(runID: failed.id, state: .failed, error: "backend: disk full", now: minute(2))
        #expect(try db.image(id: "img-1", backend: "fake")?.state == .error)
        #expect(try db.run(id: failed.id)?.error == "backend: disk full")

        let slow = try db.waitingRun("web", at: 60, image: "img-2")
        try db.updatePoll(runID: slow.id, imageState: .saving, nextPollAt: minute(62), now: minute(61))
        try db.finishRun(runID: slow.id, state: .timedOut, error: "not active after 2h", now: minute(180))
        #expect(try db.image(id: "img-2", backend: "fake")?.state == .saving)
    }

    /// A call that must be refused for a run in a given state.
    struct IllegalCase: Sendable, CustomTestStringConvertible {
        var name: String
        var reach: RunState
        var code: SnapcronStoreError.Code
        var call: @Sendable (SnapcronDatabase, Int64) throws -> Void
        var testDescription: String { "\(name) from \(reach.rawValue)" }
    }

    static let illegalCases: [IllegalCase] = [
        IllegalCase(name: "markWaiting", reach: .claimed, code: .illegalTransition) { db, id in
            try db.markWaiting(runID: id, imageID: "img-x", now: minute(9), nextPollAt: minute(9))
        },
        IllegalCase(name: "finish succeeded", reach: .claimed, code: .illegalTransition) { db, id in
            try db.finishRun(runID: id, state: .succeeded, error: nil, now: minute(9))
        },
        IllegalCase(name: "updatePoll", reach: .creating, code: .illegalTransition) { db, id in
            try db.updatePoll(runID: id, imageState: .active, nextPollAt: nil, now: minute(9))
        },
        IllegalCase(name: "recordRetryableFailure", reach: .claimed, code: .illegalTransition) { db, id in
            try db.recordRetryableFailure(runID: id, error: "x", nextAttemptAt: minute(9))
        },
        IllegalCase(name: "markCreating", reach: .waiting, code: .illegalTransition) { db, id in
            try db.markCreating(runID: id, now: minute(9))
        },
        IllegalCase(name: "markCreating", reach: .succeeded, code: .illegalTransition) { db, id in
            try db.markCreating(runID: id, now: minute(9))
        },
        IllegalCase(name: "finish cancelled", reach: .failed, code: .illegalTransition) { db, id in
            try db.finishRun(runID: id, state: .cancelled, error: nil, now: minute(9))
        },
        IllegalCase(name: "markWaiting", reach: .succeeded, code: .illegalTransition) { db, id in
            try db.markWaiting(runID: id, imageID: "img-x", now: minute(9), nextPollAt: minute(9))
        },
        IllegalCase(name: "finish with a non-terminal state", reach: .waiting, code: .invalidArgument) { db, id in
            try db.finishRun(runID: id, state: .creating, error: nil, now: minute(9))
        },
        IllegalCase(name: "updatePoll reporting deleted", reach: .waiting, code: .invalidArgument) { db, id in
            try db.updatePoll(runID: id, imageState: .deleted, nextPollAt: nil, now: minute(9))
        },
        IllegalCase(name: "markCreating of an unknown run", reach: .claimed, code: .runNotFound) { db, id in
            try db.markCreating(runID: id + 1000, now: minute(9))
        },
    ]

    @Test(arguments: illegalCases) func rejectsIllegalTransitionsWritingNothing(_ illegal: IllegalCase) throws {
        // Given a run in the case's state
        let run = try reach(illegal.reach)
        let imagesBefore = try db.images(job: "web", includeDeleted: true)
        // When the illegal call is made
        let error = #expect(throws: SnapcronStoreError.self) { try illegal.call(db, run.id) }
        // Then it fails with the expected code and nothing changed
        #expect(error?.code == illegal.code)
        #expect(try db.run(id: run.id) == run)
        #expect(try db.images(job: "web", includeDeleted: true) == imagesBefore)
    }

    private func reach(_ state: RunState) throws -> RunRecord {
        let run = try #require(try db.claim("web", at: 0))
        switch state {
        case .claimed:
            return run
        case .creating:
            return try db.markCreating(runID: run.id, now: minute(1))
        case .waiting:
            try db.markCreating(runID: run.id, now: minute(1))
            return try db.markWaiting(runID: run.id, imageID: "img-1", now: minute(1), nextPollAt: minute(2))
        default:
            try db.markCreating(runID: run.id, now: minute(1))
            try db.markWaiting(runID: run.id, imageID: "img-1", now: minute(1), nextPollAt: minute(2))
            return try db.finishRun(runID: run.id, state: state, error: nil, now: minute(3))
        }
    }

    @Test func everyTerminalStateIsFinal() {
        for from in RunState.allCases where from.isTerminal {
            for to in RunState.allCases {
                #expect(!from.allowsTransition(to: to), "\(from) -> \(to)")
            }
        }
    }

    @Test func refusesAnImageIdRecordedByAnotherRun() throws {
        try db.waitingRun("web", at: 0, image: "img-1")
        let second = try #require(try db.claim("web", at: 60))
        try db.markCreating(runID: second.id, now: minute(60))
        let error = #expect(throws: SnapcronStoreError.self) {
            try db.markWaiting(runID: second.id, imageID: "img-1", now: minute(61), nextPollAt: minute(62))
        }
        #expect(error?.code == .conflict)
        #expect(try db.run(id: second.id)?.state == .creating)
    }

    @Test func historyIsNewestFirstAndFiltered() throws {
        // Given runs of two jobs, some failed
        for m in [0, 60, 120, 180] {
            let run = try #require(try db.claim("web", at: m))
            try db.markCreating(runID: run.id, now: minute(m))
            try db.finishRun(runID: run.id, state: m == 60 ? .failed : .cancelled, error: nil, now: minute(m + 1))
        }
        try db.claim("db", at: 30)
        try db.recordMissed(job: "db", scheduledAt: minute(90), now: minute(200), reason: "down")

        #expect(try db.runs().map(\.scheduledAt) == [180, 120, 90, 60, 30, 0].map(minute))
        #expect(try db.runs(job: "web").map(\.scheduledAt) == [180, 120, 60, 0].map(minute))
        #expect(try db.runs(job: "web", state: .failed).map(\.scheduledAt) == [minute(60)])
        #expect(try db.runs(since: minute(90)).map(\.scheduledAt) == [180, 120, 90].map(minute))
        #expect(try db.runs(job: "web", limit: 2).map(\.scheduledAt) == [180, 120].map(minute))
        #expect(try db.runs(state: .missed).map(\.job) == ["db"])
        #expect(try db.runs(job: "nope").isEmpty)
    }

    @Test func lastFailureIsTheLatestFinishedFailure() throws {
        #expect(try db.lastFailure() == nil)
        let early = try db.waitingRun("web", at: 0, image: "img-1")
        let late = try db.waitingRun("db", at: 10, image: "img-2")
        try db.finishRun(runID: late.id, state: .timedOut, error: "timeout", now: minute(50))
        try db.finishRun(runID: early.id, state: .failed, error: "error", now: minute(40))
        #expect(try db.lastFailure()?.id == late.id)
    }

    @Test func countsUnfinishedRunsPerTargetAndJob() throws {
        let first = try #require(try db.claim("web", at: 0, target: "vm-1"))
        try db.waitingRun("web", at: 60, image: "img-1")
        try db.claim("db", at: 0, target: "vm-2")
        let done = try #require(try db.claim("web", at: 120, target: "vm-1"))
        try db.finishRun(runID: done.id, state: .skipped, error: "overlap", now: minute(120))

        #expect(try db.runningCount(target: "vm-1") == 2)
        #expect(try db.runningCount(target: "vm-1", excluding: first.id) == 1)
        #expect(try db.runningCount(target: "vm-3") == 0)
        #expect(try db.unfinishedRuns(job: "web").map(\.scheduledAt) == [minute(0), minute(60)])
        #expect(try db.unfinishedRuns().count == 3)
    }
}

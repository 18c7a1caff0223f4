import Foundation
import SnapcronCore
import Testing

/// The contract of `StateStore` (its doc comment and each method's), checked through the protocol alone on every
/// store: SQLite in memory, SQLite in a file, PostgreSQL.
extension StoreTests {
    @Suite struct Conformance {
        // MARK: Claims

        @Test(arguments: StoreKind.tested)
        func fireIsClaimedOnce(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let first = try #require(try await store.claim("a", at: 1))
                #expect(first.state == .claimed && first.attempts == 0 && first.imageName == "snapcron-a-1")
                #expect(try await store.claim("a", at: 1) == nil)
                #expect(
                    try await store.recordMissed(job: "a", scheduledAt: minute(1), now: minute(2), reason: "x") == nil)
                #expect(
                    try await store.recordSkipped(
                        job: "a", scheduledAt: minute(1), trigger: .schedule, now: minute(2), reason: "x") == nil)
                #expect(try await store.run(job: "a", scheduledAt: minute(1)) == first)
                #expect(try await store.run(id: first.id) == first)
                // Another job's fire at the same time is its own.
                #expect(try await store.claim("b", at: 1) != nil)
            }
        }

        @Test(arguments: StoreKind.tested)
        func batchClaimAnswersPerFire(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let claim = { (job: String, m: Int) in
                    RunClaim(
                        job: job, scheduledAt: minute(m), trigger: .schedule, imageName: "n-\(job)-\(m)",
                        backend: "fake", target: "vm-\(job)")
                }
                try await store.claim("a", at: 1)
                let results = try await store.claimRuns(
                    [claim("a", 1), claim("a", 2), claim("b", 2), claim("a", 2)], now: minute(3))
                #expect(results.map { $0 == nil } == [true, false, false, true])
                #expect(try await store.claimRuns([], now: minute(3)).isEmpty)
                #expect(try await store.jobState("a")?.lastScheduledAt == minute(2))
            }
        }

        @Test(arguments: StoreKind.tested)
        func timesAreWholeSeconds(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let fire = minute(1) + 0.75
                let run = try #require(
                    try await store.claimRuns(
                        [
                            RunClaim(
                                job: "a", scheduledAt: fire, trigger: .schedule, imageName: "n", backend: "fake",
                                target: "t")
                        ],
                        now: minute(1) + 0.5)[0])
                #expect(run.scheduledAt == minute(1) && run.claimedAt == minute(1))
                // The same second is the same fire.
                let again = RunClaim(
                    job: "a", scheduledAt: minute(1) + 0.25, trigger: .schedule, imageName: "n", backend: "fake",
                    target: "t")
                #expect(try await store.claimRuns([again], now: minute(2))[0] == nil)
            }
        }

        @Test(arguments: StoreKind.tested)
        func scheduledClaimsAdvanceLastFireAndManualOnesDoNot(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                try await store.claim("a", at: 5)
                try await store.claim("a", at: 3)  // out of order: never moves back
                #expect(try await store.jobState("a")?.lastScheduledAt == minute(5))
                try await store.claim("a", at: 9, trigger: .manual)
                #expect(try await store.jobState("a")?.lastScheduledAt == minute(5))
                try await store.claim("m", at: 9, trigger: .manual)
                #expect(try await store.jobState("m")?.lastScheduledAt == nil)
                _ = try await store.recordMissed(job: "a", scheduledAt: minute(7), now: minute(8), reason: "down")
                #expect(try await store.jobState("a")?.lastScheduledAt == minute(7))
            }
        }

        @Test(arguments: StoreKind.tested)
        func missedFireIsTerminalAndTaken(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let missed = try #require(
                    try await store.recordMissed(job: "a", scheduledAt: minute(1), now: minute(9), reason: "down"))
                #expect(missed.state == .missed && missed.error == "down" && missed.finishedAt == minute(9))
                #expect(missed.imageName == nil && missed.backend == nil)
                #expect(try await store.claim("a", at: 1) == nil)
                #expect(try await store.unfinishedRuns().isEmpty)
            }
        }

        // MARK: Skipped rows

        @Test(arguments: StoreKind.tested)
        func consecutiveSkipsShareOneRow(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let skip = { (m: Int, reason: String) in
                    try await store.recordSkipped(
                        job: "a", scheduledAt: minute(m), trigger: .schedule, now: minute(m), reason: reason)
                }
                let first = try #require(try await skip(1, "busy"))
                let third = try #require(
                    try await {
                        _ = try await skip(2, "busy")
                        return try await skip(3, "busy")
                    }())
                #expect(third.id == first.id && third.repeatCount == 3 && third.repeatedUntil == minute(3))
                #expect(third.finishedAt == minute(3) && third.scheduledAt == minute(1))
                #expect(try await store.jobState("a")?.lastScheduledAt == minute(3))
                // A fire inside the span is handled already.
                #expect(try await store.claim("a", at: 2) == nil)
                #expect(try await skip(2, "busy") == nil)
                // Another reason starts a row; so does a claim in between.
                let other = try #require(try await skip(4, "paused"))
                #expect(other.id != first.id && other.repeatCount == 1 && other.repeatedUntil == nil)
                try await store.claim("a", at: 5)
                let after = try #require(try await skip(6, "paused"))
                #expect(after.id != other.id && after.repeatCount == 1)
                #expect(try await store.runs(job: "a", state: .skipped, since: nil, limit: 10).count == 3)
            }
        }

        @Test(arguments: StoreKind.tested)
        func manualSkipsDoNotJoinScheduledOnes(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let scheduled = try #require(
                    try await store.recordSkipped(
                        job: "a", scheduledAt: minute(1), trigger: .schedule, now: minute(1), reason: "busy"))
                let manual = try #require(
                    try await store.recordSkipped(
                        job: "a", scheduledAt: minute(2), trigger: .manual, now: minute(2), reason: "busy"))
                #expect(manual.id != scheduled.id)
                #expect(try await store.jobState("a")?.lastScheduledAt == minute(1))
            }
        }

        // MARK: Run transitions

        @Test(arguments: StoreKind.tested)
        func runGoesThroughItsLifecycle(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let claimed = try #require(try await store.claim("a", at: 1))
                let creating = try #require(try await store.markCreating(runIDs: [claimed.id], now: minute(2))[0])
                #expect(creating.state == .creating && creating.attempts == 1 && creating.startedAt == minute(2))
                let retry = try await store.recordRetryableFailure(
                    runID: claimed.id, error: "throttled", nextAttemptAt: minute(3))
                #expect(retry.state == .claimed && retry.error == "throttled" && retry.nextPollAt == minute(3))
                let again = try #require(try await store.markCreating(runIDs: [claimed.id], now: minute(3))[0])
                #expect(again.attempts == 2 && again.startedAt == minute(2) && again.nextPollAt == nil)
                #expect(try await store.run(id: claimed.id) == again)
                let waiting = try await store.markWaiting(
                    runID: claimed.id, imageID: "img-1", description: "d", now: minute(4), nextPollAt: minute(5))
                #expect(waiting.state == .waiting && waiting.imageID == "img-1" && waiting.error == nil)
                let queued = try #require(try await store.image(id: "img-1", backend: "fake"))
                #expect(queued.state == .queued && queued.runID == claimed.id && queued.name == "snapcron-a-1")
                #expect(queued.createdAt == minute(4) && queued.description == "d" && queued.target == "vm-1")
                let polled = try await store.updatePoll(
                    runID: claimed.id, imageState: .saving, sizeBytes: 10, nextPollAt: minute(6), now: minute(5))
                #expect(polled.nextPollAt == minute(6))
                #expect(try await store.image(id: "img-1", backend: "fake")?.state == .saving)
                #expect(try await store.unfinishedRuns().map(\.id) == [claimed.id])
                let done = try await store.finishRun(
                    runID: claimed.id, state: .succeeded, error: nil, sizeBytes: 20, now: minute(7))
                #expect(done.state == .succeeded && done.finishedAt == minute(7) && done.nextPollAt == nil)
                let image = try #require(try await store.image(id: "img-1", backend: "fake"))
                #expect(image.state == .active && image.sizeBytes == 20)
                #expect(try await store.unfinishedRuns().isEmpty)
            }
        }

        @Test(arguments: StoreKind.tested)
        func illegalTransitionsThrowAndWriteNothing(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let run = try #require(try await store.claim("a", at: 1))
                await #expect(throws: (any Error).self) {
                    try await store.finishRun(
                        runID: run.id, state: .succeeded, error: nil, sizeBytes: nil, now: minute(2))
                }
                await #expect(throws: (any Error).self) {
                    try await store.markWaiting(
                        runID: run.id, imageID: "img", description: nil, now: minute(2), nextPollAt: minute(3))
                }
                await #expect(throws: (any Error).self) {
                    try await store.updatePoll(
                        runID: run.id, imageState: .saving, sizeBytes: nil, nextPollAt: nil, now: minute(2))
                }
                await #expect(throws: (any Error).self) {
                    try await store.recordRetryableFailure(runID: run.id, error: "e", nextAttemptAt: minute(2))
                }
                await #expect(throws: (any Error).self) {
                    try await store.finishRun(
                        runID: run.id, state: .waiting, error: nil, sizeBytes: nil, now: minute(2))
                }
                await #expect(throws: (any Error).self) {
                    try await store.finishRun(
                        runID: 999_999, state: .failed, error: nil, sizeBytes: nil, now: minute(2))
                }
                #expect(try await store.run(id: run.id) == run)
                #expect(try await store.image(id: "img", backend: "fake") == nil)

                // Terminal runs move nowhere; markCreating answers nil for them and for unknown ids.
                let failed = try await store.finishRun(
                    runID: run.id, state: .failed, error: "no", sizeBytes: nil, now: minute(2))
                #expect(try await store.markCreating(runIDs: [run.id, 999_999], now: minute(3)) == [nil, nil])
                await #expect(throws: (any Error).self) {
                    try await store.finishRun(
                        runID: run.id, state: .cancelled, error: nil, sizeBytes: nil, now: minute(3))
                }
                #expect(try await store.run(id: run.id) == failed)

                // A batch answers in the order asked: the claimed runs move, the ended and unknown ones do not.
                let first = try #require(try await store.claim("b1", at: 4))
                let second = try #require(try await store.claim("b2", at: 4))
                let batch = try await store.markCreating(
                    runIDs: [second.id, run.id, first.id, 999_998], now: minute(4))
                #expect(batch.map { $0?.id } == [second.id, nil, first.id, nil])
                #expect(batch.compactMap { $0 }.allSatisfy { $0.state == .creating && $0.attempts == 1 })
            }
        }

        @Test(arguments: StoreKind.tested)
        func markWaitingRefusesAnImageRecordedForAnotherRun(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                try await store.waitingRun("a", at: 1, image: "img")
                let other = try #require(try await store.claim("b", at: 1))
                let creating = try #require(try await store.markCreating(runIDs: [other.id], now: minute(1))[0])
                await #expect(throws: (any Error).self) {
                    try await store.markWaiting(
                        runID: other.id, imageID: "img", description: nil, now: minute(2), nextPollAt: minute(3))
                }
                #expect(try await store.run(id: other.id) == creating)
                #expect(try await store.image(id: "img", backend: "fake")?.job == "a")
            }
        }

        @Test(arguments: StoreKind.tested)
        func finishKeepsImagesItMustNotTouch(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let timedOut = try await store.waitingRun("a", at: 1, image: "slow")
                _ = try await store.finishRun(
                    runID: timedOut.id, state: .timedOut, error: "timeout", sizeBytes: nil, now: minute(9))
                #expect(try await store.image(id: "slow", backend: "fake")?.state == .queued)
                let failed = try await store.waitingRun("a", at: 2, image: "bad")
                _ = try await store.finishRun(
                    runID: failed.id, state: .failed, error: "e", sizeBytes: nil, now: minute(9))
                #expect(try await store.image(id: "bad", backend: "fake")?.state == .error)
                let gone = try await store.waitingRun("a", at: 3, image: "gone")
                _ = try await store.updatePoll(
                    runID: gone.id, imageState: .gone, sizeBytes: nil, nextPollAt: nil, now: minute(4))
                _ = try await store.finishRun(
                    runID: gone.id, state: .failed, error: "gone", sizeBytes: nil, now: minute(5))
                #expect(try await store.image(id: "gone", backend: "fake")?.state == .gone)
            }
        }

        @Test(arguments: StoreKind.tested)
        func adoptImageOnlyForARunThatEndedWithoutOne(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let run = try #require(try await store.claim("a", at: 1))
                _ = try await store.markCreating(runIDs: [run.id], now: minute(2))
                _ = try await store.finishRun(
                    runID: run.id, state: .failed, error: "lost", sizeBytes: nil, now: minute(3))
                let adopted = try await store.adoptImage(
                    runID: run.id, imageID: "late", description: nil, now: minute(9))
                #expect(adopted.imageID == "late" && adopted.state == .failed)
                let image = try #require(try await store.image(id: "late", backend: "fake"))
                #expect(image.state == .queued && image.createdAt == minute(2) && image.runID == run.id)
                await #expect(throws: (any Error).self) {
                    try await store.adoptImage(runID: run.id, imageID: "other", description: nil, now: minute(9))
                }
                let live = try #require(try await store.claim("a", at: 2))
                await #expect(throws: (any Error).self) {
                    try await store.adoptImage(runID: live.id, imageID: "x", description: nil, now: minute(9))
                }
                #expect(try await store.run(id: live.id) == live)
            }
        }

        // MARK: Images and deleting

        @Test(arguments: StoreKind.tested)
        func onlyActiveUnpinnedImagesAreDeleted(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                try await store.waitingRun("a", at: 1, image: "queued")
                #expect(
                    try await store.beginDeleting(id: "queued", backend: "fake", reason: "r", now: minute(9)) == nil)
                try await store.activeImage("a", at: 2, image: "pinned")
                _ = try await store.setPinned(id: "pinned", backend: "fake", true)
                #expect(
                    try await store.beginDeleting(id: "pinned", backend: "fake", reason: "r", now: minute(9)) == nil)
                #expect(
                    try await store.beginDeleting(id: "unknown", backend: "fake", reason: "r", now: minute(9)) == nil)

                try await store.activeImage("a", at: 3, image: "old")
                let deleting = try #require(
                    try await store.beginDeleting(id: "old", backend: "fake", reason: "keep=1", now: minute(9)))
                #expect(deleting.state == .deleting && deleting.deleteReason == "keep=1")
                #expect(try await store.beginDeleting(id: "old", backend: "fake", reason: "r", now: minute(9)) == nil)
                #expect(try await store.imagesBeingDeleted().map(\.id) == ["old"])
                // A pin of an image being deleted is refused, and nothing changes.
                await #expect(throws: (any Error).self) { try await store.setPinned(id: "old", backend: "fake", true) }
                #expect(try await store.image(id: "old", backend: "fake") == deleting)
                // Nor may a poll or a seen state undo the delete.
                await #expect(throws: (any Error).self) {
                    try await store.updateImageState(
                        id: "old", backend: "fake", state: .active, sizeBytes: nil, now: minute(9))
                }

                let aborted = try #require(
                    try await store.abortDeleting(id: "old", backend: "fake", error: "refused", now: minute(10)))
                #expect(aborted.state == .active && aborted.deleteReason == nil && aborted.keepReason != nil)
                #expect(try await store.abortDeleting(id: "old", backend: "fake", error: "x", now: minute(10)) == nil)

                _ = try #require(
                    try await store.beginDeleting(id: "old", backend: "fake", reason: "keep=1", now: minute(11)))
                let deleted = try await store.markImageDeleted(
                    id: "old", backend: "fake", now: minute(12), reason: "keep=1")
                #expect(deleted.state == .deleted && deleted.deletedAt == minute(12))
                #expect(
                    try await store.markImageDeleted(id: "old", backend: "fake", now: minute(13), reason: "again")
                        == deleted)
                #expect(try await store.imagesBeingDeleted().isEmpty)
                // A pinned image is never marked deleted.
                await #expect(throws: (any Error).self) {
                    try await store.markImageDeleted(id: "pinned", backend: "fake", now: minute(12), reason: "r")
                }
                #expect(try await store.image(id: "pinned", backend: "fake")?.state == .active)
                #expect(try await store.images(job: "a", includeDeleted: false).map(\.id) == ["pinned", "queued"])
                #expect(
                    try await store.images(job: "a", includeDeleted: true).map(\.id) == ["old", "pinned", "queued"])
            }
        }

        @Test(arguments: StoreKind.tested)
        func aRefusedVerdictWritesNothingOfThePass(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                try await store.activeImage("a", at: 1, image: "one")
                try await store.activeImage("a", at: 2, image: "two")
                _ = try await store.setPinned(id: "two", backend: "fake", true)
                await #expect(throws: (any Error).self) {
                    try await store.recordRetentionDecisions([
                        (ImageKey(id: "one", backend: "fake"), .keep(reason: "newest")),
                        (ImageKey(id: "two", backend: "fake"), .delete(reason: "keep=1")),
                    ])
                }
                #expect(try await store.image(id: "one", backend: "fake")?.keepReason == nil)
                let records = try await store.recordRetentionDecisions([
                    (ImageKey(id: "one", backend: "fake"), .delete(reason: "keep=1")),
                    (ImageKey(id: "two", backend: "fake"), .keep(reason: "pinned")),
                ])
                #expect(records.map(\.deleteReason) == ["keep=1", nil])
                #expect(records.map(\.keepReason) == [nil, "pinned"])
                #expect(records[0].state == .active)  // a verdict only plans
            }
        }

        @Test(arguments: StoreKind.tested)
        func imageStatesSeenAtTheBackend(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                try await store.activeImage("a", at: 1, image: "img")
                await #expect(throws: (any Error).self) {
                    try await store.updateImageState(
                        id: "img", backend: "fake", state: .deleted, sizeBytes: nil, now: minute(2))
                }
                await #expect(throws: (any Error).self) {
                    try await store.updateImageState(
                        id: "nope", backend: "fake", state: .gone, sizeBytes: nil, now: minute(2))
                }
                let gone = try await store.updateImageState(
                    id: "img", backend: "fake", state: .gone, sizeBytes: 5, now: minute(2))
                #expect(gone.state == .gone && gone.sizeBytes == 5)
                #expect(try await store.imageStates(backend: "fake") == ["img": .gone])
                #expect(try await store.imageStates(backend: "other").isEmpty)
            }
        }

        @Test(arguments: StoreKind.tested)
        func foundImageIsRecordedOnce(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let run = try #require(try await store.claim("a", at: 1))
                let found = FoundImage(
                    id: "f", backend: "fake", job: "a", target: "vm-1", name: "snapcron-a-1", description: "m",
                    createdAt: minute(1), state: .active, sizeBytes: 3)
                let record = try #require(try await store.recordFoundImage(found, now: minute(5)))
                #expect(record.runID == run.id && record.state == .active && record.sizeBytes == 3)
                #expect(try await store.recordFoundImage(found, now: minute(6)) == nil)
                #expect(try await store.image(id: "f", backend: "fake") == record)
                var orphan = found
                orphan.id = "g"
                orphan.name = "snapcron-a-99"
                #expect(try await store.recordFoundImage(orphan, now: minute(5))?.runID == nil)
                var bad = found
                bad.id = "h"
                bad.state = .deleted
                await #expect(throws: (any Error).self) { try await store.recordFoundImage(bad, now: minute(5)) }
                #expect(try await store.image(id: "h", backend: "fake") == nil)
            }
        }

        @Test(arguments: StoreKind.tested)
        func imagesLeftUnfinishedAreThoseNoRunFollows(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                try await store.waitingRun("a", at: 1, image: "followed")
                let given = try await store.waitingRun("a", at: 2, image: "given-up")
                _ = try await store.finishRun(
                    runID: given.id, state: .timedOut, error: "t", sizeBytes: nil, now: minute(9))
                _ = try await store.recordFoundImage(
                    FoundImage(
                        id: "found", backend: "fake", job: "b", target: "vm-2", name: "x", description: nil,
                        createdAt: minute(0), state: .saving, sizeBytes: nil), now: minute(9))
                try await store.activeImage("a", at: 3, image: "done")
                #expect(try await store.imagesLeftUnfinished(limit: 10).map(\.id) == ["found", "given-up"])
                #expect(try await store.imagesLeftUnfinished(limit: 1).map(\.id) == ["found"])
            }
        }

        @Test(arguments: StoreKind.tested)
        func newestActiveImageDatesIgnoreTheFuture(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                try await store.activeImage("a", at: 1, image: "a1")
                try await store.activeImage("a", at: 5, image: "a5")
                try await store.activeImage("b", at: 50, image: "b50")
                try await store.waitingRun("c", at: 2, image: "c2")
                #expect(try await store.newestActiveImageDates(notAfter: minute(10)) == ["a": minute(5)])
                #expect(
                    try await store.newestActiveImageDates(notAfter: minute(60)) == ["a": minute(5), "b": minute(50)])
            }
        }

        @Test(arguments: StoreKind.tested)
        func imageCensusQueries(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                try await store.activeImage("a", at: 1, image: "a1", target: "vm-1")
                try await store.activeImage("a", at: 2, image: "a2", target: "vm-1")
                try await store.activeImage("b", at: 3, image: "b3", target: "vm-2")
                _ = try await store.beginDeleting(id: "b3", backend: "fake", reason: "r", now: minute(4))
                _ = try await store.markImageDeleted(id: "b3", backend: "fake", now: minute(5), reason: "r")
                #expect(try await store.jobsWithImages() == ["a"])
                #expect(
                    try await store.imageTargets() == [ImageTarget(job: "a", backend: "fake", target: "vm-1", count: 2)]
                )
            }
        }

        // MARK: Jobs and clock

        @Test(arguments: StoreKind.tested)
        func pauseIsKeptPerJob(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                #expect(try await store.allJobStates().isEmpty)
                let paused = try await store.setPaused(name: "b", true, now: minute(1))
                #expect(paused.paused && paused.lastScheduledAt == nil && paused.updatedAt == minute(1))
                try await store.claim("a", at: 2)
                _ = try await store.setPaused(name: "a", true, now: minute(3))
                let resumed = try await store.setPaused(name: "a", false, now: minute(4))
                #expect(!resumed.paused && resumed.lastScheduledAt == minute(2))
                #expect(try await store.allJobStates().map(\.name) == ["a", "b"])
                #expect(try await store.pausedJobNames() == ["b"])
            }
        }

        @Test(arguments: StoreKind.tested)
        func clampMovesOnlyFutureLastFires(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                try await store.claim("b", at: 100)
                try await store.claim("a", at: 90)
                try await store.claim("c", at: 10)
                #expect(try await store.clampLastScheduled(notAfter: minute(50)) == ["a", "b"])
                #expect(try await store.jobState("a")?.lastScheduledAt == minute(50))
                #expect(try await store.jobState("c")?.lastScheduledAt == minute(10))
                #expect(try await store.clampLastScheduled(notAfter: minute(50)).isEmpty)
                // Fires already recorded stay taken.
                #expect(try await store.claim("b", at: 100) == nil)
            }
        }

        @Test(arguments: StoreKind.tested)
        func latestRecordedInstantCoversClaimsFiresSpansAndImages(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                #expect(try await store.latestRecordedInstant() == nil)
                try await store.claim("a", at: 3)
                #expect(try await store.latestRecordedInstant() == minute(3))
                _ = try await store.recordSkipped(
                    job: "b", scheduledAt: minute(4), trigger: .schedule, now: minute(1), reason: "r")
                _ = try await store.recordSkipped(
                    job: "b", scheduledAt: minute(8), trigger: .schedule, now: minute(1), reason: "r")
                #expect(try await store.latestRecordedInstant() == minute(8))
                _ = try await store.claimRuns(
                    [
                        RunClaim(
                            job: "m", scheduledAt: minute(20), trigger: .manual, imageName: "n", backend: "fake",
                            target: "t")
                    ],
                    now: minute(9))
                #expect(try await store.latestRecordedInstant() == minute(9))
            }
        }

        @Test(arguments: StoreKind.tested)
        func installationIDIsMadeOnceAndKept(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let id = try await store.installationID()
                #expect(!id.isEmpty)
                #expect(try await store.installationID() == id)
            }
        }

        // MARK: History

        @Test(arguments: StoreKind.tested)
        func historyIsNewestFirstAndFiltered(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                try await store.claim("a", at: 1)
                let failed = try #require(try await store.claim("a", at: 2))
                _ = try await store.finishRun(
                    runID: failed.id, state: .failed, error: "e", sizeBytes: nil, now: minute(3))
                try await store.claim("b", at: 3)
                let timedOut = try #require(try await store.claim("b", at: 4))
                _ = try await store.finishRun(
                    runID: timedOut.id, state: .timedOut, error: "t", sizeBytes: nil, now: minute(2))
                let all = try await store.runs(job: nil, state: nil, since: nil, limit: 100)
                #expect(all.map(\.scheduledAt) == [minute(4), minute(3), minute(2), minute(1)])
                #expect(try await store.runs(job: "a", state: nil, since: nil, limit: 100).count == 2)
                #expect(try await store.runs(job: nil, state: .claimed, since: nil, limit: 100).count == 2)
                #expect(try await store.runs(job: nil, state: nil, since: minute(3), limit: 100).count == 2)
                #expect(
                    try await store.runs(job: nil, state: nil, since: nil, limit: 1).map(\.scheduledAt) == [minute(4)])
                #expect(try await store.runs(job: nil, state: nil, since: nil, limit: 0).isEmpty)
                // The failure that finished last.
                #expect(try await store.lastFailure()?.id == failed.id)
            }
        }

        @Test(arguments: StoreKind.tested)
        func targetsOfRunsThatStartedACreateAndEndedWithoutAnImage(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let lost = try #require(try await store.claim("a", at: 1, target: "vm-lost"))
                _ = try await store.markCreating(runIDs: [lost.id], now: minute(1))
                _ = try await store.finishRun(
                    runID: lost.id, state: .failed, error: "e", sizeBytes: nil, now: minute(5))
                let never = try #require(try await store.claim("a", at: 2, target: "vm-never"))
                _ = try await store.finishRun(
                    runID: never.id, state: .cancelled, error: nil, sizeBytes: nil, now: minute(5))
                let imaged = try await store.waitingRun("a", at: 3, image: "i", target: "vm-imaged")
                _ = try await store.finishRun(
                    runID: imaged.id, state: .failed, error: "e", sizeBytes: nil, now: minute(5))
                let old = try #require(try await store.claim("b", at: 0, target: "vm-old"))
                _ = try await store.markCreating(runIDs: [old.id], now: minute(0))
                _ = try await store.finishRun(
                    runID: old.id, state: .timedOut, error: "t", sizeBytes: nil, now: minute(1))
                let targets = try await store.targetsOfRunsEndedWithoutImage(since: minute(4))
                #expect(targets.map { "\($0.backend):\($0.target)" } == ["fake:vm-lost"])
            }
        }

        @Test(arguments: StoreKind.tested)
        func pruneRemovesOnlyOldFinishedHistory(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                // An old finished run without an image, one whose image is deleted, and an unfinished one.
                let bare = try #require(try await store.claim("a", at: 1))
                _ = try await store.finishRun(
                    runID: bare.id, state: .failed, error: "e", sizeBytes: nil, now: minute(2))
                let imaged = try await store.activeImage("a", at: 3, image: "img")
                _ = try await store.beginDeleting(id: "img", backend: "fake", reason: "r", now: minute(5))
                _ = try await store.markImageDeleted(id: "img", backend: "fake", now: minute(6), reason: "r")
                let kept = try await store.activeImage("a", at: 7, image: "kept")
                let unfinished = try #require(try await store.claim("a", at: 8))
                try await store.recordHookResult(
                    HookRecord(
                        runID: bare.id, phase: .failure, hookSet: "h", result: "exit 0", exitStatus: 0, durationMs: 5,
                        finishedAt: minute(2)))
                let result = try await store.pruneHistory(olderThan: minute(100))
                #expect(result == HistoryPruneResult(runs: 2, images: 1))
                #expect(try await store.run(id: bare.id) == nil)
                #expect(try await store.image(id: "img", backend: "fake") == nil)
                #expect(imaged.runID != nil)
                #expect(try await store.run(id: try #require(kept.runID)) != nil)
                #expect(try await store.run(id: unfinished.id) != nil)
                #expect(try await store.jobState("a")?.lastScheduledAt == minute(8))
                #expect(try await store.pruneHistory(olderThan: minute(100)) == HistoryPruneResult(runs: 0, images: 0))
            }
        }

        /// A fire is claimed at most once while its run is kept: a pruned fire is forgotten, and the job's last
        /// handled fire (kept by pruning) is what stops the scheduler from claiming it again (StateStore's contract).
        @Test(arguments: StoreKind.tested)
        func aPrunedFireCanBeClaimedAgain(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                let run = try #require(try await store.claim("a", at: 1))
                _ = try await store.finishRun(runID: run.id, state: .failed, error: "e", sizeBytes: nil, now: minute(2))
                #expect(try await store.pruneHistory(olderThan: minute(100)).runs == 1)
                #expect(try await store.jobState("a")?.lastScheduledAt == minute(1))
                #expect(try await store.claim("a", at: 1) != nil)
            }
        }

        @Test(arguments: StoreKind.tested)
        func healthIsOK(_ kind: StoreKind) async throws {
            try await kind.withStore { store in
                #expect(await store.health().isOK)
            }
        }
    }
}

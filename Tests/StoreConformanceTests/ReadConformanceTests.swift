import Foundation
import SnapcronCore
import Testing

/// The reads the control socket and the metrics make (`jobState`, `hookResults`, `imageCensus`,
/// `lastSuccessfulRunEnds`, `checkpoint`), on every store.
extension StoreTests.Conformance {
    @Test(arguments: StoreKind.tested)
    func jobStateIsOneJobsRowOrNil(_ kind: StoreKind) async throws {
        try await kind.withStore { store in
            #expect(try await store.jobState(name: "a") == nil)
            _ = try await store.claim("a", at: 3)
            _ = try await store.setPaused(name: "b", true, now: minute(4))
            #expect(try await store.jobState("a")?.lastScheduledAt == minute(3))
            #expect(try await store.jobState("a")?.paused == false)
            #expect(try await store.jobState("b")?.paused == true)
            #expect(try await store.jobState(name: "c") == nil)
        }
    }

    @Test(arguments: StoreKind.tested)
    func hookResultsComeBackPerRunInTheOrderRecorded(_ kind: StoreKind) async throws {
        try await kind.withStore { store in
            let first = try #require(try await store.claim("a", at: 1))
            let second = try #require(try await store.claim("b", at: 1))
            let records = [
                HookRecord(
                    runID: first.id, phase: .pre, hookSet: "db", result: "exit 0", exitStatus: 0, durationMs: 120,
                    finishedAt: minute(1)),
                HookRecord(
                    runID: second.id, phase: .pre, hookSet: "db", result: "timed out", exitStatus: nil,
                    durationMs: 60_000, finishedAt: minute(2)),
                HookRecord(
                    runID: first.id, phase: .post, hookSet: "db", result: "exit 3", exitStatus: 3, durationMs: 0,
                    finishedAt: minute(2)),
            ]
            for record in records { try await store.recordHookResult(record) }
            let results = try await store.hookResults(runIDs: [first.id, second.id, 999_999])
            #expect(results == [first.id: [records[0], records[2]], second.id: [records[1]]])
            #expect(try await store.hookResults(runIDs: []).isEmpty)
            // A run pruned from the history takes its hook results along.
            _ = try await store.finishRun(runID: first.id, state: .failed, error: "e", sizeBytes: nil, now: minute(3))
            _ = try await store.pruneHistory(olderThan: minute(100))
            #expect(try await store.hookResults(runIDs: [first.id, second.id]) == [second.id: [records[1]]])
        }
    }

    @Test(arguments: StoreKind.tested)
    func imageCensusCountsLiveImagesByJobAndState(_ kind: StoreKind) async throws {
        try await kind.withStore { store in
            try await store.activeImage("a", at: 1, image: "a1")
            try await store.activeImage("a", at: 3, image: "a3")
            try await store.activeImage("a", at: 9, image: "a9")  // made after the census's now
            for (id, size) in [("a1", Int64(100)), ("a3", 50)] {
                _ = try await store.updateImageState(
                    id: id, backend: "fake", state: .active, sizeBytes: size, now: minute(4))
            }
            try await store.waitingRun("b", at: 2, image: "b2")
            try await store.activeImage("c", at: 1, image: "c1")
            _ = try #require(try await store.beginDeleting(id: "c1", backend: "fake", reason: "r", now: minute(5)))
            _ = try await store.markImageDeleted(id: "c1", backend: "fake", now: minute(5), reason: "r")
            let census = try await store.imageCensus(notAfter: minute(5))
            let byKey = Dictionary(uniqueKeysWithValues: census.map { ("\($0.job)/\($0.state.rawValue)", $0) })
            #expect(Set(byKey.keys) == ["a/active", "b/queued"], "a deleted image is not counted: \(census)")
            #expect(
                byKey["a/active"]
                    == ImageCensusRow(job: "a", state: .active, count: 3, bytes: 150, newestCreatedAt: minute(3)))
            #expect(
                byKey["b/queued"]
                    == ImageCensusRow(job: "b", state: .queued, count: 1, bytes: 0, newestCreatedAt: minute(2)))
        }
    }

    @Test(arguments: StoreKind.tested)
    func lastSuccessfulRunEndsPerJob(_ kind: StoreKind) async throws {
        try await kind.withStore { store in
            try await store.activeImage("a", at: 1, image: "a1")
            try await store.activeImage("a", at: 3, image: "a3")
            let failed = try #require(try await store.claim("a", at: 5))
            _ = try await store.finishRun(runID: failed.id, state: .failed, error: "e", sizeBytes: nil, now: minute(6))
            try await store.waitingRun("b", at: 2, image: "b2")
            let ends = try await store.lastSuccessfulRunEnds(jobs: ["a", "b", "unknown"])
            #expect(ends == ["a": minute(4)], "the newest fire's success; b has none yet")
            #expect(try await store.lastSuccessfulRunEnds(jobs: []).isEmpty)
        }
    }

    @Test(arguments: StoreKind.tested)
    func checkpointKeepsEverything(_ kind: StoreKind) async throws {
        try await kind.withStore { store in
            let image = try await store.activeImage("a", at: 1, image: "a1")
            try await store.checkpoint()
            #expect(try await store.image(id: "a1", backend: "fake") == image)
        }
    }
}

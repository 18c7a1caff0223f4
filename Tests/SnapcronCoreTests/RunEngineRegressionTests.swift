import Foundation
import Logging
import SnapcronStore
import SnapcronTestKit
import SnapshotBackend
import Synchronization
import Testing

@testable import SnapcronCore

/// A gate a backend call waits at until the test opens it.
final class Gate: Sendable {
    private let state = Mutex<(open: Bool, waiting: Int, waiters: [CheckedContinuation<Void, Never>])>(
        (false, 0, []))

    var waiting: Int { state.withLock { $0.waiting } }

    func pass() async {
        await withCheckedContinuation { continuation in
            let passNow = state.withLock { state -> Bool in
                if state.open { return true }
                state.waiting += 1
                state.waiters.append(continuation)
                return false
            }
            if passNow { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.open = true
            let waiters = state.waiters
            state.waiters = []
            state.waiting = 0
            return waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// The sizes of the batched status calls a backend got.
final class BatchLog: Sendable {
    let sizes = Mutex<[Int]>([])
}

/// A backend whose calls can be held at a gate, answered differently, or counted; the rest goes to `base`.
struct ScriptedBackend: SnapshotBackend {
    let base: any SnapshotBackend
    var deleteGate: Gate?
    /// A create that never returns (and ignores its cancellation), after making the image when `makesImage`.
    var createHangs: (makesImage: Bool, gate: Gate)?
    /// The create already knows the image is complete.
    var createSaysActive = false
    var statusBatches: BatchLog?

    var name: String { base.name }

    func create(target: String, name: String, description: String, logger: Logger) async throws -> ImageRef {
        try await createImage(target: target, name: name, description: description, logger: logger).ref
    }

    func createImage(target: String, name: String, description: String, logger: Logger) async throws -> CreatedImage {
        if let (makesImage, gate) = createHangs {
            if makesImage { _ = try await base.create(target: target, name: name, description: description, logger: logger) }
            await gate.pass()
            throw SnapshotBackendError.transient(backend: self.name, .create, target: target, "released")
        }
        let ref = try await base.create(target: target, name: name, description: description, logger: logger)
        return CreatedImage(ref: ref, state: createSaysActive ? .active : nil)
    }

    func status(_ image: ImageRef, logger: Logger) async throws -> ImageState {
        try await base.status(image, logger: logger)
    }

    func statuses(of images: [ImageRef], logger: Logger) async -> [ImageRef: Result<ImageState, SnapshotBackendError>] {
        statusBatches?.sizes.withLock { $0.append(images.count) }
        return await base.statuses(of: images, logger: logger)
    }

    func list(target: String, logger: Logger) async throws -> [ImageInfo] { try await base.list(target: target, logger: logger) }

    func resumeAfterRestart(_ image: ImageRef, target: String, logger: Logger) async {
        await base.resumeAfterRestart(image, target: target, logger: logger)
    }

    func delete(_ image: ImageRef, logger: Logger) async throws {
        await deleteGate?.pass()
        try await base.delete(image, logger: logger)
    }

    func validate(target: String) throws { try base.validate(target: target) }
}

/// Each defect of the old run engine, as a test that failed on it.
@Suite struct RunEngineRegressionTests {
    /// Yields until `condition` holds (work on other tasks, no clock involved).
    func eventually(_ condition: () async -> Bool) async {
        for _ in 0..<2_000_000 {
            if await condition() { return }
            await Task.yield()
        }
        Issue.record("condition never became true")
    }

    // MARK: 1. Pin during a retention delete

    @Test func aPinAskedWhileRetentionDeletesTheImageIsRefusedAndNothingPinnedIsDeleted() async throws {
        let jobs = try simulationJobs("*/10 * * * *   db   fake:vm1   keep=1")
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"))
        let gate = Gate()
        sim.wrap = { ScriptedBackend(base: $0, deleteGate: gate) }
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:20:01Z"))
        let first = try #require(try sim.store.images(job: "db").last)
        // The second image becomes active at 00:20:02 and retention starts deleting the first: hold it there.
        sim.clock.manual.advance(to: utc("2026-06-01T00:20:03Z"))
        await eventually { gate.waiting == 1 }
        #expect(try sim.store.image(id: first.id, backend: "fake")?.state == .deleting)
        #expect(throws: SnapcronStoreError.self) { try sim.store.setPinned(id: first.id, backend: "fake", true) }
        // A pin of an image not being deleted is confirmed, and retention leaves it alone for good.
        let second = try #require(try sim.store.images(job: "db").first { $0.id != first.id })
        _ = try sim.store.setPinned(id: second.id, backend: "fake", true)
        gate.open()
        await sim.settle()
        await sim.run(until: utc("2026-06-01T00:45:00Z"))
        await sim.stop()
        #expect(try sim.store.image(id: first.id, backend: "fake")?.state == .deleted)
        #expect(try sim.store.image(id: second.id, backend: "fake")?.state == .active)
        #expect(await sim.fake.images.contains { $0.ref.id == second.id })
    }

    @Test func aFleetWhoseRunsEndTogetherRunsItsRetentionPassesAFewAtATime() async throws {
        let jobs = try simulationJobs(
            (0..<20).map { "*/10 * * * *   vm\($0)   fake:vm\($0)   keep=1" }.joined(separator: "\n"))
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"))
        let gate = Gate()
        sim.wrap = { ScriptedBackend(base: $0, deleteGate: gate) }
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:20:01Z"))
        // Every job's second image becomes active now: twenty passes want to delete, eight may run at once.
        sim.clock.manual.advance(to: utc("2026-06-01T00:21:00Z"))
        let limit = RunPacing().maxConcurrentRetentions
        await eventually { gate.waiting == limit }
        for _ in 0..<20_000 { await Task.yield() }
        #expect(gate.waiting == limit)
        gate.open()
        await sim.settle()
        await sim.run(until: utc("2026-06-01T00:25:00Z"))
        await sim.stop()
        for index in 0..<20 {
            let states = try sim.store.images(job: "vm\(index)", includeDeleted: true).map(\.state)
            #expect(states.sorted { $0.rawValue < $1.rawValue } == [.active, .deleted], "vm\(index): \(states)")
        }
    }

    // MARK: Store outages

    /// PostgreSQL restarting or failing over: the fire due meanwhile runs once when the store is back, within its
    /// deadline; past it, it is recorded missed, and only the newest of several fires due meanwhile runs.
    @Test func fireDueWhileTheStoreIsDownRunsOnceWhenItIsBackWithinTheDeadline() async throws {
        let sim = try Simulation(start: utc("2026-06-01T00:00:30Z"))
        let outage = CrashingStore(base: sim.store, calls: nil, commitsLastCall: false, onDeath: {})
        sim.storeWrap = { _ in outage }
        await sim.start(try simulationJobs("* * * * *   db   fake:vm1   deadline=2m"))
        outage.kill()
        await sim.run(until: utc("2026-06-01T00:01:20Z"))  // the 00:01 claim fails, and its retries
        #expect(try sim.store.runs(job: "db").isEmpty)
        outage.revive()
        await sim.run(until: utc("2026-06-01T00:01:40Z"))
        await sim.stop()
        let runs = try sim.store.runs(job: "db")
        #expect(runs.map(\.scheduledAt) == [utc("2026-06-01T00:01:00Z")], "\(runs)")
        #expect(runs.first?.state == .succeeded)
        #expect(await sim.fake.calls.filter { $0.operation == .create }.count == 1)
    }

    @Test func aStoreDownForSeveralFiresRunsOnlyTheNewestWithinItsDeadline() async throws {
        let sim = try Simulation(start: utc("2026-06-01T00:00:30Z"))
        let outage = CrashingStore(base: sim.store, calls: nil, commitsLastCall: false, onDeath: {})
        sim.storeWrap = { _ in outage }
        await sim.start(try simulationJobs("* * * * *   db   fake:vm1   deadline=90s"))
        outage.kill()
        await sim.run(until: utc("2026-06-01T00:03:10Z"))  // fires 00:01, 00:02 and 00:03 cannot be claimed
        outage.revive()
        await sim.run(until: utc("2026-06-01T00:03:50Z"))
        await sim.stop()
        // The older fires' missed rows were written while the store was down, so they may be absent; no run of
        // them is.
        let runs = try sim.store.runs(job: "db").filter { $0.state != .missed }
        #expect(runs.map(\.scheduledAt) == [utc("2026-06-01T00:03:00Z")], "\(runs)")
        #expect(runs.first?.state == .succeeded)
        #expect(await sim.fake.calls.filter { $0.operation == .create }.count == 1)
    }

    /// The claim committed but its answer was lost (the connection to PostgreSQL dropped at that instant): the
    /// retry finds the fire taken, sees the run is this daemon's own, and follows it to its image, once.
    @Test func aClaimThatCommittedThoughItsAnswerWasLostIsStillFollowed() async throws {
        let sim = try Simulation(start: utc("2026-06-01T00:00:30Z"))
        let store = CrashingStore(base: sim.store, calls: nil, commitsLastCall: false, onDeath: {})
        sim.storeWrap = { _ in store }
        await sim.start(try simulationJobs("* * * * *   db   fake:vm1"))
        store.claimCommitsThenFails.withLock { $0 = true }
        await sim.run(until: utc("2026-06-01T00:01:30Z"))
        await sim.stop()
        let runs = try sim.store.runs(job: "db")
        #expect(runs.map(\.state) == [.succeeded], "\(runs)")
        #expect(await sim.fake.calls.filter { $0.operation == .create }.count == 1)
    }

    /// In a cluster, another node pauses a job in the store: this one stops firing it at its next lease renewal
    /// (every third of the lease), and fires it again once it is resumed there.
    @Test func aPauseAnotherNodeRecordedIsFollowedAtTheNextRenewal() async throws {
        let sim = try Simulation(start: utc("2026-06-01T00:00:30Z"))
        let cluster = CrashingStore(base: sim.store, calls: nil, commitsLastCall: false, lease: .seconds(30), onDeath: {})
        sim.storeWrap = { _ in cluster }
        let service = await sim.start(try simulationJobs("* * * * *   db   fake:vm1"))
        _ = try sim.store.setPaused(name: "db", true, now: sim.now)  // another node's pause
        await sim.run(until: utc("2026-06-01T00:00:45Z"))
        #expect(service.pausedJobs == ["db"])
        await sim.run(until: utc("2026-06-01T00:02:30Z"))
        #expect(try sim.store.runs(job: "db").allSatisfy { $0.state == .skipped }, "paused: no run")
        _ = try sim.store.setPaused(name: "db", false, now: sim.now)
        await sim.run(until: utc("2026-06-01T00:03:30Z"))
        await sim.stop()
        #expect(service.pausedJobs.isEmpty)
        #expect(try sim.store.runs(job: "db").first?.state == .succeeded)
    }

    // MARK: 2. Retention per (job, backend, target)

    @Test func retentionJudgesOnlyTheJobsCurrentTargetAndOrphansWaitForAnExplicitPrune() async throws {
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"))
        let service = await sim.start(try simulationJobs("*/10 * * * *   db   fake:vm1   keep=2"))
        await sim.run(until: utc("2026-06-01T00:35:00Z"))
        #expect(try sim.store.images(job: "db").filter { $0.target == "vm1" }.count == 2)
        await service.apply(jobs: try simulationJobs("*/10 * * * *   db   fake:vm2   keep=1"))
        await sim.settle()
        await sim.run(until: utc("2026-06-01T01:05:00Z"))
        let images = try sim.store.images(job: "db")
        // The old VM's two images stay: keep=1 now judges vm2 only.
        #expect(images.filter { $0.target == "vm1" }.map(\.state) == [.active, .active])
        #expect(images.filter { $0.target == "vm2" }.map(\.state) == [.active])
        let orphans = try await service.orphanedImages()
        #expect(orphans.count == 2)
        #expect(orphans.allSatisfy { $0.reason == "job db now images fake:vm2" })
        // An explicit prune deletes the orphans but the newest active one of each old target.
        let planned = try await service.pruneOrphaned(dryRun: true)
        #expect(planned.count == 1)
        #expect(try sim.store.images(job: "db").filter { $0.target == "vm1" }.count == 2, "a dry run deletes nothing")
        let deleted = try await service.pruneOrphaned(dryRun: false)
        #expect(deleted.map(\.image.id) == planned.map(\.image.id))
        await sim.stop()
        let vm1 = try sim.store.images(job: "db", includeDeleted: true).filter { $0.target == "vm1" }
        #expect(vm1.map(\.state) == [.active, .deleted, .deleted], "the orphan prune took one, keep=2 one before")
    }

    // MARK: 3. Clock steps

    @Test func aForwardClockStepCorrectedLaterNeitherStopsJobsNorLetsTheFutureImageCount() async throws {
        let jobs = try simulationJobs("*/10 * * * *   j   fake:vm1   keep=2")
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"))
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:25:00Z"))
        // A bad RTC: a year ahead, then NTP brings it back.
        await sim.step(to: utc("2027-06-01T00:00:30Z"))
        await sim.run(until: utc("2027-06-01T00:05:00Z"))
        #expect(try sim.store.images(job: "j").first?.createdAt == utc("2027-06-01T00:00:30Z"))
        await sim.step(to: utc("2026-06-01T00:26:00Z"))
        await sim.run(until: utc("2026-06-01T01:05:00Z"))
        await sim.stop()
        let runs = try sim.runs("j").filter { $0.scheduledAt > utc("2026-06-01T00:26:00Z") && $0.scheduledAt < utc("2027-01-01T00:00:00Z") }
        #expect(runs.map(\.state) == [.succeeded, .succeeded, .succeeded, .succeeded], "00:30 to 01:00 fire again")
        let images = try sim.store.images(job: "j")
        // The future-dated image is kept, counted for nothing: keep=2 keeps the two newest real ones besides it.
        #expect(images.count == 3)
        #expect(images[0].createdAt == utc("2027-06-01T00:00:30Z"))
        #expect(images[0].keepReason?.contains("dated in the future") == true)
        let newest = try sim.store.newestActiveImageDates(notAfter: sim.now)["j"]
        #expect(newest == utc("2026-06-01T01:00:00Z"), "freshness ignores the future-dated image")
        #expect(try sim.store.jobState(name: "j")?.lastScheduledAt == utc("2026-06-01T01:00:00Z"))
    }

    // MARK: 4. Images created but not recorded

    @Test func anImageWhoseCreateReplyWasLostIsFoundByNameWhenTheRunEnds() async throws {
        let jobs = try simulationJobs("0 * * * *   j   fake:vm1   retries=0 keep=3")
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"))
        await sim.fake.enqueueCreate(.active, reply: .crashBeforeReply)
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:30:00Z"))
        await sim.stop()
        let run = try #require(try sim.runs("j").first)
        #expect(run.state == .failed)
        let image = try #require(try sim.store.images(job: "j").first)
        #expect(image.runID == run.id && image.name == run.imageName)
        #expect(image.state == .active)
        #expect(try sim.store.run(id: run.id)?.imageID == image.id)
    }

    @Test func aLostCreateOnATargetTheJobThenLeavesIsStillFoundByTheSweep() async throws {
        // Found by the model test in CI (seed 14722301433878119203): the sweep listed only the targets of jobs and
        // of recorded images, so an image made on a target the job was moved away from was never found.
        var pacing = RunPacing()
        pacing.firstSweepDelay = 3600
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"), pacing: pacing)
        await sim.fake.enqueueCreate(.active, reply: .crashBeforeReply)
        await sim.fake.failNext(.list)  // the run's own look-up fails
        await sim.start(try simulationJobs("0 * * * *   j   fake:vm1   retries=0 keep=3"))
        await sim.run(until: utc("2026-06-01T01:05:00Z"))
        #expect(try sim.store.images(job: "j").isEmpty)
        await sim.service.apply(jobs: try simulationJobs("0 * * * *   j   fake:vm2   retries=0 keep=3"))
        await sim.run(until: utc("2026-06-01T01:45:00Z"))
        await sim.stop()
        let image = try #require(try sim.store.images(job: "j").first { $0.target == "vm1" })
        #expect(image.state == .active && image.name == "snapcron-j-20260601T010000Z")
    }

    @Test func anImageWhoseClaimWasLostIsFoundByTheSweepAndRetentionCountsIt() async throws {
        let jobs = try simulationJobs("0 * * * *   j   fake:vm1   keep=1")
        var pacing = RunPacing()
        pacing.firstSweepDelay = 3600
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"), pacing: pacing)
        // A power cut dropped the claim of 00:00 after its create went out; the restart recorded the fire missed.
        let lost = utc("2026-06-01T00:00:00Z")
        _ = try sim.store.recordMissed(job: "j", scheduledAt: lost, now: utc("2026-06-01T00:30:00Z"), reason: "down")
        let ours = try sim.store.installationID()
        let name = RunEngine.imageName(job: "j", scheduled: lost)
        let lostImage = await sim.fake.seed(
            target: "vm1", name: name,
            description: RunEngine.imageDescription(job: "j", scheduled: lost, run: 1, installation: ours),
            createdAt: lost.addingTimeInterval(5))
        // The same name and marker from another installation (another store on the same project) stays foreign.
        let theirs = await sim.fake.seed(
            target: "vm1", name: name,
            description: RunEngine.imageDescription(job: "j", scheduled: lost, run: 1, installation: "0123abcd"),
            createdAt: lost.addingTimeInterval(6))
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:45:00Z"))
        await sim.stop()
        let found = try #require(try sim.store.image(id: lostImage.id, backend: "fake"))
        // Recorded, then counted by retention: keep=1 keeps the 01:00 image and deletes the found one.
        #expect(found.job == "j" && found.state == .deleted)
        #expect(try sim.store.image(id: theirs.id, backend: "fake") == nil)
        #expect(await sim.fake.images.contains { $0.ref == theirs })
        #expect(try sim.store.images(job: "j").filter { $0.state == .active }.count == 1)
    }

    @Test func theSweepRecordsAMarkedImageNoRunRecorded() async throws {
        let jobs = try simulationJobs("0 * * * *   j   fake:vm1   retries=0 keep=3")
        var pacing = RunPacing()
        pacing.firstSweepDelay = 3600
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"), pacing: pacing)
        await sim.fake.enqueueCreate(.active, reply: .crashBeforeReply)
        await sim.fake.failNext(.list)  // the run's own look-up fails: only the sweep can find it
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:05:00Z"))
        #expect(try sim.store.images(job: "j").isEmpty)
        await sim.run(until: utc("2026-06-01T01:45:00Z"))
        await sim.stop()
        let run = try #require(try sim.runs("j").first)
        let image = try #require(try sim.store.images(job: "j").first)
        #expect(image.runID == run.id && image.state == .active)
    }

    @Test func theSweepLeavesMarkedImagesOfFiresThisStoreNeverClaimedAlone() async throws {
        var pacing = RunPacing()
        pacing.firstSweepDelay = 60
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"), pacing: pacing)
        let foreign = await sim.fake.seed(
            target: "vm1", name: "snapcron-j-20260101T000000Z",
            description: "created by snapcron (snapcron:job=j scheduled=2026-01-01T00:00:00Z run=7)")
        await sim.start(try simulationJobs("0 * * * *   j   fake:vm1   keep=1"))
        await sim.run(until: utc("2026-06-01T02:05:00Z"))
        await sim.stop()
        #expect(try sim.store.image(id: foreign.id, backend: "fake") == nil)
        #expect(await sim.fake.images.contains { $0.ref == foreign })
    }

    // MARK: 5. Restart past the timeout

    @Test func aRestartPastTheTimeoutTakesTheLastLookAndRecordsALateSuccess() async throws {
        let jobs = try simulationJobs("0 * * * *   j   fake:vm1   timeout=20m")
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"), defaultBehavior: .queuedForever)
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:05:00Z"))
        await sim.stop()
        let image = try #require(await sim.fake.images.first)
        await sim.fake.setBehavior(of: image.ref, to: .active)  // finished while the daemon was down
        sim.clock.manual.advance(to: utc("2026-06-01T02:00:00Z"))
        await sim.start(jobs)
        await sim.stop()
        let run = try #require(try sim.runs("j").first)
        #expect(run.state == .succeeded)
        #expect(try sim.store.image(id: image.ref.id, backend: "fake")?.state == .active)
    }

    // MARK: 6. Reloads compare jobs by meaning

    @Test func aReloadThatOnlyMovesLinesKeepsAFireWaitingOutItsJitter() async throws {
        let text = "0 * * * *   j   fake:vm1   jitter=50m"
        let jobs = try simulationJobs(text)
        let jitter = RunEngine.jitter(for: jobs[0], scheduled: utc("2026-06-01T01:00:00Z"))
        #expect(jitter > 120, "the test needs a fire that waits: \(jitter) s")
        let sim = try Simulation(start: utc("2026-06-01T00:50:00Z"))
        let service = await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:00:30Z"))
        await service.apply(jobs: try simulationJobs("# a comment above\n\n" + text))
        await sim.settle()
        // A real change too (another option): the fire waiting out its jitter stays.
        await service.apply(jobs: try simulationJobs("# a comment above\n\n" + text + " keep=4"))
        await sim.settle()
        await sim.run(until: utc("2026-06-01T01:59:00Z"))
        await sim.stop()
        let runs = try sim.runs("j")
        #expect(runs.map(\.scheduledAt) == [utc("2026-06-01T01:00:00Z")])
        #expect(runs.first?.state == .succeeded)
        #expect(runs.first?.startedAt == utc("2026-06-01T01:00:00Z").addingTimeInterval(jitter))
    }

    // MARK: 8. A resumed claimed run and its deadline

    @Test func aClaimedRunResumedAfterAnOutagePastItsDeadlineIsMissedAndTheCatchUpRuns() async throws {
        let jobs = try simulationJobs("0 * * * *   j   fake:vm1   deadline=30m")
        let sim = try Simulation(start: utc("2026-06-01T05:10:00Z"))
        // A previous process claimed the 00:00 fire and died before its create.
        _ = try sim.store.claimRuns(
            [
                RunClaim(
                    job: "j", scheduledAt: utc("2026-06-01T00:00:00Z"), trigger: .schedule,
                    imageName: "snapcron-j-20260601T000000Z", backend: "fake", target: "vm1")
            ], now: utc("2026-06-01T00:00:00Z"))
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T05:20:00Z"))
        await sim.stop()
        let runs = try sim.runs("j")
        #expect(runs.first?.state == .missed)
        let catchUp = try #require(runs.first { $0.scheduledAt == utc("2026-06-01T05:00:00Z") })
        #expect(catchUp.state == .succeeded && catchUp.trigger == .catchUp)
        #expect(await sim.fake.calls(of: .create).count == 1)
    }

    // MARK: 9. Every backend call is bounded

    @Test func aCreateThatNeverAnswersIsCutAtTheRunsTimeout() async throws {
        let jobs = try simulationJobs("0 * * * *   j   fake:vm1   timeout=10m keep=2")
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"))
        let gate = Gate()  // never opened
        sim.wrap = { ScriptedBackend(base: $0, createHangs: (makesImage: true, gate: gate)) }
        await sim.start(jobs)
        // The loop is never idle while the call hangs: move the clock by hand.
        sim.clock.manual.advance(to: utc("2026-06-01T01:00:00Z"))
        await eventually { gate.waiting == 1 }
        sim.clock.manual.advance(to: utc("2026-06-01T01:10:00Z"))
        await eventually { (try? sim.store.run(id: 1)?.state.isTerminal) == true }
        await sim.settle()
        await sim.stop()
        let run = try #require(try sim.runs("j").first)
        #expect(run.state == .timedOut)
        #expect(run.finishedAt == utc("2026-06-01T01:10:00Z"))
        // The image the hung call made is found by its name, not lost.
        #expect(try sim.store.images(job: "j").first?.runID == run.id)
        gate.open()
    }

    /// Found by the model test: a create that returns (and records its image) just as the run ends at its timeout.
    /// The run's end must still hand the unfinished image to the late-image checks, or it stays `queued` for ever.
    @Test func anImageRecordedJustAsItsRunTimesOutIsStillFollowedToActive() async throws {
        let jobs = try simulationJobs("0 * * * *   j   fake:vm1   timeout=10m keep=2")
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"))
        let gate = Gate()
        // Held after the create returned and its image was recorded, before the engine hears of it.
        await sim.start(jobs, pausePoint: { point in if point == "created" { await gate.pass() } })
        sim.clock.manual.advance(to: utc("2026-06-01T01:00:00Z"))
        await eventually { gate.waiting == 1 }
        #expect(try sim.store.images(job: "j").first?.state == .queued)
        sim.clock.manual.advance(to: utc("2026-06-01T01:10:00Z"))
        await eventually { (try? sim.store.run(id: 1)?.state.isTerminal) == true }
        gate.open()
        await sim.settle()
        await sim.run(until: utc("2026-06-01T01:40:00Z"))
        await sim.stop()
        let run = try #require(try sim.runs("j").first)
        #expect(run.state == .timedOut)
        let image = try #require(try sim.store.images(job: "j").first)
        #expect(image.runID == run.id)
        #expect(image.state == .active)
    }

    // MARK: 10. History limit

    @Test func historyOlderThanTheLimitIsPrunedDailyAndPausedFiresShareARow() async throws {
        var pacing = RunPacing()
        pacing.historyKeep = 2 * 86_400
        let jobs = try simulationJobs("0 * * * *   hourly   fake:vm1   keep=1\n*/10 * * * *   paused   fake:vm2   paused=yes")
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"), pacing: pacing)
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-06T00:30:00Z"))
        await sim.stop()
        let hourly = try sim.runs("hourly")
        #expect(hourly.count <= 3 * 24 + 1, "\(hourly.count) rows")
        #expect(hourly.allSatisfy { $0.scheduledAt >= utc("2026-06-03T00:00:00Z") })
        #expect(try sim.store.images(job: "hourly", includeDeleted: true).count <= 3 * 24 + 1)
        #expect(try sim.runs("paused").count <= 2, "one coalesced row for thousands of paused fires")
    }

    // MARK: Fleet behaviour

    @Test func aCreateThatSaysActiveFinishesItsRunWithoutAPoll() async throws {
        let jobs = try simulationJobs("0 * * * *   j   fake:vm1")
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"))
        sim.wrap = { ScriptedBackend(base: $0, createSaysActive: true) }
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:00:30Z"))
        await sim.stop()
        let run = try #require(try sim.runs("j").first)
        #expect(run.state == .succeeded && run.finishedAt == utc("2026-06-01T01:00:00Z"))
        #expect(await sim.fake.calls(of: .status).isEmpty)
    }

    @Test func imagesBakingOnOneBackendArePolledInOneCallPerPass() async throws {
        var text = ""
        for i in 1...20 { text += "0 * * * *   j\(i)   fake:vm\(i)\n" }
        let jobs = try simulationJobs(text)
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"), defaultBehavior: .succeed(afterPolls: 4))
        let batches = BatchLog()
        sim.wrap = { ScriptedBackend(base: $0, statusBatches: batches) }
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:30:00Z"))
        await sim.stop()
        #expect(try sim.runs().allSatisfy { $0.state == .succeeded })
        let calls = batches.sizes.withLock { $0 }
        #expect(calls.reduce(0, +) == 80, "four polls of each of 20 images")
        #expect(calls.count == 4, "one batched call per pass: \(calls)")
    }

    // MARK: Start-up

    /// A trigger that arrives before the loop has resumed the unfinished runs (the control socket is up first)
    /// waits for it: claimed earlier, its run would be resumed from the store too, and its create sent twice.
    @Test func aTriggerBeforeTheLoopStartsWaitsAndItsRunIsCreatedOnce() async throws {
        let jobs = try simulationJobs("0 3 * * *   db   fake:vm1")
        let clock = ManualClock(now: utc("2026-06-01T00:30:00Z"))
        let store = try SnapcronDatabase.inMemory()
        let fake = FakeSnapshotBackend(defaultBehavior: .active)
        let scheduler = SchedulerService(
            jobs: jobs, store: store, backends: ["fake": fake], clock: clock, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let triggered = Task { try await scheduler.trigger(job: "db") }
        for _ in 0..<1_000 { await Task.yield() }
        #expect(try store.runs(job: "db").isEmpty, "nothing is claimed before the start")
        let loop = Task { try await scheduler.run() }
        defer { loop.cancel() }
        let run = try await triggered.value
        await eventually { await fake.calls(of: .create).count >= 1 }
        for _ in 0..<10_000 { await Task.yield() }
        await scheduler.waitUntilIdle()
        #expect(await fake.calls(of: .create).count == 1)
        let state = try #require(try store.run(id: run.id)).state
        #expect(state == .waiting || state == .succeeded, "\(state)")
    }
}

import CronExpression
import Foundation
import Logging
import SnapshotBackend
import Synchronization

/// A periodic call from the scheduler loop itself (systemd's WATCHDOG=1), so that a stuck loop stops it.
public struct Heartbeat: Sendable {
    public var interval: Duration
    public var beat: @Sendable () -> Void

    public init(interval: Duration, beat: @escaping @Sendable () -> Void) {
        self.interval = interval
        self.beat = beat
    }
}

/// Who wants to know how the loop is doing (systemd's READY=1 and STATUS=); both are called from the loop.
public struct SchedulerObserver: Sendable {
    /// Once, after the store is read, unfinished runs are resumed and the fire queue is built.
    public var started: @Sendable () -> Void
    /// A one-line summary whenever it changes: `3 jobs, 1 running, next web at 2026-11-29T01:00:00Z`.
    public var status: @Sendable (String) -> Void

    public init(started: @escaping @Sendable () -> Void, status: @escaping @Sendable (String) -> Void) {
        self.started = started
        self.status = status
    }
}

/// A summary of what the scheduler is doing, for `status`.
public struct SchedulerSnapshot: Sendable, Hashable {
    public var jobCount: Int
    public var pausedJobs: [String]
    public var runningRuns: [RunningRun]
    public var nextFire: (job: String, at: Date)?
    public var lastLoopAt: Date?
    /// How many times the loop has woken up: an idle daemon should add one only when something is due.
    public var loopIterations: Int

    public struct RunningRun: Sendable, Hashable {
        public var id: Int64
        public var job: String
        public var phase: String
        public var imageID: String?
        public var startedAt: Date?
    }

    public static func == (lhs: SchedulerSnapshot, rhs: SchedulerSnapshot) -> Bool {
        lhs.jobCount == rhs.jobCount && lhs.pausedJobs == rhs.pausedJobs && lhs.runningRuns == rhs.runningRuns
            && lhs.nextFire?.job == rhs.nextFire?.job && lhs.nextFire?.at == rhs.nextFire?.at
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(jobCount)
        hasher.combine(runningRuns)
    }
}

/// What the scheduler publishes for readers that must not wait on it (the control socket): read under a lock.
public struct SchedulerPublication: Sendable {
    /// Bumped by every change of the schedule or of a pause.
    public var revision: Int
    public var jobCount: Int
    public var pausedJobs: Set<String>
}

/// An image of a (job, backend, target) that no job of the schedule uses any more.
public struct OrphanedImage: Sendable, Hashable {
    public var image: ImageRecord
    /// Why retention no longer judges it: the job is gone, or points elsewhere now.
    public var reason: String
}

/// The scheduler: fires jobs on time, drives each run through its backend to a final state, applies retention,
/// and records every step in the store.
///
/// A thin loop around two parts: the ``RunEngine`` decides (no I/O, no clock), the ``RunExecutor`` carries the
/// decisions out against the store and the backends and reports back. The loop takes the time, feeds the engine
/// what happened, hands its actions to the executor, and sleeps until the engine's next deadline.
public actor SchedulerService {
    private var engine: RunEngine
    private let executor: RunExecutor
    private let clock: any SchedulerClock
    private let logger: Logger
    private var pendingEvents: [EngineEvent] = []
    private let publication: Mutex<SchedulerPublication>
    private var sleepTask: Task<Void, any Error>?
    private var wakeRequested = false
    /// Counts pauses and resumes asked here: a store read of the pauses begun before one is stale.
    private var pauseEdits = 0
    private var isSleeping = false
    private var lastLoopAt: Date?
    private var loopIterations = 0
    private var runStarted = false
    private var startedUp = false
    private var startWaiters: [CheckedContinuation<Void, Never>] = []

    public init(
        jobs: [Job], store: any StateStore, backends: [String: any SnapshotBackend], clock: any SchedulerClock,
        limits: ConcurrencyLimits = ConcurrencyLimits(), pacing: RunPacing = RunPacing(), logger: Logger,
        pausePoint: (@Sendable (String) async -> Void)? = nil, hookRunner: (any HookRunner)? = nil,
        notifier: (any RunNotifier)? = nil, metrics: (any SchedulerMetrics)? = nil
    ) {
        engine = RunEngine(jobs: jobs, limits: limits, pacing: pacing)
        executor = RunExecutor(
            store: store, backends: backends, clock: clock, pacing: pacing, logger: logger, pausePoint: pausePoint,
            hookRunner: hookRunner, notifier: notifier, metrics: metrics)
        self.clock = clock
        self.logger = logger
        publication = Mutex(
            SchedulerPublication(
                revision: 1, jobCount: jobs.count, pausedJobs: Set(jobs.lazy.filter(\.options.paused).map(\.name))))
    }

    // MARK: The loop

    /// Runs until the task is cancelled. Resumes unfinished runs and catches up missed fires first.
    public func run(heartbeat: Heartbeat? = nil, observer: SchedulerObserver? = nil) async throws {
        guard !runStarted else { return }
        runStarted = true
        executor.setSink { [weak self] event in await self?.deliver(event) }
        let state = try await executor.loadStartState()
        let startActions = engine.start(now: clock.now(), state: state)
        publish()
        await carryOut(startActions, now: clock.now())
        await executor.resumeInterruptedDeletes()
        startedUp = true
        for waiter in startWaiters { waiter.resume() }
        startWaiters = []
        logger.info(
            "Scheduler started",
            metadata: [
                "event": "daemon.started", "jobs": "\(engine.jobs.count)", "resumed_runs": "\(engine.runs.count)",
            ])
        var lastBeat = ContinuousClock.now
        heartbeat?.beat()
        observer?.started()
        var lastStatus = ""
        while !Task.isCancelled {
            let now = clock.now()
            lastLoopAt = now
            loopIterations += 1
            let events = pendingEvents
            pendingEvents.removeAll(keepingCapacity: true)
            await carryOut(engine.tick(now: now, events: events), now: now)
            if let observer {
                let status = statusLine()
                if status != lastStatus {
                    observer.status(status)
                    lastStatus = status
                }
            }
            if let heartbeat, ContinuousClock.now - lastBeat >= heartbeat.interval {
                heartbeat.beat()
                lastBeat = ContinuousClock.now
            }
            var wake = engine.nextWake(now: now)
            if !pendingEvents.isEmpty { wake = now }
            if let heartbeat {
                let untilBeat = heartbeat.interval - (ContinuousClock.now - lastBeat)
                wake = min(wake, now.addingTimeInterval(max(0, untilBeat.seconds)))
            }
            await sleep(until: wake)
        }
        await drain()
    }

    /// Hands actions to the executor, and feeds what it knows at once (store answers) back to the engine until
    /// nothing more follows.
    private func carryOut(_ actions: [EngineAction], now: Date) async {
        var actions = actions
        while !actions.isEmpty {
            let edits = pauseEdits
            var events = await executor.perform(actions, now: now)
            // A pause set here while the store was read: the read may predate it.
            if pauseEdits != edits {
                events.removeAll { if case .storedPausesRead = $0 { true } else { false } }
            }
            actions = events.isEmpty ? [] : engine.tick(now: now, events: events)
        }
        if engine.pausesChanged {
            engine.pausesChanged = false
            publish()
        }
    }

    /// The executor's mailbox: a backend result, fed to the next tick.
    private func deliver(_ event: EngineEvent) {
        pendingEvents.append(event)
        wakeLoop()
    }

    private func sleep(until deadline: Date) async {
        if wakeRequested {
            wakeRequested = false
            return
        }
        let task = Task { [clock] in try await clock.sleep(until: deadline) }
        sleepTask = task
        isSleeping = true
        // The clock's sleep is its own task: pass our cancellation (shutdown) on to it.
        await withTaskCancellationHandler {
            _ = try? await task.value
        } onCancel: {
            task.cancel()
        }
        isSleeping = false
        sleepTask = nil
        wakeRequested = false
    }

    /// Makes the loop look at its state again now.
    private func wakeLoop() {
        wakeRequested = true
        sleepTask?.cancel()
    }

    /// Gives in-flight backend calls a moment to report, so their results are written before exit. Work still
    /// running after that stays recorded as unfinished and is resumed on the next start.
    private func drain() async {
        // A running pre is stopped; its post (a thaw) must still run, for as long as its timeout allows.
        executor.beginStopping()
        let limit = ContinuousClock.now + .seconds(5)
        let hookLimit = ContinuousClock.now + engine.longestHookTimeout + .seconds(5)
        while (executor.inFlight > 0 && ContinuousClock.now < limit)
            || (executor.hooksInFlight > 0 && ContinuousClock.now < hookLimit)
        {
            // Detached: this task is cancelled (shutdown), and a cancelled sleep returns at once, which spun a core.
            await Task.detached { try? await Task.sleep(for: .milliseconds(20)) }.value
        }
        sleepTask?.cancel()
    }

    /// For tests that drive hanging backend calls on a manual clock: the executor's tasks still running.
    nonisolated var backendWorkInFlight: Int { executor.inFlight }

    /// For tests on a manual clock: returns once no backend call is in flight and the loop is asleep.
    public func waitUntilIdle() async {
        while executor.inFlight > 0 || !isSleeping || wakeRequested || !pendingEvents.isEmpty
            || !clock.hasWaitingSleeper
        {
            await Task.yield()
        }
    }

    private func publish() {
        let paused = engine.pausedJobNames
        let count = engine.jobs.count
        publication.withLock {
            $0.revision += 1
            $0.jobCount = count
            $0.pausedJobs = paused
        }
    }

    // MARK: Requests (control socket, signals)

    /// Replaces the schedule. Jobs that mean the same keep their place; new ones start from now; removed ones stop
    /// firing (their unfinished runs still finish).
    public func apply(jobs newJobs: [Job]) async {
        let now = clock.now()
        // A job that comes back after a reload without it keeps the pause the store remembers, as on a restart.
        var storedPauses: Set<String> = []
        if engine.started, newJobs.contains(where: { engine.job(named: $0.name) == nil }) {
            do {
                storedPauses = try await executor.store.pausedJobNames()
            } catch {
                logger.error("Store read failed; re-added jobs start unpaused", metadata: ["error": "\(error)"])
            }
        }
        let actions = engine.apply(jobs: newJobs, now: now, storedPauses: storedPauses)
        publish()
        logger.info("Schedule applied", metadata: ["event": "schedule.loaded", "jobs": "\(newJobs.count)"])
        await carryOut(actions, now: now)
        wakeLoop()
    }

    /// Returns once ``run(heartbeat:observer:)`` has resumed the unfinished runs. A run claimed before that would
    /// be resumed once more from the store, and its create sent twice.
    private func untilStarted() async {
        guard !startedUp else { return }
        await withCheckedContinuation { startWaiters.append($0) }
    }

    /// Runs `job` now, outside its schedule (once the scheduler has started).
    public func trigger(job name: String) async throws(SchedulerError) -> RunRecord {
        await untilStarted()
        let now = clock.now()
        let claim = try engine.trigger(job: name, now: now)
        let events = await executor.perform([.claim([claim])], now: now)
        await carryOut(engine.tick(now: now, events: events), now: now)
        wakeLoop()
        guard case .claimed(_, let records)? = events.first else {
            throw SchedulerError(.storeFailure, "the store could not record the run of '\(name)'")
        }
        guard let record = records.first ?? nil else {
            throw SchedulerError(
                .conflict,
                "job '\(name)' already has a run for \(RunEngine.iso(claim.scheduledAt)) (fired or triggered this "
                    + "second); try again")
        }
        return record
    }

    /// Pauses or resumes a job; persisted in the store first.
    public func setPaused(job name: String, _ paused: Bool) async throws(SchedulerError) {
        guard engine.job(named: name) != nil else { throw SchedulerError(.notFound, "no job named '\(name)'") }
        pauseEdits += 1
        do {
            _ = try await executor.store.setPaused(name: name, paused, now: clock.now())
        } catch {
            throw SchedulerError(.storeFailure, "could not record the pause of '\(name)': \(error)")
        }
        try engine.setPaused(job: name, paused)
        publication.withLock {
            $0.revision += 1
            if paused { $0.pausedJobs.insert(name) } else { $0.pausedJobs.remove(name) }
        }
    }

    /// Applies retention to `job` now, as after a successful run, and returns the plan being carried out (once the
    /// scheduler has started: interrupted deletes are resumed first).
    public func pruneNow(job name: String) async throws(SchedulerError) -> RetentionPlan {
        await untilStarted()
        let plan = try await retentionPlan(job: name)
        var actions: [EngineAction] = []
        engine.requestRetention(job: name, out: &actions)
        await carryOut(actions, now: clock.now())
        wakeLoop()
        return plan
    }

    /// The plan retention would carry out for `job` now: the data behind `prune --dry-run`.
    public func retentionPlan(job name: String) async throws(SchedulerError) -> RetentionPlan {
        guard let job = engine.job(named: name) else { throw SchedulerError(.notFound, "no job named '\(name)'") }
        do {
            return try await executor.retentionPlan(for: job, now: clock.now()).0
        } catch {
            throw SchedulerError(.storeFailure, "could not read the images of '\(name)': \(error)")
        }
    }

    /// Images of a (job, backend, target) that no job of the schedule uses: retention leaves them alone, and only
    /// an explicit ``pruneOrphaned(dryRun:)`` deletes them.
    public func orphanedImages() async throws(SchedulerError) -> [OrphanedImage] {
        do {
            var result: [OrphanedImage] = []
            for item in try await executor.store.imageTargets() {
                let reason: String
                if let job = engine.job(named: item.job) {
                    guard job.backend != item.backend || job.target != item.target else { continue }
                    reason = "job \(item.job) now images \(job.qualifiedTarget)"
                } else {
                    reason = "no job \(item.job) in the schedule"
                }
                for image in try await executor.store.images(job: item.job, includeDeleted: false)
                where image.backend == item.backend && image.target == item.target {
                    result.append(OrphanedImage(image: image, reason: reason))
                }
            }
            return result
        } catch {
            throw SchedulerError(.storeFailure, "could not read the images: \(error)")
        }
    }

    /// Deletes orphaned images, but never a pinned one, one not active, one dated in the future, or the newest
    /// active one of each (job, backend, target). Returns the images deleted (or, with `dryRun`, that would be).
    public func pruneOrphaned(dryRun: Bool) async throws(SchedulerError) -> [OrphanedImage] {
        if !dryRun { await untilStarted() }
        let orphans = try await orphanedImages()
        // As retention: an image dated after now (made under a wrong clock) is kept and does not count as the
        // newest, or it would stand in for the real newest image and let it go.
        let now = clock.now()
        let latestTrusted = now.addingTimeInterval(RetentionPlanner.futureTolerance)
        var newest: [String: ImageRecord] = [:]
        for orphan in orphans where orphan.image.state == .active && orphan.image.createdAt <= latestTrusted {
            let key = "\(orphan.image.job)\u{0}\(orphan.image.backend)\u{0}\(orphan.image.target)"
            if let current = newest[key], (current.createdAt, current.id) >= (orphan.image.createdAt, orphan.image.id) {
                continue
            }
            newest[key] = orphan.image
        }
        let keptIDs = Set(newest.values.map(\.key))
        let doomed = orphans.filter {
            $0.image.state == .active && !$0.image.pinned && !keptIDs.contains($0.image.key)
                && $0.image.createdAt <= latestTrusted
        }
        guard !dryRun else { return doomed }
        var deleted: [OrphanedImage] = []
        for orphan in doomed {
            if executor.stepsBack(since: now, stopping: "Orphan prune", job: orphan.image.job) { break }
            await executor.delete(orphan.image, reason: "orphaned (\(orphan.reason)); deleted by an explicit prune")
            deleted.append(orphan)
        }
        return deleted
    }

    /// What the scheduler is doing now.
    public func snapshot() -> SchedulerSnapshot {
        SchedulerSnapshot(
            jobCount: engine.jobs.count, pausedJobs: pausedJobs.sorted(),
            runningRuns: engine.runs.values.sorted { $0.id < $1.id }.map {
                SchedulerSnapshot.RunningRun(
                    id: $0.id, job: $0.job, phase: $0.phase.name, imageID: $0.imageID, startedAt: $0.startedAt)
            },
            nextFire: engine.nextFire, lastLoopAt: lastLoopAt, loopIterations: loopIterations)
    }

    /// `3 jobs, 1 running, next web at 2026-11-29T01:00:00Z, last failure: db at ...`.
    public func statusLine() -> String {
        let count = engine.jobs.count
        var parts = ["\(count) job\(count == 1 ? "" : "s")", "\(engine.runs.count) running"]
        if let problem = executor.storeProblem {
            parts.insert("store: reconnecting (\(problem.prefix(120)))", at: 0)
        }
        if let next = engine.nextFire { parts.append("next \(next.job) at \(RunEngine.iso(next.at))") }
        if let failure = engine.lastFailure { parts.append("last failure: \(failure)") }
        return parts.joined(separator: ", ")
    }

    /// Why store writes fail now (PostgreSQL restarting, say), until one succeeds again; read without waiting for
    /// the actor.
    public nonisolated var storeProblem: String? { executor.storeProblem }

    /// The names of the paused jobs, read without waiting for the actor.
    public nonisolated var pausedJobs: Set<String> { publication.withLock { $0.pausedJobs } }

    /// The published schedule summary (revision, job count, paused jobs), read without waiting for the actor.
    public nonisolated var published: SchedulerPublication { publication.withLock { $0 } }

    /// The jobs as loaded, by name.
    public func currentJobs() -> [Job] { engine.jobs.values.map(\.job).sorted { $0.name < $1.name } }

    /// The next fire of each job (nominal instant), for `jobs` and `next`.
    public func nextFires() -> [String: Date] { engine.nextFires(now: clock.now()) }

    // MARK: Names

    /// `snapcron-<job>-<UTC stamp>`, e.g. `snapcron-web-20261129T010000Z`.
    public static func imageName(job: String, scheduled: Date) -> String {
        RunEngine.imageName(job: job, scheduled: scheduled)
    }

    /// Carries the marker that lets backends (and people) tell snapcron's images from others.
    public static func imageDescription(job: String, scheduled: Date, run: Int64) -> String {
        RunEngine.imageDescription(job: job, scheduled: scheduled, run: run)
    }

}

import Foundation
import Logging
import SnapshotBackend
import Synchronization

/// Carries out the run engine's actions against the store and the backends, and reports what came of them.
///
/// Store writes of an action happen before anything acts on them. Backend calls run in tasks of their own, each
/// bounded in time (a run's calls by its timeout, other calls by `backendCallTimeout`), and report back through
/// `deliver` as ``EngineEvent``s. Nothing here decides: where a choice is needed, the engine made it.
final class RunExecutor: Sendable {
    let store: any StateStore
    let backends: [String: any SnapshotBackend]
    let clock: any SchedulerClock
    let pacing: RunPacing
    let logger: Logger
    let pausePoint: (@Sendable (String) async -> Void)?
    let hookRunner: (any HookRunner)?
    let notifier: (any RunNotifier)?
    let metrics: (any SchedulerMetrics)?
    private let deliver: Mutex<(@Sendable (EngineEvent) async -> Void)?> = Mutex(nil)
    /// Create calls in flight, by run: a run ended at its timeout cuts its call (see ``cutCreate(of:)``).
    private let createCalls = Mutex<[Int64: CreateCall]>([:])
    private let tasksInFlight = Atomic<Int>(0)
    /// Hook commands running, by a number of their own; a `pre` is stopped when the daemon stops.
    private let hookTasks = Mutex<(next: UInt64, running: [UInt64: (phase: HookPhase, task: Task<HookResult, Never>)])>(
        (0, [:]))
    private let stopping = Atomic<Bool>(false)
    /// Runs whose `pre` failed under `on_pre_failure = continue`: their record says the image is crash-consistent.
    private let crashConsistent = Mutex<[Int64: String]>([:])
    /// Runs creating between their `pre` and `post` (a frozen guest, say): a stopping daemon cuts their create so
    /// that `post` runs before it exits.
    private let createsAfterPre = Mutex<Set<Int64>>([])
    /// Counts the times this daemon's lease on its runs lapsed (cluster): a create begun before a lapse reports to
    /// nobody, its run being another daemon's (or resumed afresh by this one) since.
    private let leaseGeneration = Atomic<Int>(0)
    /// The last store write's failure, until a claim or a lease renewal succeeds again (a store restarting).
    private let storeTrouble = Mutex<String?>(nil)
    /// Cluster: until when this daemon's lease surely holds (by this machine's monotonic clock, from the start of
    /// the last renewal that succeeded). No create is sent to a backend after it: another node may be resuming
    /// the run, and a backend call carries no fencing token.
    private let leaseHeldUntil = Mutex<ContinuousClock.Instant?>(nil)
    /// Runs whose backend create call is still under way in this process (even cut, until the call returns).
    private let createsUnderWay = Mutex<Set<Int64>>([])
    /// Runs taken over (back) while an earlier create of theirs was still under way here: resumed once it ended.
    private let heldBackTakeovers = Mutex<[Int64: RunRecord]>([:])

    /// Why the store fails now, for the status line; nil while it answers.
    var storeProblem: String? { storeTrouble.withLock { $0 } }

    init(
        store: any StateStore, backends: [String: any SnapshotBackend], clock: any SchedulerClock, pacing: RunPacing,
        logger: Logger, pausePoint: (@Sendable (String) async -> Void)?, hookRunner: (any HookRunner)? = nil,
        notifier: (any RunNotifier)? = nil, metrics: (any SchedulerMetrics)? = nil
    ) {
        self.metrics = metrics
        self.hookRunner = hookRunner
        self.notifier = notifier
        self.store = store
        self.backends = backends
        self.clock = clock
        self.pacing = pacing
        self.logger = logger
        self.pausePoint = pausePoint
    }

    /// Where backend results go (the scheduler's mailbox); set once before the first action.
    func setSink(_ sink: @escaping @Sendable (EngineEvent) async -> Void) { deliver.withLock { $0 = sink } }

    /// Backend work still running; the scheduler is idle only when this is 0.
    var inFlight: Int { tasksInFlight.load(ordering: .relaxed) }

    // MARK: Start-up

    func loadStartState() async throws -> EngineStartState {
        if let lease = store.runLease { leaseHeldUntil.withLock { $0 = .now + lease } }  // registered at open
        return EngineStartState(
            jobStates: try await store.allJobStates(), unfinishedRuns: try await store.unfinishedRuns(),
            jobsWithImages: try await store.jobsWithImages(),
            hasLateImages: !(try await store.imagesLeftUnfinished(limit: 1)).isEmpty,
            latestRecorded: try await store.latestRecordedInstant(), installationID: try await store.installationID(),
            runLease: store.runLease.map { Double($0.components.seconds) })
    }

    /// Finishes deletes a previous process left half done (the image is `deleting` in the store).
    func resumeInterruptedDeletes() async {
        let images: [ImageRecord]
        do {
            images = try await store.imagesBeingDeleted()
        } catch {
            logger.error("Store read failed", metadata: ["error": "\(error)"])
            return
        }
        guard !images.isEmpty else { return }
        spawn {
            for image in images {
                await self.completeDelete(image, reason: image.deleteReason ?? "retention (resumed after a restart)")
            }
            return nil
        }
    }

    // MARK: Actions

    /// Carries out `actions` in order; returns the events that are known at once (store answers).
    func perform(_ actions: [EngineAction], now: Date) async -> [EngineEvent] {
        var events: [EngineEvent] = []
        for action in actions {
            switch action {
            case .claim(let claims, let retried):
                events.append(await claim(claims, now: now, retried: retried))
            case .recordMissed(let job, let scheduled, let reason, let alert):
                let record = await recordWithoutRun(
                    job: job, scheduled: scheduled, state: .missed, reason: reason, level: .warning
                ) {
                    try await self.store.recordMissed(job: job, scheduledAt: scheduled, now: now, reason: reason)
                }
                if let record, let alert { report(missed: record, reason: reason, to: alert, now: now) }
            case .recordSkipped(let job, let scheduled, let trigger, let reason):
                await recordWithoutRun(job: job, scheduled: scheduled, state: .skipped, reason: reason, level: .notice) {
                    try await self.store.recordSkipped(
                        job: job, scheduledAt: scheduled, trigger: trigger, now: now, reason: reason)
                }
            case .beginCreates(let orders):
                events.append(contentsOf: await beginCreates(orders, now: now))
            case .recordRetry(let run, let job, let error, let attempt, let at):
                do {
                    _ = try await store.recordRetryableFailure(runID: run, error: error, nextAttemptAt: at)
                } catch {
                    storeWriteFailed(error, metadata: ["run": "\(run)", "error": "\(error)"])
                }
                logger.warning(
                    "Create failed, will retry",
                    metadata: [
                        "job": "\(job)", "run": "\(run)", "error": "\(error)", "attempt": "\(attempt)",
                        "retry_in_s": "\(Int(at.timeIntervalSince(now)))",
                    ])
            case .poll(let backend, let orders):
                poll(backend: backend, orders)
            case .recordPoll(let run, let state, let next):
                do {
                    _ = try await store.updatePoll(runID: run, imageState: state, sizeBytes: nil, nextPollAt: next, now: now)
                } catch {
                    storeWriteFailed(error, metadata: ["run": "\(run)", "error": "\(error)"])
                }
            case .finish(let order):
                cutCreate(of: order.run)
                if order.looksUpImage || order.asksSize {
                    spawn { await self.finish(order) }
                } else {
                    events.append(await finish(order))
                }
            case .retain(let order):
                spawn {
                    await self.retain(order.job)
                    return .retentionFinished(job: order.job.name)
                }
            case .checkLateImages:
                spawn { await self.checkLateImages() }
            case .sweep(let targets):
                spawn { await self.sweep(targets: targets) }
            case .pruneHistory(let cutoff):
                do {
                    let pruned = try await store.pruneHistory(olderThan: cutoff)
                    if pruned.runs + pruned.images > 0 {
                        logger.info(
                            "History pruned",
                            metadata: [
                                "event": "history.pruned", "runs": "\(pruned.runs)", "images": "\(pruned.images)",
                                "before": "\(RunEngine.iso(cutoff))",
                            ])
                    }
                } catch {
                    logger.error("History prune failed", metadata: ["error": "\(error)"])
                }
            case .clampLastScheduled(let bound):
                do {
                    let moved = try await store.clampLastScheduled(notAfter: bound)
                    if !moved.isEmpty {
                        logger.warning(
                            "Last fires after now moved back to now",
                            metadata: ["event": "clock.clamped", "jobs": "\(moved.count)"])
                    }
                } catch {
                    storeWriteFailed(error, metadata: ["error": "\(error)"])
                }
            case .storePause(let job, let paused):
                do {
                    _ = try await store.setPaused(name: job, paused, now: now)
                } catch {
                    storeWriteFailed(error, metadata: ["job": "\(job)", "error": "\(error)"])
                }
            case .note(let level, let message, let fields):
                logger.log(level: level.logLevel, "\(message)", metadata: fields.mapValues { .string($0) })
            case .renewRunLease:
                events.append(contentsOf: await renewRunLease())
            }
        }
        return events
    }

    // MARK: Fires

    private func claim(_ claims: [RunClaim], now: Date, retried: Bool = false) async -> EngineEvent {
        do {
            var records = try await store.claimRuns(claims, now: now)
            // A retried claim found already made may be this daemon's own earlier claim, committed though its
            // answer was lost: it is followed from here, or nobody would (its owner is alive).
            if retried {
                for index in claims.indices where records[index] == nil {
                    records[index] = try await store.ownUnfinishedRun(
                        job: claims[index].job, scheduledAt: claims[index].scheduledAt)
                }
            }
            storeTrouble.withLock { $0 = nil }
            for (claim, record) in zip(claims, records) {
                var metadata: Logger.Metadata = ["job": "\(claim.job)", "scheduled": "\(RunEngine.iso(claim.scheduledAt))"]
                guard let record else {
                    logger.info("Fire already claimed", metadata: metadata)
                    continue
                }
                metadata["event"] = "run.fired"
                metadata["run"] = "\(record.id)"
                metadata["target"] = "\(claim.backend):\(claim.target)"
                metadata["state"] = "claimed"
                metadata["trigger"] = "\(claim.trigger.rawValue)"
                logger.info("Run fired", metadata: metadata)
            }
            return .claimed(claims, records)
        } catch {
            storeWriteFailed(error, metadata: ["fires": "\(claims.count)", "error": "\(error)"])
            return .claimFailed(claims, error: "\(error)")
        }
    }

    @discardableResult
    private func recordWithoutRun(
        job: String, scheduled: Date, state: RunState, reason: String, level: Logger.Level,
        _ write: () async throws -> RunRecord?
    ) async -> RunRecord? {
        do {
            guard let record = try await write() else { return nil }
            metrics?.runEnded(job: job, state: state, startedAt: nil, endedAt: clock.now())
            logger.log(
                level: level, "Run \(state.rawValue)",
                metadata: [
                    "event": "run.\(state.rawValue)", "job": "\(job)", "scheduled": "\(RunEngine.iso(scheduled))",
                    "state": "\(state.rawValue)", "error": "\(reason)",
                ])
            return record
        } catch {
            storeWriteFailed(error, metadata: ["job": "\(job)", "error": "\(error)"])
            return nil
        }
    }

    /// A fire missed past its deadline is a failure to whoever watches the job: its `on_failure`, `notify_url` and
    /// `ping_url` hear of it like of a failed run (state `missed`, no image).
    private func report(missed record: RunRecord, reason: String, to alert: MissedFireAlert, now: Date) {
        let hooks = alert.hooks
        if let notifier, hooks.notifyURL != nil || hooks.pingURL != nil {
            let missed = RunNotification(
                event: "run.finished", job: record.job, run: record.id, state: RunState.missed.rawValue,
                backend: alert.backend, target: alert.target, imageName: nil, error: reason,
                scheduledAt: record.scheduledAt, finishedAt: now)
            spawn {
                await notifier.deliver(missed, to: hooks)
                return nil
            }
        }
        if let command = hooks.onFailure, hookRunner != nil {
            let values = [
                "job": record.job, "target": alert.target, "name": "", "run": String(record.id),
                "state": RunState.missed.rawValue, "error": reason,
            ]
            spawn {
                _ = await self.runHook(.failure, command, of: hooks, values: values, run: record.id)
                return nil
            }
        }
    }

    // MARK: Creates

    private func beginCreates(_ orders: [CreateOrder], now: Date) async -> [EngineEvent] {
        let records: [RunRecord?]
        do {
            records = try await store.markCreating(runIDs: orders.map(\.run), now: now)
        } catch {
            storeWriteFailed(error, metadata: ["runs": "\(orders.count)", "error": "\(error)"])
            return [.createsNotStarted(orders.map(\.run), error: "\(error)")]
        }
        var events: [EngineEvent] = []
        for (order, record) in zip(orders, records) {
            guard record != nil else {
                events.append(
                    .createFinished(
                        order.run,
                        .failed(error: "run \(order.run) could not start: its row is gone or moved on", transient: false)))
                continue
            }
            guard let backend = backends[order.backend] else {
                events.append(
                    .createFinished(
                        order.run, .failed(error: "backend '\(order.backend)' is not configured", transient: false)))
                continue
            }
            spawn {
                await self.pausePoint?("create")
                let outcome = await self.create(order, on: backend)
                await self.pausePoint?("created")
                return .createFinished(order.run, outcome)
            }
        }
        return events
    }

    /// The create between its hooks: `post` runs whenever `pre` has started (and after every create when there is
    /// no `pre`), whatever happened in between.
    private func create(_ order: CreateOrder, on backend: any SnapshotBackend) async -> CreateOutcome {
        if order.firstAttempt, let hooks = order.hooks, hooks.pingURL != nil, let notifier {
            let started = RunNotification(
                event: "run.started", job: order.job, run: order.run, state: RunState.creating.rawValue,
                backend: order.backend, target: order.target, imageName: order.imageName,
                scheduledAt: order.scheduledAt, startedAt: clock.now())
            spawn {
                await notifier.deliver(started, to: hooks)
                return nil
            }
        }
        guard let hooks = order.hooks, hookRunner != nil, hooks.pre != nil || hooks.post != nil else {
            return await createCall(order, on: backend)
        }
        let values = [
            "job": order.job, "target": order.target, "name": order.imageName, "run": String(order.run),
        ]
        var outcome: CreateOutcome?
        if let pre = hooks.pre {
            let result = await runHook(.pre, pre, of: hooks, values: values, run: order.run)
            if result.succeeded {
                crashConsistent.withLock { _ = $0.removeValue(forKey: order.run) }  // an earlier attempt's note
            } else {
                if stopping.load(ordering: .relaxed) {
                    // Resumed at the next start (the run stays creating), with its pre again.
                    outcome = .failed(error: "stopped during the pre hook", transient: true)
                } else if hooks.onPreFailure == .skip {
                    outcome = .failed(
                        error: "pre hook of '\(hooks.name)' failed (\(result.summary)): no image taken (on_pre_failure=skip)",
                        transient: false)
                } else {
                    let note = "pre hook of '\(hooks.name)' failed (\(result.summary)): the image is crash-consistent"
                    crashConsistent.withLock { $0[order.run] = note }
                    logger.warning(
                        "Pre hook failed; taking a crash-consistent image (on_pre_failure=continue)",
                        metadata: ["job": "\(order.job)", "run": "\(order.run)", "hook.set": "\(hooks.name)"])
                }
            }
        }
        if outcome == nil {
            createsAfterPre.withLock { _ = $0.insert(order.run) }
            if stopping.load(ordering: .relaxed) {
                outcome = .failed(error: "stopped before the create", transient: true)
            } else {
                outcome = await createCall(order, on: backend)
            }
            createsAfterPre.withLock { _ = $0.remove(order.run) }
        }
        if let post = hooks.post {
            var postValues = values
            if case .recorded(let image, _) = outcome { postValues["image"] = image }
            _ = await runHook(.post, post, of: hooks, values: postValues, run: order.run)
        }
        return outcome!
    }

    /// Runs one hook command of `run` and logs how it ended (journal field `SNAPCRON_HOOK`).
    private func runHook(
        _ phase: HookPhase, _ argv: [String], of hooks: HookSet, values: [String: String], run: Int64
    ) async -> HookResult {
        guard let hookRunner else { return HookResult(exitStatus: 0) }
        var values = values
        values["phase"] = phase.rawValue
        var environment = ["SNAPCRON_PHASE": phase.rawValue]
        for (key, value) in values where key != "phase" { environment["SNAPCRON_\(key == "name" ? "IMAGE_NAME" : key.uppercased())"] = value }
        let command = HookSet.expand(argv, values)
        let timeout = hooks.timeout
        let task = Task { await hookRunner.run(command, environment: environment, timeout: timeout) }
        let id = hookTasks.withLock { hooks in
            hooks.next += 1
            hooks.running[hooks.next] = (phase, task)
            return hooks.next
        }
        // A pre that starts while the daemon stops is stopped at once (post still runs).
        if phase == .pre, stopping.load(ordering: .relaxed) { task.cancel() }
        let result = await task.value
        hookTasks.withLock { _ = $0.running.removeValue(forKey: id) }
        var metadata: Logger.Metadata = [
            "event": "hook.finished", "hook": "\(phase.rawValue)", "hook.set": "\(hooks.name)",
            "job": "\(values["job"] ?? "")", "run": "\(run)", "hook.result": "\(result.summary)",
            "duration_ms": "\(Int(result.duration.seconds * 1000))",
        ]
        if let status = result.exitStatus { metadata["exit_status"] = "\(status)" }
        if !result.stderrTail.isEmpty { metadata["stderr"] = "\(result.stderrTail)" }
        if result.succeeded {
            logger.info("Hook \(phase.rawValue) finished", metadata: metadata)
        } else {
            logger.warning("Hook \(phase.rawValue) failed", metadata: metadata)
        }
        do {
            try await store.recordHookResult(
                HookRecord(
                    runID: run, phase: phase, hookSet: hooks.name, result: result.summary, exitStatus: result.exitStatus,
                    durationMs: Int(result.duration.seconds * 1000), finishedAt: clock.now()))
        } catch {
            storeWriteFailed(error, metadata: ["run": "\(run)", "error": "\(error)"])
        }
        return result
    }

    /// The daemon is stopping: a running `pre` is stopped, and a create between `pre` and `post` is cut (the run
    /// stays unfinished and is resumed at the next start, by name), so that every `post` runs before the exit.
    func beginStopping() {
        stopping.store(true, ordering: .relaxed)
        let pres = hookTasks.withLock { $0.running.values.filter { $0.phase == .pre }.map(\.task) }
        for task in pres { task.cancel() }
        for run in createsAfterPre.withLock({ $0 }) { cutCreate(of: run) }
    }

    /// Hook commands still running (the daemon waits for them before it exits).
    var hooksInFlight: Int { hookTasks.withLock { $0.running.count } }

    private func createCall(_ order: CreateOrder, on backend: any SnapshotBackend) async -> CreateOutcome {
        let generation = leaseGeneration.load(ordering: .relaxed)
        if store.runLease != nil, let until = leaseHeldUntil.withLock({ $0 }), ContinuousClock.now >= until {
            return .failed(error: "this node's lease on its runs may have lapsed; not creating", transient: true)
        }
        // Bounded by the run's timeout without a timer of its own: the engine ends the run there, and ending it
        // cuts this call (``cutCreate(of:)``), also when the backend ignores its cancellation.
        let once = OnceResult<CreatedImage>()
        createsUnderWay.withLock { _ = $0.insert(order.run) }
        let result = await withCheckedContinuation { continuation in
            once.set(continuation)
            let work = Task {
                defer { self.createsUnderWay.withLock { _ = $0.remove(order.run) } }
                do {
                    once.resume(
                        .success(
                            try await backend.createImage(
                                target: order.target, name: order.imageName, description: order.description,
                                nameIsFresh: order.nameIsFresh, logger: self.logger)))
                } catch {
                    once.resume(.failure(error))
                }
            }
            createCalls.withLock { $0[order.run] = CreateCall(work: work, once: once) }
        }
        createCalls.withLock { _ = $0.removeValue(forKey: order.run) }
        if leaseGeneration.load(ordering: .relaxed) != generation {
            // The lease lapsed meanwhile: the run is another node's, or resumed afresh here; whoever follows it
            // finds this image by name. Nothing is written for it from this call.
            logger.notice(
                "Create returned after the lease on its run lapsed; left to the run's new owner",
                metadata: ["event": "cluster.create_orphaned", "job": "\(order.job)", "run": "\(order.run)"])
            return .failed(error: "the lease on this run lapsed during its create", transient: true)
        }
        switch result {
        case .success(let created):
            let now = clock.now()
            do {
                _ = try await store.markWaiting(
                    runID: order.run, imageID: created.ref.id, description: order.description, now: now,
                    nextPollAt: now.addingTimeInterval(pacing.firstPollInterval))
                metrics?.storeChanged()
                return .recorded(imageID: created.ref.id, state: created.state)
            } catch {
                // The run may have ended meanwhile (its timeout): the image is still recorded against it.
                if await adopt(created.ref.id, runID: order.run, job: order.job, description: order.description,
                    state: created.state)
                {
                    return .failed(error: "the run ended before its create returned", transient: false)
                }
                storeWriteFailed(error, metadata: ["run": "\(order.run)", "image": "\(created.ref.id)", "error": "\(error)"])
                return .unrecorded(imageID: created.ref.id, error: "\(error)")
            }
        case .failure(let error):
            return .failed(error: "\(error)", transient: (error as? SnapshotBackendError)?.isTransient ?? false)
        }
    }

    /// Records `imageID` against a run that already ended; true when it is recorded now.
    private func adopt(
        _ imageID: String, runID: Int64, job: String, description: String?, state: ImageState?
    ) async -> Bool {
        do {
            guard let run = try await store.run(id: runID), run.state.isTerminal, run.imageID == nil else { return false }
            let now = clock.now()
            _ = try await store.adoptImage(runID: runID, imageID: imageID, description: description, now: now)
            let stored = state.map(StoredImageState.init(imageState:)) ?? .queued
            if stored != .queued, let backend = run.backend {
                _ = try await store.updateImageState(id: imageID, backend: backend, state: stored, sizeBytes: nil, now: now)
            }
            logger.notice(
                "Image of an ended run recorded",
                metadata: [
                    "event": "image.adopted", "job": "\(job)", "run": "\(runID)", "image": "\(imageID)",
                    "state": "\(stored.rawValue)",
                ])
            metrics?.storeChanged()
            await send(.imageAdopted(job: job, state: stored))
            return true
        } catch {
            storeWriteFailed(error, metadata: ["run": "\(runID)", "image": "\(imageID)", "error": "\(error)"])
            return false
        }
    }

    /// Cuts the create call of a run that ended (its timeout passed): cancelled, and answered at once.
    private func cutCreate(of run: Int64) {
        guard let call = createCalls.withLock({ $0.removeValue(forKey: run) }) else { return }
        call.work.cancel()
        call.once.resume(.failure(DeadlineExceeded(operation: "create of run \(run)")))
    }

    // MARK: Polls

    private func poll(backend name: String, _ orders: [PollOrder]) {
        spawn {
            guard let backend = self.backends[name] else {
                var outcomes: [Int64: PollOutcome] = [:]
                for order in orders {
                    outcomes[order.run] = .failed(error: "backend '\(name)' is not configured", transient: false)
                }
                return .pollFinished(backend: name, outcomes)
            }
            await self.pausePoint?("poll")
            for order in orders where order.resumesAfterRestart {
                await backend.resumeAfterRestart(ImageRef(id: order.imageID), target: order.target, logger: self.logger)
            }
            let refs = orders.map { ImageRef(id: $0.imageID) }
            let deadline = self.clock.now().addingTimeInterval(self.pacing.backendCallTimeout)
            let answer = await self.withDeadline(deadline, operation: "status of \(refs.count) images") {
                await backend.statuses(of: refs, logger: self.logger)
            }
            var outcomes: [Int64: PollOutcome] = [:]
            for order in orders {
                switch answer {
                case .failure(let error):
                    outcomes[order.run] = .failed(error: "\(error)", transient: true)
                case .success(let results):
                    switch results[ImageRef(id: order.imageID)] {
                    case .success(let state)?:
                        let size =
                            state == .active
                            ? await self.size(of: order.imageID, target: order.target, on: backend) : nil
                        outcomes[order.run] = .state(state, sizeBytes: size)
                    case .failure(let error)?:
                        outcomes[order.run] = .failed(error: "\(error)", transient: error.isTransient)
                    case nil:
                        break  // not answered this pass: asked again
                    }
                }
            }
            return .pollFinished(backend: name, outcomes)
        }
    }

    /// The size of a newly active image; nil when the backend cannot tell, which never fails the run.
    private func size(of imageID: String, target: String, on backend: any SnapshotBackend) async -> Int64? {
        let deadline = clock.now().addingTimeInterval(pacing.backendCallTimeout)
        let result = await withDeadline(deadline, operation: "info of \(imageID)") {
            try await backend.info(of: ImageRef(id: imageID), target: target, logger: self.logger)?.sizeBytes
        }
        switch result {
        case .success(let size): return size
        case .failure(let error):
            logger.notice("Cannot read the size of a new image", metadata: ["image": "\(imageID)", "error": "\(error)"])
            return nil
        }
    }

    // MARK: Finishing runs

    private func finish(_ order: FinishOrder) async -> EngineEvent {
        var order = order
        var found: ImageInfo?
        if order.looksUpImage, let backend = backends[order.backend] {
            found = await lookUp(order, on: backend)
        }
        if order.asksSize, order.sizeBytes == nil, let image = order.imageID, let backend = backends[order.backend] {
            order.sizeBytes = await size(of: image, target: order.target, on: backend)
        }
        let now = clock.now()
        if let note = crashConsistent.withLock({ $0.removeValue(forKey: order.run) }), order.error == nil {
            order.error = note
        }
        // The store's row decides whether the run has an image: a create that returned just as the run ended
        // may have recorded one the engine never heard of.
        var hasImage = order.imageID != nil
        do {
            let record = try await store.finishRun(
                runID: order.run, state: order.state, error: order.error, sizeBytes: order.sizeBytes, now: now)
            hasImage = record.imageID != nil
            metrics?.runEnded(job: order.job, state: order.state, startedAt: order.startedAt, endedAt: now)
        } catch {
            storeWriteFailed(error, metadata: ["run": "\(order.run)", "error": "\(error)"])
        }
        log(order, now: now)
        if let hooks = order.hooks, hooks.notifyURL != nil || hooks.pingURL != nil, let notifier,
            [.succeeded, .failed, .timedOut].contains(order.state)
        {
            let finished = RunNotification(
                event: "run.finished", job: order.job, run: order.run, state: order.state.rawValue,
                backend: order.backend, target: order.target, imageName: order.imageName,
                image: order.imageID ?? found?.id.id, error: order.error, scheduledAt: order.scheduledAt,
                startedAt: order.startedAt, finishedAt: now)
            spawn {
                await notifier.deliver(finished, to: hooks)
                return nil
            }
        }
        if let hooks = order.hooks, hookRunner != nil {
            let command = order.state == .succeeded ? hooks.onSuccess : [.failed, .timedOut].contains(order.state) ? hooks.onFailure : nil
            if let command {
                var values = [
                    "job": order.job, "target": order.target, "name": order.imageName, "run": String(order.run),
                    "state": order.state.rawValue,
                ]
                if let image = order.imageID ?? found?.id.id { values["image"] = image }
                if let error = order.error { values["error"] = error }
                let phase: HookPhase = order.state == .succeeded ? .success : .failure
                let (hookValues, run) = (values, order.run)
                spawn {
                    _ = await self.runHook(phase, command, of: hooks, values: hookValues, run: run)
                    return nil
                }
            }
        }
        if let found {
            _ = await adopt(
                found.id.id, runID: order.run, job: order.job, description: found.description, state: found.state)
        }
        return .runRecorded(job: order.job, state: order.state, hasImage: hasImage)
    }

    /// A run that may have made an image without recording it looks the image up by its name.
    private func lookUp(_ order: FinishOrder, on backend: any SnapshotBackend) async -> ImageInfo? {
        let deadline = clock.now().addingTimeInterval(pacing.backendCallTimeout)
        let result = await withDeadline(deadline, operation: "list of \(order.target)") {
            try await backend.list(target: order.target, logger: self.logger)
        }
        switch result {
        case .success(let images):
            return images.first { $0.name == order.imageName }
        case .failure(let error):
            logger.warning(
                "Cannot look up the image of an ending run; the next sweep looks again",
                metadata: ["job": "\(order.job)", "run": "\(order.run)", "error": "\(error)"])
            return nil
        }
    }

    private func log(_ order: FinishOrder, now: Date) {
        var metadata: Logger.Metadata = [
            "event": "run.\(order.state.rawValue)", "job": "\(order.job)", "run": "\(order.run)",
            "target": "\(order.backend):\(order.target)", "state": "\(order.state.rawValue)",
            "scheduled": "\(RunEngine.iso(order.scheduledAt))",
        ]
        if let image = order.imageID { metadata["image"] = "\(image)" }
        if let size = order.sizeBytes { metadata["size_bytes"] = "\(size)" }
        if let started = order.startedAt { metadata["duration_ms"] = "\(Int(now.timeIntervalSince(started) * 1000))" }
        if let error = order.error { metadata["error"] = "\(error)" }
        switch order.state {
        case .succeeded: logger.info("Run succeeded", metadata: metadata)
        case .timedOut: logger.critical("Run timed out", metadata: metadata)
        case .missed: logger.warning("Run missed", metadata: metadata)
        default: logger.error("Run failed", metadata: metadata)
        }
    }

    // MARK: Retention

    /// The plan retention would carry out for `job` now: its images of its current backend and target only.
    func retentionPlan(for job: Job, now: Date) async throws -> (RetentionPlan, [ImageRecord]) {
        let images = try await store.images(job: job.name, includeDeleted: false).filter {
            $0.backend == job.backend && $0.target == job.target && $0.state != .deleting
        }
        return (RetentionPlanning.plan(for: job, images: images, now: now), images)
    }

    private func retain(_ job: Job) async {
        // In a cluster, one node at a time judges a job's images.
        do {
            guard try await store.beginRetention(job: job.name) else {
                logger.debug("Retention runs on another node", metadata: ["job": "\(job.name)"])
                return
            }
        } catch {
            logger.error("Retention failed", metadata: ["job": "\(job.name)", "error": "\(error)"])
            return
        }
        await retainHoldingThePass(job)
        do {
            try await store.endRetention(job: job.name)
        } catch {
            logger.warning("Retention pass not given back", metadata: ["job": "\(job.name)", "error": "\(error)"])
        }
    }

    private func retainHoldingThePass(_ job: Job) async {
        let now = clock.now()
        let plan: RetentionPlan
        let images: [ImageRecord]
        do {
            (plan, images) = try await retentionPlan(for: job, now: now)
            let byID = Dictionary(images.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
            _ = try await store.recordRetentionDecisions(
                plan.decisions.compactMap { decision in
                    guard let image = byID[decision.id] else { return nil }
                    let reason = decision.reasons.joined(separator: "; ")
                    return (image.key, decision.action == .keep ? .keep(reason: reason) : .delete(reason: reason))
                })
        } catch {
            logger.error("Retention failed", metadata: ["job": "\(job.name)", "error": "\(error)"])
            return
        }
        let byID = Dictionary(images.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for decision in plan.deletions {
            guard let image = byID[decision.id] else { continue }
            if stepsBack(since: now, stopping: "Retention pass", job: job.name) { return }
            await delete(image, reason: decision.reasons.joined(separator: "; "))
        }
    }

    /// Whether the clock was stepped back since `planned`: images the plan counted may now be dated in the
    /// future, which retention must not count (its newest would go), so the rest of the plan is dropped and the
    /// next pass plans again.
    func stepsBack(since planned: Date, stopping what: String, job: String) -> Bool {
        let now = clock.now()
        guard now < planned.addingTimeInterval(-pacing.clockStepTolerance) else { return false }
        logger.warning(
            "\(what) stopped: the clock was stepped back since it was planned",
            metadata: [
                "event": "clock.stepped_back", "job": "\(job)", "planned": "\(RunEngine.iso(planned))",
                "now": "\(RunEngine.iso(now))",
            ])
        return true
    }

    /// Deletes one image: taken into `deleting` in one store transaction only if it is still active and unpinned
    /// (a pin confirmed before this point wins; one asked after it is refused), then deleted at the backend.
    func delete(_ image: ImageRecord, reason: String) async {
        do {
            guard let taken = try await store.beginDeleting(id: image.id, backend: image.backend, reason: reason, now: clock.now())
            else { return }
            await completeDelete(taken, reason: reason)
        } catch {
            storeWriteFailed(error, metadata: ["image": "\(image.id)", "error": "\(error)"])
        }
    }

    private func completeDelete(_ image: ImageRecord, reason: String) async {
        var metadata: Logger.Metadata = [
            "job": "\(image.job)", "image": "\(image.id)", "target": "\(image.backend):\(image.target)",
        ]
        guard let backend = backends[image.backend] else {
            logger.error("Retention cannot delete: backend not configured", metadata: metadata)
            _ = try? await store.abortDeleting(
                id: image.id, backend: image.backend, error: "backend not configured", now: clock.now())
            return
        }
        await pausePoint?("delete")
        let deadline = clock.now().addingTimeInterval(pacing.backendCallTimeout)
        let result = await withDeadline(deadline, operation: "delete of \(image.id)") {
            try await backend.delete(ImageRef(id: image.id), logger: self.logger)
        }
        await pausePoint?("deleted")
        do {
            switch result {
            case .success:
                _ = try await store.markImageDeleted(id: image.id, backend: image.backend, now: clock.now(), reason: reason)
                metrics?.imageDeleted(job: image.job)
                metadata["event"] = "image.deleted"
                metadata["state"] = "deleted"
                metadata["reason"] = "\(reason)"
                logger.notice("Image deleted", metadata: metadata)
            case .failure(let error):
                _ = try await store.abortDeleting(id: image.id, backend: image.backend, error: "\(error)", now: clock.now())
                metadata["error"] = "\(error)"
                logger.error("Image delete failed; it is kept and retried at the next retention", metadata: metadata)
            }
        } catch {
            metadata["error"] = "\(error)"
            storeWriteFailed(error, metadata: metadata)
        }
    }

    // MARK: Late images

    private func checkLateImages() async -> EngineEvent {
        let images: [ImageRecord]
        do {
            // Images of runs still under way are not among them: the store leaves out unfinished runs.
            images = try await store.imagesLeftUnfinished(limit: 500).filter { backends[$0.backend] != nil }
        } catch {
            logger.error("Store read failed", metadata: ["error": "\(error)"])
            return .lateImagesChecked(stillOpen: true, activeJobs: [])
        }
        var stillOpen = images.count >= 500
        var activeJobs: Set<String> = []
        for (name, group) in Dictionary(grouping: images, by: \.backend) {
            guard let backend = backends[name] else { continue }
            let deadline = clock.now().addingTimeInterval(pacing.backendCallTimeout)
            let refs = group.map { ImageRef(id: $0.id) }
            let answer = await withDeadline(deadline, operation: "status of \(refs.count) images") {
                await backend.statuses(of: refs, logger: self.logger)
            }
            guard case .success(let results) = answer else {
                stillOpen = true
                continue
            }
            for image in group {
                guard case .success(let state)? = results[ImageRef(id: image.id)], state.isFinal else {
                    stillOpen = true
                    continue
                }
                let stored = StoredImageState(imageState: state)
                let size = state == .active ? await size(of: image.id, target: image.target, on: backend) : nil
                do {
                    _ = try await store.updateImageState(
                        id: image.id, backend: image.backend, state: stored, sizeBytes: size, now: clock.now())
                } catch {
                    storeWriteFailed(error, metadata: ["image": "\(image.id)", "error": "\(error)"])
                    stillOpen = true
                    continue
                }
                var metadata: Logger.Metadata = [
                    "event": "image.\(stored.rawValue)_late", "job": "\(image.job)", "image": "\(image.id)",
                    "target": "\(image.backend):\(image.target)", "state": "\(stored.rawValue)",
                ]
                if let size { metadata["size_bytes"] = "\(size)" }
                if let reason = state.errorReason { metadata["error"] = "\(reason)" }
                logger.notice("Image finished after its run gave up on it", metadata: metadata)
                if stored == .active { activeJobs.insert(image.job) }
            }
        }
        return .lateImagesChecked(stillOpen: stillOpen, activeJobs: activeJobs)
    }

    // MARK: Sweep

    /// Lists each backend for images carrying snapcron's marker that the store does not know, and records those
    /// whose fire this store claimed (a create whose reply was lost, a crash before the image was recorded).
    /// Marked images of fires it never claimed belong to another installation: reported, never touched.
    func sweep(targets: [String: Set<String>]) async -> EngineEvent {
        var recordedJobs: Set<String> = []
        let installationID = try? await store.installationID()
        var storeTargets: [String: Set<String>] = [:]
        if let known = try? await store.imageTargets() {
            for item in known { storeTargets[item.backend, default: []].insert(item.target) }
        }
        let lookback = clock.now().addingTimeInterval(-pacing.sweepLookback)
        if let ended = try? await store.targetsOfRunsEndedWithoutImage(since: lookback) {
            for item in ended { storeTargets[item.backend, default: []].insert(item.target) }
        }
        for (name, backend) in backends.sorted(by: { $0.key < $1.key }) {
            let listed: [ImageInfo]
            do {
                listed = try await listEverything(
                    on: backend, targets: targets[name, default: []].union(storeTargets[name, default: []]))
                let known = try await store.imageStates(backend: name)
                var foreign: [String] = []
                for info in listed where known[info.id.id] == nil {
                    guard let marker = ImageMarker.parse(info.description), let scheduled = marker.scheduled else {
                        continue
                    }
                    // The fire itself, however many runs of the job came after it.
                    let fire = try await store.run(job: marker.job, scheduledAt: scheduled)
                    let run = fire?.imageName == info.name ? fire : nil
                    // No run chose this name, yet the marker is this store's: a claim lost (a power cut under
                    // synchronous=NORMAL) after its create went out; the fire was run again or recorded missed.
                    let lostClaim =
                        run == nil && installationID != nil && marker.installation == installationID
                        && info.name == RunEngine.imageName(job: marker.job, scheduled: scheduled)
                    guard run != nil || lostClaim else {
                        foreign.append(info.id.id)
                        continue
                    }
                    if let run, !run.state.isTerminal { continue }  // its run is still following it
                    let found = FoundImage(
                        id: info.id.id, backend: name, job: marker.job, target: info.target, name: info.name,
                        description: info.description,
                        createdAt: info.createdAt ?? run?.startedAt ?? run?.claimedAt ?? fire?.claimedAt ?? scheduled,
                        state: StoredImageState(imageState: info.state), sizeBytes: info.sizeBytes)
                    if try await store.recordFoundImage(found, now: clock.now()) != nil {
                        recordedJobs.insert(marker.job)
                        metrics?.storeChanged()
                        logger.notice(
                            lostClaim ? "Image of a fire whose claim was lost found by the sweep" : "Unrecorded image found by the sweep",
                            metadata: [
                                "event": "image.found", "job": "\(marker.job)", "run": "\(run.map { String($0.id) } ?? "none")",
                                "image": "\(info.id.id)", "target": "\(name):\(info.target)",
                                "state": "\(found.state.rawValue)",
                            ])
                    }
                }
                if !foreign.isEmpty {
                    logger.warning(
                        "Images with snapcron's marker that this daemon did not make (another installation?)",
                        metadata: [
                            "event": "image.foreign", "backend": "\(name)", "count": "\(foreign.count)",
                            "images": "\(foreign.prefix(10).joined(separator: ","))",
                        ])
                }
            } catch {
                logger.warning("Sweep of a backend failed", metadata: ["backend": "\(name)", "error": "\(error)"])
            }
        }
        return .sweepFinished(recordedJobs: recordedJobs)
    }

    private func listEverything(on backend: any SnapshotBackend, targets: Set<String>) async throws -> [ImageInfo] {
        let deadline = clock.now().addingTimeInterval(pacing.backendCallTimeout)
        let all = await withDeadline(deadline, operation: "list of every image") {
            try await backend.listAll(logger: self.logger)
        }
        if case .success(let images?) = all { return images }
        if case .failure(let error) = all { throw error }
        // One target that cannot be listed (a VM removed since) must not hide the others' images.
        var images: [ImageInfo] = []
        var failures: [any Error] = []
        for target in targets.sorted() {
            let result = await withDeadline(deadline, operation: "list of \(target)") {
                try await backend.list(target: target, logger: self.logger)
            }
            switch result {
            case .success(let listed): images += listed
            case .failure(let error):
                failures.append(error)
                logger.warning(
                    "Sweep cannot list a target", metadata: ["backend": "\(backend.name)", "target": "\(target)", "error": "\(error)"])
            }
        }
        if let first = failures.first, failures.count == targets.count { throw first }
        return images
    }

    // MARK: Tasks and deadlines

    private func send(_ event: EngineEvent) async {
        guard let sink = deliver.withLock({ $0 }) else { return }
        await sink(event)
    }

    /// Logs a failed store write. A write refused because this daemon's lease on its runs lapsed (cluster) also
    /// gets the lease renewed at once, which forgets the runs or takes them back.
    private func storeWriteFailed(_ error: any Error, metadata: Logger.Metadata) {
        logger.error("Store write failed", metadata: metadata)
        if !(error is RunFencedError) { storeTrouble.withLock { $0 = "\(error)" } }
        if error is RunFencedError { Task { await self.send(.runWriteFenced) } }
    }

    /// Renews this daemon's lease on its runs and takes over those of daemons whose lease lapsed (cluster).
    private func renewRunLease() async -> [EngineEvent] {
        var events: [EngineEvent] = []
        let began = ContinuousClock.now
        do {
            let held = try await store.renewRunLease()
            storeTrouble.withLock { $0 = nil }
            if let lease = store.runLease { leaseHeldUntil.withLock { $0 = began + lease } }
            if !held {
                leaseGeneration.add(1, ordering: .relaxed)
                // Another node may be resuming these runs: their creates stop here.
                for run in createCalls.withLock({ Array($0.keys) }) { cutCreate(of: run) }
                heldBackTakeovers.withLock { $0 = [:] }  // not ours any more either; taken back below if still free
                events.append(.runLeaseLost)
            }
            // Another node may have paused or resumed a job: the store's flags are the cluster's.
            events.append(.storedPausesRead(try await store.pausedJobNames()))
            // A run taken back while its earlier create still runs here waits for that call to return: resumed at
            // once, its create by name could miss the image the earlier call is still making.
            let busy = createsUnderWay.withLock { $0 }
            var taken: [RunRecord] = []
            heldBackTakeovers.withLock { held in
                for (id, record) in held where !busy.contains(id) {
                    taken.append(record)
                    held[id] = nil
                }
            }
            for record in try await store.takeOverRuns() {
                if busy.contains(record.id) {
                    heldBackTakeovers.withLock { $0[record.id] = record }
                } else {
                    taken.append(record)
                }
            }
            taken.sort { $0.id < $1.id }
            if !taken.isEmpty {
                logger.notice(
                    "Runs taken over from lapsed nodes",
                    metadata: [
                        "event": "cluster.takeover", "runs": "\(taken.count)",
                        "ids": "\(taken.prefix(20).map { String($0.id) }.joined(separator: ","))",
                    ])
                events.append(.runsTakenOver(taken))
            }
        } catch {
            storeTrouble.withLock { $0 = "\(error)" }
            logger.error("Lease renewal failed", metadata: ["event": "cluster.lease_failed", "error": "\(error)"])
        }
        return events
    }

    /// Runs `work` in a task of its own, counted in flight until its event (if any) is delivered.
    private func spawn(_ work: @escaping @Sendable () async -> EngineEvent?) {
        tasksInFlight.add(1, ordering: .relaxed)
        let generation = leaseGeneration.load(ordering: .relaxed)
        Task {
            if let event = await work() {
                if case .createFinished = event, self.leaseGeneration.load(ordering: .relaxed) != generation {
                    // The run was forgotten when the lease lapsed; its store writes were refused.
                } else {
                    await self.send(event)
                }
            }
            self.tasksInFlight.subtract(1, ordering: .relaxed)
        }
    }

    /// Runs `body`, giving up at `deadline` (on the scheduler's clock): the body is cancelled and a transient
    /// error returned, even when the body ignores its cancellation.
    func withDeadline<T: Sendable>(
        _ deadline: Date, operation: String, _ body: @escaping @Sendable () async throws -> T
    ) async -> Result<T, any Error> {
        let once = OnceResult<T>()
        let clock = self.clock
        return await withCheckedContinuation { continuation in
            once.set(continuation)
            let work = Task {
                do {
                    once.resume(.success(try await body()))
                } catch {
                    once.resume(.failure(error))
                }
            }
            let timer = Task {
                guard deadline > clock.now() else {
                    work.cancel()
                    once.resume(.failure(DeadlineExceeded(operation: operation)))
                    return
                }
                do {
                    try await clock.sleepForCallLimit(until: deadline)
                } catch {
                    return  // cancelled: the work finished first
                }
                work.cancel()
                once.resume(.failure(DeadlineExceeded(operation: operation)))
            }
            once.onResume { timer.cancel() }
        }
    }
}

/// A create call in flight, with the means to cut it.
private struct CreateCall: Sendable {
    var work: Task<Void, Never>
    var once: OnceResult<CreatedImage>
}

/// A backend call cut at its deadline.
struct DeadlineExceeded: Error, CustomStringConvertible {
    var operation: String
    var description: String { "\(operation) did not answer before its deadline; cut" }
}

/// A continuation resumed once, by whichever of the work and its timer ends first.
private final class OnceResult<T: Sendable>: Sendable {
    private struct State {
        var continuation: CheckedContinuation<Result<T, any Error>, Never>?
        var early: Result<T, any Error>?
        var done = false
        var onResume: (@Sendable () -> Void)?
    }
    private let state = Mutex<State>(State())

    func set(_ continuation: CheckedContinuation<Result<T, any Error>, Never>) {
        let early: Result<T, any Error>? = state.withLock { state in
            if let early = state.early {
                state.early = nil
                return early
            }
            state.continuation = continuation
            return nil
        }
        if let early { continuation.resume(returning: early) }
    }

    func onResume(_ action: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { state -> Bool in
            if state.done { return true }
            state.onResume = action
            return false
        }
        if runNow { action() }
    }

    func resume(_ result: Result<T, any Error>) {
        let (continuation, action): (CheckedContinuation<Result<T, any Error>, Never>?, (@Sendable () -> Void)?) =
            state.withLock { state in
                guard !state.done else { return (nil, nil) }
                state.done = true
                if let continuation = state.continuation {
                    state.continuation = nil
                    return (continuation, state.onResume)
                }
                state.early = result
                return (nil, state.onResume)
            }
        action?()
        continuation?.resume(returning: result)
    }
}

extension StoredImageState {
    init(imageState: ImageState) {
        switch imageState {
        case .queued: self = .queued
        case .saving: self = .saving
        case .active: self = .active
        case .error: self = .error
        case .gone: self = .gone
        }
    }
}

extension EngineAction.NoteLevel {
    var logLevel: Logger.Level {
        switch self {
        case .info: .info
        case .notice: .notice
        case .warning: .warning
        case .error: .error
        }
    }
}

/// Retention's plan for one job: the planner over the job's images of its current backend and target. Images
/// the job made of another target (before it was pointed elsewhere) are not its to judge: they are orphans.
public enum RetentionPlanning {
    public static func plan(for job: Job, images: [ImageRecord], now: Date) -> RetentionPlan {
        let zone = TimeZone(identifier: job.zone.identifier) ?? TimeZone(identifier: "UTC")!
        let candidates = images.filter {
            $0.backend == job.backend && $0.target == job.target && $0.state != .deleted && $0.state != .deleting
        }.map {
            RetentionImage(id: $0.id, createdAt: $0.createdAt, state: $0.state.rawValue, pinned: $0.pinned)
        }
        return RetentionPlanner(policy: job.options.retention, timeZone: zone).plan(for: candidates, now: now)
    }
}

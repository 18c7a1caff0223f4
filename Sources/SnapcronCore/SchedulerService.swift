import CronExpression
import Foundation
import Logging
import SnapcronStore
import SnapshotBackend
import Synchronization

/// How many images may be in progress at once: across all backends, and per backend.
public struct ConcurrencyLimits: Sendable, Hashable {
    public var global: Int
    public var perBackend: [String: Int]

    public init(global: Int = 4, perBackend: [String: Int] = [:]) {
        self.global = max(1, global)
        self.perBackend = perBackend
    }
}

/// Poll and retry pacing of runs.
public struct RunPacing: Sendable, Hashable {
    /// First status poll after a create; doubles up to `maxPollInterval`.
    public var firstPollInterval: TimeInterval = 2
    public var maxPollInterval: TimeInterval = 60
    /// Back-off of a retried create: `retryBase * 2^(attempt-1)` with ±25 % jitter, at most `retryMax`.
    public var retryBase: TimeInterval = 15
    public var retryMax: TimeInterval = 900
    /// A fire this much after it was due is recorded as a catch-up rather than an on-time run.
    public var lateness: TimeInterval = 60
    /// After downtime, at most this many older missed fires of one job get a row each; the rest are counted in the
    /// log (the newest always gets a row, so the job's last handled fire is exact).
    public var maxMissedRowsPerJob = 100
    /// How often images left `queued`/`saving` by a run that gave up (timed out) are looked at again, so that
    /// one the provider finishes later is recorded, counted by retention and not billed forever unseen.
    public var unfinishedImageInterval: TimeInterval = 900

    public init() {}
}

/// A periodic call from the scheduler loop itself (systemd's WATCHDOG=1), so that a stuck loop stops it.
public struct Heartbeat: Sendable {
    public var interval: Duration
    public var beat: @Sendable () -> Void

    public init(interval: Duration, beat: @escaping @Sendable () -> Void) {
        self.interval = interval
        self.beat = beat
    }
}

extension Job {
    /// The job without the text of its schedule line: the scheduler holds every job for the daemon's lifetime,
    /// and the line text (needed only for load-time diagnostics) was a tenth of its memory with 100,000 jobs.
    public var withoutSourceText: Job {
        var job = self
        job.location.text = ""
        return job
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

/// Why a request to the scheduler was refused.
public struct SchedulerError: Error, Hashable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
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

/// The scheduler: fires jobs on time, drives each run through its backend to a final state, applies retention,
/// and records every step in the store.
///
/// One loop owns the clock: it handles whatever is due (fires, creates, polls), then sleeps until the next thing
/// is due. Backend calls run in child tasks and report back to the actor, waking the loop. Every state change is
/// written to the store before it is acted on, so a crash at any point resumes without losing or repeating a
/// fire: a fire is claimed once by UNIQUE(job, scheduled_at); unfinished runs are resumed at start.
public actor SchedulerService {
    private let store: SnapcronDatabase
    private let backends: [String: any SnapshotBackend]
    private let clock: any SchedulerClock
    private let limits: ConcurrencyLimits
    private let pacing: RunPacing
    private let logger: Logger
    private let pausePoint: (@Sendable (String) async -> Void)?

    private var jobs: [String: JobEntry] = [:]
    /// The paused jobs' names, kept beside `jobs` so that readers need no hop onto the actor.
    private let publishedPausedJobs = Mutex<Set<String>>([])
    private var queue = MinHeap<FireEntry>()
    private var runs: [Int64: ActiveRun] = [:]
    // Indexes over `runs`, so that a tick costs what is due, not what is running.
    private var runTimers = MinHeap<RunTimer>()
    private var awaitingSlot: [Int64] = []
    private var runsByTarget: [String: Set<Int64>] = [:]
    private var slotsInUse = 0
    private var slotsByBackend: [String: Int] = [:]
    private var retentionRunning: Set<String> = []
    private var retentionPending: Set<String> = []
    /// Jobs whose retention is re-checked after a start, popped from the end a batch at a time.
    private var retentionBacklog: [String] = []
    private var inFlight = 0
    /// When to look again at images whose runs gave up on them; nil while there are none.
    private var nextUnfinishedImageCheck: Date?
    private var sleepTask: Task<Void, any Error>?
    private var wakeRequested = false
    private var isSleeping = false
    private var started = false
    private var lastLoopAt: Date?
    private var loopIterations = 0
    private var lastFailure: String?

    /// A class so that the dictionary holds a pointer: with inline values of ~400 bytes, a dictionary of
    /// 100,000 jobs (262,144 buckets) alone took over 100 MB.
    private final class JobEntry {
        var job: Job
        var generation: Int
        var paused: Bool
        var lastHandled: Date?

        init(job: Job, generation: Int, paused: Bool, lastHandled: Date? = nil) {
            self.job = job
            self.generation = generation
            self.paused = paused
            self.lastHandled = lastHandled
        }
    }

    private struct ActiveRun {
        var record: RunRecord
        var job: String
        var backend: String
        var target: String
        var imageName: String
        var timeout: TimeInterval
        var retries: Int
        var deadline: TimeInterval
        var phase: Phase
        var holdsSlot = false
        var startedAt: Date?
        var pollInterval: TimeInterval
        var imageID: String?
        /// The image state the last poll reported, for the time-out message.
        var lastSeen: ImageState?
        /// Resumed after a restart within its timeout: the backend picks the image up before the first poll.
        var resumesAfterRestart = false

        enum Phase: Equatable {
            case awaitingSlot
            case createDue(Date)
            case creating
            case pollDue(Date)
            case polling

            var name: String {
                switch self {
                case .awaitingSlot: "queued"
                case .createDue: "create-pending"
                case .creating: "creating"
                case .pollDue, .polling: "waiting"
                }
            }
        }
    }

    public init(
        jobs: [Job], store: SnapcronDatabase, backends: [String: any SnapshotBackend], clock: any SchedulerClock,
        limits: ConcurrencyLimits = ConcurrencyLimits(), pacing: RunPacing = RunPacing(), logger: Logger,
        pausePoint: (@Sendable (String) async -> Void)? = nil
    ) {
        self.pausePoint = pausePoint
        self.store = store
        self.backends = backends
        self.clock = clock
        self.limits = limits
        self.pacing = pacing
        self.logger = logger
        var generation = 0
        self.jobs.reserveCapacity(jobs.count)
        for job in jobs {
            generation += 1
            self.jobs[job.name] = JobEntry(job: job.withoutSourceText, generation: generation, paused: job.options.paused)
        }
        publishedPausedJobs.withLock { $0 = Set(jobs.lazy.filter(\.options.paused).map(\.name)) }
    }

    // MARK: The loop

    /// Runs until the task is cancelled. Resumes unfinished runs and catches up missed fires first.
    public func run(heartbeat: Heartbeat? = nil, observer: SchedulerObserver? = nil) async throws {
        try prepare(now: clock.now())
        var lastBeat = ContinuousClock.now
        heartbeat?.beat()
        observer?.started()
        var lastStatus = ""
        while !Task.isCancelled {
            let now = clock.now()
            lastLoopAt = now
            loopIterations += 1
            tick(now: now)
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
            var wake = nextWake(now: now)
            if let heartbeat {
                let untilBeat = heartbeat.interval - (ContinuousClock.now - lastBeat)
                wake = min(wake, now.addingTimeInterval(max(0, untilBeat.seconds)))
            }
            await sleep(until: wake)
        }
        await drain()
    }

    /// Loads job state and unfinished runs; called once by `run`.
    private func prepare(now: Date) throws {
        guard !started else { return }
        started = true
        let states = Dictionary(try store.allJobStates().map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var entries: [FireEntry] = []
        entries.reserveCapacity(jobs.count)
        for (name, entry) in jobs {
            entry.lastHandled = states[name]?.lastScheduledAt
            entry.paused = entry.job.options.paused || (states[name]?.paused ?? false)
            jobs[name] = entry
            if let next = firstFire(of: entry, now: now) { entries.append(next) }
        }
        queue.replaceAll(with: entries)
        publishPausedJobs()
        if !(try store.imagesLeftUnfinished(limit: 1)).isEmpty { followUnfinishedImagesLater(now: now) }
        for record in try store.unfinishedRuns() { resume(record, now: now) }
        // Finish what a previous process may have left half done: a delete cut short by a crash (image gone at
        // the backend but still active in the store, or planned and never sent) is otherwise only redone after
        // the job's next success, which may be a week away.
        // Done a batch per loop turn, so start-up stays fast with many jobs and fires are never held up.
        let withImages = try store.jobsWithImages()
        retentionBacklog = jobs.keys.filter { withImages.contains($0) }.sorted(by: >)
        logger.info(
            "Scheduler started",
            metadata: [
                "event": "daemon.started", "jobs": "\(jobs.count)", "resumed_runs": "\(runs.count)",
            ])
    }

    private func tick(now: Date) {
        processDueFires(now: now)
        startQueuedRuns(now: now)
        processDueRuns(now: now)
        for _ in 0..<min(200, retentionBacklog.count) {
            scheduleRetention(job: retentionBacklog.removeLast())
        }
        if let check = nextUnfinishedImageCheck, now >= check { checkUnfinishedImages(now: now) }
    }

    private func nextWake(now: Date) -> Date {
        var wake = now.addingTimeInterval(86_400)  // nothing due: look again tomorrow
        if let first = queue.first { wake = min(wake, first.due) }
        if let first = runTimers.first { wake = min(wake, first.due) }
        if !retentionBacklog.isEmpty { wake = now }
        if let check = nextUnfinishedImageCheck { wake = min(wake, check) }
        return wake
    }

    // MARK: Images a run gave up on

    /// Polls, once each, the images that timed-out runs left `queued`/`saving`, and records what became of them:
    /// an image the provider finished late becomes active (and retention counts it), one that failed or vanished
    /// says so. Images still in progress are looked at again after `unfinishedImageInterval`.
    private func checkUnfinishedImages(now: Date) {
        nextUnfinishedImageCheck = nil
        let images: [ImageRecord]
        do {
            // Images of runs still under way are not among them: the store leaves out claimed/creating/waiting.
            images = try store.imagesLeftUnfinished(limit: 500).filter { backends[$0.backend] != nil }
        } catch {
            logger.error("Store read failed", metadata: ["error": "\(error)"])
            nextUnfinishedImageCheck = now.addingTimeInterval(pacing.unfinishedImageInterval)
            return
        }
        guard !images.isEmpty else { return }
        inFlight += 1
        let (backendsByName, logger) = (self.backends, self.logger)
        Task {
            var outcomes: [(image: ImageRecord, state: ImageState?, size: Int64?)] = []
            for image in images {
                guard let backend = backendsByName[image.backend] else { continue }
                let ref = ImageRef(id: image.id)
                do {
                    let state = try await backend.status(ref, logger: logger)
                    let size =
                        state == .active
                        ? await Self.size(of: image.id, target: image.target, on: backend, logger: logger) : nil
                    outcomes.append((image, state, size))
                } catch {
                    outcomes.append((image, nil, nil))  // asked again next time
                }
            }
            self.unfinishedImagesChecked(outcomes)
        }
    }

    private func unfinishedImagesChecked(_ outcomes: [(image: ImageRecord, state: ImageState?, size: Int64?)]) {
        inFlight -= 1
        defer { wakeLoop() }
        let now = clock.now()
        var stillOpen = false
        for (image, state, size) in outcomes {
            let stored: StoredImageState
            switch state {
            case .active: stored = .active
            case .error: stored = .error
            case .gone: stored = .gone
            case .queued, .saving, nil:
                stillOpen = true
                continue
            }
            do {
                _ = try store.updateImageState(
                    id: image.id, backend: image.backend, state: stored, sizeBytes: size, now: now)
            } catch {
                logger.error("Store write failed", metadata: ["image": "\(image.id)", "error": "\(error)"])
                stillOpen = true
                continue
            }
            var metadata: Logger.Metadata = [
                "event": "image.\(stored.rawValue)_late", "job": "\(image.job)", "image": "\(image.id)",
                "target": "\(image.backend):\(image.target)", "state": "\(stored.rawValue)",
            ]
            if let size { metadata["size_bytes"] = "\(size)" }
            if case .error(let reason) = state { metadata["error"] = "\(reason)" }
            logger.notice("Image finished after its run gave up on it", metadata: metadata)
            if stored == .active { scheduleRetention(job: image.job) }
        }
        if stillOpen || outcomes.count >= 500 {
            nextUnfinishedImageCheck = now.addingTimeInterval(pacing.unfinishedImageInterval)
        }
    }

    /// Makes sure images a run gave up on are looked at again.
    private func followUnfinishedImagesLater(now: Date) {
        let check = now.addingTimeInterval(pacing.unfinishedImageInterval)
        nextUnfinishedImageCheck = min(nextUnfinishedImageCheck ?? check, check)
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
        let limit = ContinuousClock.now + .seconds(5)
        while inFlight > 0 && ContinuousClock.now < limit {
            try? await Task.sleep(for: .milliseconds(20))
        }
        sleepTask?.cancel()
    }

    /// For tests on a manual clock: returns once no backend call is in flight and the loop is asleep.
    public func waitUntilIdle() async {
        while inFlight > 0 || !isSleeping || wakeRequested || !clock.hasWaitingSleeper {
            await Task.yield()
        }
    }

    // MARK: Fires

    private func firstFire(of entry: JobEntry, now: Date) -> FireEntry? {
        let scheduled: Date?
        if let last = entry.lastHandled {
            scheduled = entry.job.expression.nextDate(after: last, in: entry.job.zone)
        } else {
            // A new job starts from now: there is nothing of it to catch up.
            scheduled = entry.job.expression.nextDate(after: now, in: entry.job.zone)
        }
        return scheduled.map { queueEntry(entry, scheduled: $0) }
    }

    private func queueEntry(_ entry: JobEntry, scheduled: Date) -> FireEntry {
        FireEntry(
            due: scheduled.addingTimeInterval(jitter(for: entry.job, scheduled: scheduled)), scheduled: scheduled,
            job: entry.job.name, generation: entry.generation)
    }

    /// Deterministic per job and fire, so a restart computes the same due time.
    private func jitter(for job: Job, scheduled: Date) -> TimeInterval {
        let range = job.options.jitter.timeInterval
        guard range >= 1 else { return 0 }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in job.name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        hash = (hash ^ UInt64(bitPattern: Int64(scheduled.timeIntervalSince1970))) &* 0x100_0000_01B3
        hash ^= hash >> 29
        return TimeInterval(hash % UInt64(range))
    }

    private func processDueFires(now: Date) {
        var batch: [(entry: JobEntry, scheduled: Date, trigger: RunTrigger)] = []
        var targetsClaimedThisTick: Set<String> = []
        defer { fire(batch: batch, now: now) }
        while let top = queue.first, top.due <= now {
            _ = queue.popFirst()
            guard let entry = jobs[top.job], entry.generation == top.generation else { continue }
            let job = entry.job
            // Normally one fire; after downtime or a clock jump, every fire up to now. Keep the newest few.
            var fires = [top.scheduled]
            var dropped = 0
            var cursor = top.scheduled
            while let next = job.expression.nextDate(after: cursor, in: job.zone), next <= now {
                fires.append(next)
                if fires.count > pacing.maxMissedRowsPerJob + 1 {
                    fires.removeFirst()
                    dropped += 1
                }
                cursor = next
            }
            let newest = fires[fires.count - 1]
            if dropped > 0 {
                logger.warning(
                    "Missed fires not recorded one by one",
                    metadata: ["event": "run.missed", "job": "\(job.name)", "count": "\(dropped)"])
            }
            for older in fires.dropLast() {
                recordMissed(job: job.name, scheduled: older, now: now, reason: "a later fire was due too; only the newest missed fire runs")
            }
            let lateness = now.timeIntervalSince(newest)
            if lateness > job.options.deadline.timeInterval + jitter(for: job, scheduled: newest) {
                recordMissed(
                    job: job.name, scheduled: newest, now: now,
                    reason: "\(Self.format(lateness)) late, past deadline=\(job.options.deadline.optionDescription)")
            } else {
                let late = lateness - jitter(for: job, scheduled: newest) > pacing.lateness || fires.count > 1
                let trigger: RunTrigger = late ? .catchUp : .schedule
                if admit(
                    entry, scheduled: newest, trigger: trigger, now: now,
                    targetsClaimedThisTick: targetsClaimedThisTick)
                {
                    batch.append((entry, newest, trigger))
                    targetsClaimedThisTick.insert(Self.targetKey(job.backend, job.target))
                }
            }
            entry.lastHandled = newest
            jobs[job.name] = entry
            if let next = job.expression.nextDate(after: newest, in: job.zone) {
                queue.push(queueEntry(entry, scheduled: next))
            }
        }
    }

    private func recordMissed(job: String, scheduled: Date, now: Date, reason: String) {
        recordWithoutRun(job: job, scheduled: scheduled, state: .missed, reason: reason, level: .warning) {
            try self.store.recordMissed(job: job, scheduledAt: scheduled, now: now, reason: reason)
        }
    }

    /// Claims one fire and queues its run, unless the job is paused or its target is busy.
    @discardableResult
    private func fire(_ entry: JobEntry, scheduled: Date, trigger: RunTrigger, now: Date) -> RunRecord? {
        guard admit(entry, scheduled: scheduled, trigger: trigger, now: now, targetsClaimedThisTick: []) else {
            return nil
        }
        do {
            let record = try store.claimRun(
                job: entry.job.name, scheduledAt: scheduled, trigger: trigger,
                imageName: Self.imageName(job: entry.job.name, scheduled: scheduled), backend: entry.job.backend,
                target: entry.job.target, now: now)
            return claimed(record, job: entry.job, scheduled: scheduled, trigger: trigger, now: now)
        } catch {
            logger.error("Store write failed", metadata: ["job": "\(entry.job.name)", "error": "\(error)"])
            return nil
        }
    }

    /// Claims the fires of one tick in one store transaction (10,000 jobs due in the same minute are one commit,
    /// not 10,000).
    private func fire(batch: [(entry: JobEntry, scheduled: Date, trigger: RunTrigger)], now: Date) {
        guard !batch.isEmpty else { return }
        let claims = batch.map { item in
            SnapcronDatabase.Claim(
                job: item.entry.job.name, scheduledAt: item.scheduled, trigger: item.trigger,
                imageName: Self.imageName(job: item.entry.job.name, scheduled: item.scheduled),
                backend: item.entry.job.backend, target: item.entry.job.target)
        }
        do {
            let records = try store.claimRuns(claims, now: now)
            for (item, record) in zip(batch, records) {
                claimed(record, job: item.entry.job, scheduled: item.scheduled, trigger: item.trigger, now: now)
            }
        } catch {
            logger.error("Store write failed", metadata: ["fires": "\(batch.count)", "error": "\(error)"])
        }
    }

    /// Whether a fire may be claimed: not when its job is paused or its target busy (both recorded as skipped).
    private func admit(
        _ entry: JobEntry, scheduled: Date, trigger: RunTrigger, now: Date, targetsClaimedThisTick: Set<String>
    ) -> Bool {
        let job = entry.job
        if trigger != .manual && entry.paused {
            skip(job: job, scheduled: scheduled, trigger: trigger, now: now, reason: "job is paused")
            return false
        }
        guard trigger != .manual, job.options.overlap == .skip else { return true }
        if let busy = unfinishedRun(backend: job.backend, target: job.target) {
            skip(
                job: job, scheduled: scheduled, trigger: trigger, now: now,
                reason: "run \(busy) of \(job.qualifiedTarget) is still unfinished (overlap=skip)")
            return false
        }
        if targetsClaimedThisTick.contains(Self.targetKey(job.backend, job.target)) {
            skip(
                job: job, scheduled: scheduled, trigger: trigger, now: now,
                reason: "another fire of \(job.qualifiedTarget) starts at the same time (overlap=skip)")
            return false
        }
        return true
    }

    /// Tracks a claimed run and logs it; nil (already claimed, e.g. before a restart) is logged and dropped.
    @discardableResult
    private func claimed(_ record: RunRecord?, job: Job, scheduled: Date, trigger: RunTrigger, now: Date)
        -> RunRecord?
    {
        let metadata: Logger.Metadata = ["job": "\(job.name)", "scheduled": "\(Self.iso(scheduled))"]
        guard let record else {
            logger.info("Fire already claimed", metadata: metadata)
            return nil
        }
        track(record, job: job, now: now)
        logger.info(
            "Run fired",
            metadata: metadata.merging(
                [
                    "event": "run.fired", "run": "\(record.id)", "target": "\(job.qualifiedTarget)",
                    "state": "claimed", "trigger": "\(trigger.rawValue)",
                ], uniquingKeysWith: { a, _ in a }))
        return record
    }

    private func skip(job: Job, scheduled: Date, trigger: RunTrigger, now: Date, reason: String) {
        recordWithoutRun(job: job.name, scheduled: scheduled, state: .skipped, reason: reason, level: .notice) {
            try self.store.recordSkipped(
                job: job.name, scheduledAt: scheduled, trigger: trigger, now: now, reason: reason)
        }
    }

    /// Writes a fire that gets no run (missed or skipped) and logs it once; nil from the store means it was
    /// already recorded.
    private func recordWithoutRun(
        job: String, scheduled: Date, state: RunState, reason: String, level: Logger.Level,
        _ write: () throws -> RunRecord?
    ) {
        do {
            guard try write() != nil else { return }
            logger.log(
                level: level, "Run \(state.rawValue)",
                metadata: [
                    "event": "run.\(state.rawValue)", "job": "\(job)", "scheduled": "\(Self.iso(scheduled))",
                    "state": "\(state.rawValue)", "error": "\(reason)",
                ])
        } catch {
            logger.error("Store write failed", metadata: ["job": "\(job)", "error": "\(error)"])
        }
    }

    private func unfinishedRun(backend: String, target: String) -> Int64? {
        runsByTarget[Self.targetKey(backend, target)]?.min()
    }

    private static func targetKey(_ backend: String, _ target: String) -> String { backend + ":" + target }

    /// Adds a run and its index entries.
    private func insert(_ run: ActiveRun) {
        let id = run.record.id
        runs[id] = run
        runsByTarget[Self.targetKey(run.backend, run.target), default: []].insert(id)
        if run.holdsSlot { acquireSlot(backend: run.backend) }
        switch run.phase {
        case .awaitingSlot: awaitingSlot.append(id)
        case .createDue(let at), .pollDue(let at): runTimers.push(RunTimer(due: at, run: id))
        default: break
        }
        if let started = run.startedAt { runTimers.push(RunTimer(due: started.addingTimeInterval(run.timeout), run: id)) }
    }

    /// Moves a run to a phase that falls due at `at`.
    private func schedule(_ id: Int64, _ phase: ActiveRun.Phase, at: Date) {
        runs[id]?.phase = phase
        runTimers.push(RunTimer(due: at, run: id))
    }

    private func acquireSlot(backend: String) {
        slotsInUse += 1
        slotsByBackend[backend, default: 0] += 1
    }

    private func track(_ record: RunRecord, job: Job, now: Date) {
        insert(ActiveRun(
            record: record, job: job.name, backend: job.backend, target: job.target,
            imageName: record.imageName ?? Self.imageName(job: job.name, scheduled: record.scheduledAt),
            timeout: job.options.timeout.timeInterval, retries: job.options.retries,
            deadline: job.options.deadline.timeInterval, phase: .awaitingSlot, startedAt: record.startedAt,
            pollInterval: pacing.firstPollInterval, imageID: record.imageID))
    }

    /// Picks up a run that was unfinished when the daemon stopped.
    private func resume(_ record: RunRecord, now: Date) {
        let job = jobs[record.job]?.job
        let defaults = JobOptions()
        var run = ActiveRun(
            record: record, job: record.job, backend: record.backend ?? job?.backend ?? "",
            target: record.target ?? job?.target ?? "",
            imageName: record.imageName ?? Self.imageName(job: record.job, scheduled: record.scheduledAt),
            timeout: (job?.options.timeout ?? defaults.timeout).timeInterval,
            retries: job?.options.retries ?? defaults.retries, deadline: .infinity, phase: .awaitingSlot,
            startedAt: record.startedAt, pollInterval: pacing.firstPollInterval, imageID: record.imageID)
        if record.state == .waiting, record.imageID != nil {
            run.holdsSlot = true
            run.phase = .pollDue(now)
            // Past its timeout, the first poll only decides between late success and a time-out: nothing restarts.
            run.resumesAfterRestart = record.startedAt.map { now < $0.addingTimeInterval(run.timeout) } ?? true
        } else if record.state == .claimed, let retryAt = record.nextPollAt, record.attempts > 0 {
            run.holdsSlot = true
            run.phase = .createDue(max(now, retryAt))
        }
        insert(run)
        logger.info(
            "Run resumed",
            metadata: ["job": "\(record.job)", "run": "\(record.id)", "state": "\(record.state.rawValue)"])
    }

    // MARK: Runs

    private func startQueuedRuns(now: Date) {
        guard !awaitingSlot.isEmpty else { return }
        var waiting: [Int64] = []
        for (index, id) in awaitingSlot.enumerated() {
            guard var run = runs[id], run.phase == .awaitingSlot else { continue }
            if run.record.trigger != .manual, now.timeIntervalSince(run.record.scheduledAt) > run.deadline
                + (jobs[run.job].map { jitter(for: $0.job, scheduled: run.record.scheduledAt) } ?? 0)
            {
                finish(id, state: .missed, error: "waited for a free slot past deadline", now: now)
                continue
            }
            if slotsInUse >= limits.global {
                waiting.append(contentsOf: awaitingSlot[index...].filter { runs[$0]?.phase == .awaitingSlot })
                break
            }
            guard slotsByBackend[run.backend, default: 0] < limits.perBackend[run.backend] ?? Int.max else {
                waiting.append(id)
                continue
            }
            run.holdsSlot = true
            runs[id] = run
            acquireSlot(backend: run.backend)
            schedule(id, .createDue(now), at: now)
        }
        awaitingSlot = waiting
    }

    private func processDueRuns(now: Date) {
        var creates: [Int64] = []
        defer { beginCreates(creates, now: now) }
        while let timer = runTimers.first, timer.due <= now {
            _ = runTimers.popFirst()
            guard let run = runs[timer.run] else { continue }  // finished meanwhile
            if let started = run.startedAt, now >= started.addingTimeInterval(run.timeout),
                run.phase != .creating, run.phase != .polling
            {
                timeOut(timer.run, now: now)
                continue
            }
            switch run.phase {
            case .createDue(let at) where at <= now:
                runs[timer.run]?.phase = .creating  // taken; a second timer of the run must not add it again
                creates.append(timer.run)
            case .pollDue(let at) where at <= now: beginPoll(timer.run, now: now)
            default: break  // a stale timer: the run moved on
            }
        }
    }

    private func timeOut(_ id: Int64, now: Date) {
        guard let run = runs[id] else { return }
        // Name the image and the state the backend last reported, as the poll path does: "waiting" or
        // "create-pending" would tell the operator nothing about what to look for at the provider.
        let subject =
            run.imageID.map { "image \($0) still \(run.lastSeen?.description ?? "not active")" }
            ?? "no image yet (\(run.phase.name))"
        let message =
            "\(subject) after timeout=\(Self.format(run.timeout)); the backend may be stuck: check the image "
            + "at the provider (for TWCC, contact support if it stays QUEUED or SAVING) and delete it by hand if needed"
        finish(id, state: .timedOut, error: message, now: now)
    }

    /// Moves the runs whose create is due to `creating` in one store transaction, then starts their creates.
    private func beginCreates(_ ids: [Int64], now: Date) {
        guard !ids.isEmpty else { return }
        let records: [RunRecord?]
        do {
            records = try store.markCreating(runIDs: ids, now: now)
        } catch {
            logger.error("Store write failed", metadata: ["runs": "\(ids.count)", "error": "\(error)"])
            // Put them back to be tried at the next turn rather than leave them stuck in `creating` here.
            for id in ids { schedule(id, .createDue(now), at: now.addingTimeInterval(1)) }
            return
        }
        for (id, record) in zip(ids, records) {
            guard let record else {
                finish(id, state: .failed, error: "run \(id) could not start: its row is gone or moved on", now: now)
                continue
            }
            beginCreate(id, record: record, now: now)
        }
    }

    private func beginCreate(_ id: Int64, record: RunRecord, now: Date) {
        guard var run = runs[id] else { return }
        guard let backend = backends[run.backend] else {
            finish(id, state: .failed, error: "backend '\(run.backend)' is not configured", now: now)
            return
        }
        run.record = record
        if run.startedAt == nil {
            run.startedAt = run.record.startedAt ?? now
            runTimers.push(RunTimer(due: run.startedAt!.addingTimeInterval(run.timeout), run: id))
        }
        run.phase = .creating
        runs[id] = run
        inFlight += 1
        let description = Self.imageDescription(job: run.job, scheduled: run.record.scheduledAt, run: id)
        let (target, name, logger, pausePoint) = (run.target, run.imageName, self.logger, self.pausePoint)
        Task {
            await pausePoint?("create")
            let result: Result<ImageRef, any Error>
            do {
                result = .success(
                    try await backend.create(target: target, name: name, description: description, logger: logger))
            } catch {
                result = .failure(error)
            }
            await pausePoint?("created")
            self.createFinished(id, result: result, description: description)
        }
    }

    private func createFinished(_ id: Int64, result: Result<ImageRef, any Error>, description: String) {
        inFlight -= 1
        defer { wakeLoop() }
        guard var run = runs[id] else { return }
        let now = clock.now()
        switch result {
        case .success(let image):
            do {
                run.record = try store.markWaiting(
                    runID: id, imageID: image.id, description: description, now: now,
                    nextPollAt: now.addingTimeInterval(pacing.firstPollInterval))
            } catch {
                logger.error("Store write failed", metadata: ["run": "\(id)", "error": "\(error)"])
                finish(id, state: .failed, error: "could not record image \(image.id): \(error)", now: now)
                return
            }
            run.imageID = image.id
            run.pollInterval = pacing.firstPollInterval
            runs[id] = run
            let at = now.addingTimeInterval(pacing.firstPollInterval)
            schedule(id, .pollDue(at), at: at)
        case .failure(let error):
            let backendError = error as? SnapshotBackendError
            let transient = backendError?.isTransient ?? false
            let message = "\(error)"
            let timedOut = run.startedAt.map { now >= $0.addingTimeInterval(run.timeout) } ?? false
            if transient && run.record.attempts <= run.retries && !timedOut {
                let delay = backoff(attempt: run.record.attempts, seed: UInt64(id))
                do {
                    run.record = try store.recordRetryableFailure(
                        runID: id, error: message, nextAttemptAt: now.addingTimeInterval(delay))
                } catch {
                    logger.error("Store write failed", metadata: ["run": "\(id)", "error": "\(error)"])
                }
                runs[id] = run
                schedule(id, .createDue(now.addingTimeInterval(delay)), at: now.addingTimeInterval(delay))
                logger.warning(
                    "Create failed, will retry",
                    metadata: [
                        "job": "\(run.job)", "run": "\(id)", "error": "\(message)",
                        "attempt": "\(run.record.attempts)", "retry_in_s": "\(Int(delay))",
                    ])
            } else {
                finish(id, state: timedOut ? .timedOut : .failed, error: message, now: now)
            }
        }
    }

    private func backoff(attempt: Int, seed: UInt64) -> TimeInterval {
        let base = min(pacing.retryMax, pacing.retryBase * pow(2, Double(max(0, attempt - 1))))
        var hash = (seed &+ UInt64(attempt)) &* 0x9E37_79B9_7F4A_7C15
        hash ^= hash >> 31
        let spread = Double(hash % 1000) / 1000 * 0.5 - 0.25  // ±25 %
        return max(1, base * (1 + spread))
    }

    private func beginPoll(_ id: Int64, now: Date) {
        guard var run = runs[id], let imageID = run.imageID else { return }
        guard let backend = backends[run.backend] else {
            finish(id, state: .failed, error: "backend '\(run.backend)' is not configured", now: now)
            return
        }
        run.phase = .polling
        let resumes = run.resumesAfterRestart
        run.resumesAfterRestart = false
        runs[id] = run
        inFlight += 1
        let (logger, pausePoint, target) = (self.logger, self.pausePoint, run.target)
        Task {
            await pausePoint?("poll")
            if resumes { await backend.resumeAfterRestart(ImageRef(id: imageID), target: target, logger: logger) }
            let result: Result<ImageState, any Error>
            var size: Int64?
            do {
                let state = try await backend.status(ImageRef(id: imageID), logger: logger)
                result = .success(state)
                if state == .active { size = await Self.size(of: imageID, target: target, on: backend, logger: logger) }
            } catch {
                result = .failure(error)
            }
            self.pollFinished(id, result: result, sizeBytes: size)
        }
    }

    /// The size of a newly active image for `images`; unknown (nil) when the backend cannot tell, which never
    /// fails the run.
    private static func size(
        of imageID: String, target: String, on backend: any SnapshotBackend, logger: Logger
    ) async -> Int64? {
        do {
            return try await backend.info(of: ImageRef(id: imageID), target: target, logger: logger)?.sizeBytes
        } catch {
            logger.notice(
                "Cannot read the size of a new image", metadata: ["image": "\(imageID)", "error": "\(error)"])
            return nil
        }
    }

    private func pollFinished(_ id: Int64, result: Result<ImageState, any Error>, sizeBytes: Int64? = nil) {
        inFlight -= 1
        defer { wakeLoop() }
        guard var run = runs[id] else { return }
        let now = clock.now()
        let timedOut = run.startedAt.map { now >= $0.addingTimeInterval(run.timeout) } ?? false
        switch result {
        case .success(.active):
            finish(id, state: .succeeded, error: nil, sizeBytes: sizeBytes, now: now)
        case .success(.error(let reason)):
            finish(id, state: .failed, error: "image \(run.imageID ?? "?") failed at the backend: \(reason)", now: now)
        case .success(.gone):
            finish(id, state: .failed, error: "image \(run.imageID ?? "?") disappeared before it became active", now: now)
        case .success(let state):
            if timedOut {
                finish(
                    id, state: .timedOut,
                    error: "image \(run.imageID ?? "?") still \(state) after timeout=\(Self.format(run.timeout)); "
                        + "check it at the provider (for TWCC, contact support if it stays QUEUED or SAVING)",
                    now: now)
                return
            }
            run.lastSeen = state
            run.pollInterval = min(pacing.maxPollInterval, run.pollInterval * 2)
            let next = now.addingTimeInterval(run.pollInterval)
            do {
                run.record = try store.updatePoll(
                    runID: id, imageState: state == .queued ? .queued : .saving, nextPollAt: next, now: now)
            } catch {
                logger.error("Store write failed", metadata: ["run": "\(id)", "error": "\(error)"])
            }
            runs[id] = run
            schedule(id, .pollDue(next), at: next)
        case .failure(let error):
            let transient = (error as? SnapshotBackendError)?.isTransient ?? false
            if transient && !timedOut {
                run.pollInterval = min(pacing.maxPollInterval, run.pollInterval * 2)
                runs[id] = run
                let at = now.addingTimeInterval(run.pollInterval)
                schedule(id, .pollDue(at), at: at)
                logger.warning("Status poll failed, will retry", metadata: ["run": "\(id)", "error": "\(error)"])
            } else {
                finish(id, state: timedOut ? .timedOut : .failed, error: "\(error)", now: now)
            }
        }
    }

    private func finish(_ id: Int64, state: RunState, error: String?, sizeBytes: Int64? = nil, now: Date) {
        guard let run = runs.removeValue(forKey: id) else { return }
        runsByTarget[Self.targetKey(run.backend, run.target)]?.remove(id)
        if runsByTarget[Self.targetKey(run.backend, run.target)]?.isEmpty == true {
            runsByTarget[Self.targetKey(run.backend, run.target)] = nil
        }
        if run.holdsSlot {
            slotsInUse -= 1
            slotsByBackend[run.backend, default: 1] -= 1
        }
        do {
            _ = try store.finishRun(runID: id, state: state, error: error, sizeBytes: sizeBytes, now: now)
        } catch {
            logger.error("Store write failed", metadata: ["run": "\(id)", "error": "\(error)"])
        }
        var metadata: Logger.Metadata = [
            "event": "run.\(state.rawValue)", "job": "\(run.job)", "run": "\(id)",
            "target": "\(run.backend):\(run.target)", "state": "\(state.rawValue)",
            "scheduled": "\(Self.iso(run.record.scheduledAt))",
        ]
        if let image = run.imageID { metadata["image"] = "\(image)" }
        if let sizeBytes { metadata["size_bytes"] = "\(sizeBytes)" }
        if let started = run.startedAt { metadata["duration_ms"] = "\(Int(now.timeIntervalSince(started) * 1000))" }
        if let error { metadata["error"] = "\(error)" }
        switch state {
        case .succeeded:
            logger.info("Run succeeded", metadata: metadata)
            scheduleRetention(job: run.job)
        case .timedOut:
            if run.imageID != nil { followUnfinishedImagesLater(now: now) }
            lastFailure = "\(run.job) timed out at \(Self.iso(now))"
            logger.critical("Run timed out", metadata: metadata)
        case .missed: logger.warning("Run missed", metadata: metadata)
        default:
            lastFailure = "\(run.job) \(state.rawValue) at \(Self.iso(now))"
            logger.error("Run failed", metadata: metadata)
        }
        wakeLoop()  // a slot may have freed
    }

    // MARK: Retention

    private func scheduleRetention(job name: String) {
        guard let job = jobs[name]?.job, !job.options.retention.keepsEverything else { return }
        guard !retentionRunning.contains(name) else {
            retentionPending.insert(name)
            return
        }
        let now = clock.now()
        let plan: RetentionPlan
        let images: [ImageRecord]
        do {
            images = try store.images(job: name)
            plan = retentionPlan(for: job, images: images, now: now)
            _ = try store.recordRetentionDecisions(
                plan.decisions.compactMap { decision in
                    guard let image = images.first(where: { $0.id == decision.id }) else { return nil }
                    let reason = decision.reasons.joined(separator: "; ")
                    return (image.key, decision.action == .keep ? .keep(reason: reason) : .delete(reason: reason))
                })
        } catch {
            logger.error("Retention failed", metadata: ["job": "\(name)", "error": "\(error)"])
            return
        }
        let deletions = plan.deletions.compactMap { decision in
            images.first(where: { $0.id == decision.id }).map { ($0, decision.reasons.joined(separator: "; ")) }
        }
        guard !deletions.isEmpty else { return }
        retentionRunning.insert(name)
        inFlight += 1
        let (store, backends, clock, logger, pausePoint) = (
            self.store, self.backends, self.clock, self.logger, self.pausePoint
        )
        Task {
            for (image, reason) in deletions {
                await Self.deleteImage(
                    image, reason: reason, store: store, backends: backends, clock: clock, logger: logger,
                    pausePoint: pausePoint)
            }
            self.retentionFinished(job: name)
        }
    }

    /// Applies retention to `job` now, as after a successful run, and returns the plan being carried out.
    ///
    /// Deletions run in the background like after a run; a pass already running for the job is followed by
    /// another one.
    public func pruneNow(job name: String) throws -> RetentionPlan {
        let plan = try retentionPlan(job: name)
        scheduleRetention(job: name)
        return plan
    }

    /// The plan retention would carry out for `job` now: the data behind `prune --dry-run`.
    public func retentionPlan(job name: String) throws -> RetentionPlan {
        guard let job = jobs[name]?.job else { throw SchedulerError("no job named '\(name)'") }
        return retentionPlan(for: job, images: try store.images(job: name), now: clock.now())
    }

    private func retentionPlan(for job: Job, images: [ImageRecord], now: Date) -> RetentionPlan {
        let zone = TimeZone(identifier: job.zone.identifier) ?? TimeZone(identifier: "UTC")!
        let candidates = images.filter { $0.state != .deleted }.map {
            RetentionImage(id: $0.id, createdAt: $0.createdAt, state: $0.state.rawValue, pinned: $0.pinned)
        }
        return RetentionPlanner(policy: job.options.retention, timeZone: zone).plan(for: candidates, now: now)
    }

    /// Deletes one image the plan marked, re-checking the store first: an image pinned meanwhile stays.
    private static func deleteImage(
        _ image: ImageRecord, reason: String, store: SnapcronDatabase, backends: [String: any SnapshotBackend],
        clock: any SchedulerClock, logger: Logger, pausePoint: (@Sendable (String) async -> Void)?
    ) async {
        var metadata: Logger.Metadata = [
            "job": "\(image.job)", "image": "\(image.id)", "target": "\(image.backend):\(image.target)",
        ]
        do {
            guard let current = try store.image(id: image.id, backend: image.backend), !current.pinned,
                current.state == .active
            else { return }
            guard let backend = backends[image.backend] else {
                logger.error("Retention cannot delete: backend not configured", metadata: metadata)
                return
            }
            await pausePoint?("delete")
            try await backend.delete(ImageRef(id: image.id), logger: logger)
            await pausePoint?("deleted")
            _ = try store.markImageDeleted(id: image.id, backend: image.backend, now: clock.now(), reason: reason)
            metadata["event"] = "image.deleted"
            metadata["state"] = "deleted"
            metadata["reason"] = "\(reason)"
            logger.notice("Image deleted", metadata: metadata)
        } catch {
            metadata["error"] = "\(error)"
            logger.error("Image delete failed; it is kept and retried at the next retention", metadata: metadata)
        }
    }

    private func retentionFinished(job name: String) {
        inFlight -= 1
        retentionRunning.remove(name)
        if retentionPending.remove(name) != nil { scheduleRetention(job: name) }
        wakeLoop()
    }

    // MARK: Requests (control socket, signals)

    /// Replaces the schedule. Unchanged jobs keep their place; new ones start from now; removed ones stop firing
    /// (their unfinished runs still finish).
    public func apply(jobs newJobs: [Job]) {
        let now = clock.now()
        var next: [String: JobEntry] = [:]
        var maxGeneration = jobs.values.map(\.generation).max() ?? 0
        // A job that comes back after a reload without it keeps the pause the store remembers, as on a restart.
        var storedPauses: Set<String>?
        func wasPaused(_ name: String) -> Bool {
            if let paused = jobs[name]?.paused { return paused }
            guard started else { return false }  // `prepare` reads the store
            if storedPauses == nil {
                do {
                    storedPauses = Set(try store.allJobStates().filter(\.paused).map(\.name))
                } catch {
                    logger.error("Store read failed; re-added jobs start unpaused", metadata: ["error": "\(error)"])
                    storedPauses = []
                }
            }
            return storedPauses?.contains(name) ?? false
        }
        for job in newJobs.map(\.withoutSourceText) {
            if let old = jobs[job.name], old.job == job {
                next[job.name] = old
                continue
            }
            maxGeneration += 1
            let entry = JobEntry(
                job: job, generation: maxGeneration, paused: job.options.paused || wasPaused(job.name),
                lastHandled: jobs[job.name]?.lastHandled)
            if let old = jobs[job.name], old.job.options.paused && !job.options.paused {
                // Taking `paused=yes` off the line resumes the job, for good: also after a restart.
                entry.paused = false
                do {
                    _ = try store.setPaused(name: job.name, false, now: now)
                } catch {
                    logger.error("Store write failed", metadata: ["job": "\(job.name)", "error": "\(error)"])
                }
            }
            next[job.name] = entry
            let after = max(entry.lastHandled ?? now, now)
            if started, let scheduled = job.expression.nextDate(after: after, in: job.zone) {
                queue.push(queueEntry(entry, scheduled: scheduled))
            }
        }
        jobs = next
        publishPausedJobs()
        logger.info("Schedule applied", metadata: ["event": "schedule.loaded", "jobs": "\(newJobs.count)"])
        wakeLoop()
    }

    /// Runs `job` now, outside its schedule.
    public func trigger(job name: String) throws -> RunRecord {
        guard let entry = jobs[name] else { throw SchedulerError("no job named '\(name)'") }
        if entry.job.options.overlap == .skip,
            let busy = unfinishedRun(backend: entry.job.backend, target: entry.job.target)
        {
            throw SchedulerError("run \(busy) of \(entry.job.qualifiedTarget) is still unfinished (overlap=skip)")
        }
        let now = clock.now()
        let instant = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        guard let record = fire(entry, scheduled: instant, trigger: .manual, now: now) else {
            throw SchedulerError(
                "job '\(name)' already has a run for \(Self.iso(instant)) (fired or triggered this second); try again")
        }
        wakeLoop()
        return record
    }

    /// Pauses or resumes a job; persisted in the store.
    public func setPaused(job name: String, _ paused: Bool) throws {
        guard let entry = jobs[name] else { throw SchedulerError("no job named '\(name)'") }
        _ = try store.setPaused(name: name, paused, now: clock.now())
        entry.paused = paused
        jobs[name] = entry
        publishedPausedJobs.withLock { if paused { $0.insert(name) } else { $0.remove(name) } }
    }

    /// What the scheduler is doing now.
    public func snapshot() -> SchedulerSnapshot {
        let next = queue.first.flatMap { top in jobs[top.job].map { _ in (job: top.job, at: top.scheduled) } }
        return SchedulerSnapshot(
            jobCount: jobs.count, pausedJobs: pausedJobs.sorted(),  // the published set: no scan of every job
            runningRuns: runs.values.sorted { $0.record.id < $1.record.id }.map {
                SchedulerSnapshot.RunningRun(
                    id: $0.record.id, job: $0.job, phase: $0.phase.name, imageID: $0.imageID, startedAt: $0.startedAt)
            },
            nextFire: next, lastLoopAt: lastLoopAt, loopIterations: loopIterations)
    }

    /// `3 jobs, 1 running, next web at 2026-11-29T01:00:00Z, last failure: db at ...`.
    public func statusLine() -> String {
        var parts = ["\(jobs.count) job\(jobs.count == 1 ? "" : "s")", "\(runs.count) running"]
        if let next = queue.first { parts.append("next \(next.job) at \(Self.iso(next.scheduled))") }
        if let failure = lastFailure { parts.append("last failure: \(failure)") }
        return parts.joined(separator: ", ")
    }

    /// The names of the paused jobs, read without waiting for the actor: the `jobs` control method asks on every
    /// call, and a flood of them must not queue in front of a fire.
    public nonisolated var pausedJobs: Set<String> { publishedPausedJobs.withLock { $0 } }

    /// Publishes the paused set after a change: a scan that copies no job.
    private func publishPausedJobs() {
        var names: Set<String> = []
        for index in jobs.indices where jobs.values[index].paused {
            names.insert(jobs.keys[index])
        }
        publishedPausedJobs.withLock { $0 = names }
    }

    /// The jobs as loaded, by name.
    public func currentJobs() -> [Job] { jobs.values.map(\.job).sorted { $0.name < $1.name } }

    /// The next fire of each job (nominal instant), for `jobs` and `next`.
    public func nextFires() -> [String: Date] {
        let now = clock.now()
        var result: [String: Date] = [:]
        for (name, entry) in jobs {
            let after = max(entry.lastHandled ?? now, now)
            if let date = entry.job.expression.nextDate(after: after, in: entry.job.zone) { result[name] = date }
        }
        return result
    }

    // MARK: Names

    /// `snapcron-<job>-<UTC stamp>`, e.g. `snapcron-web-20261129T010000Z`.
    public static func imageName(job: String, scheduled: Date) -> String {
        "snapcron-\(job)-\(stamp(scheduled))"
    }

    /// Carries the marker that lets backends (and people) tell snapcron's images from others.
    public static func imageDescription(job: String, scheduled: Date, run: Int64) -> String {
        "created by snapcron (snapcron:job=\(job) scheduled=\(iso(scheduled)) run=\(run))"
    }

    static func stamp(_ date: Date) -> String {
        let t = LocalTimeFormatter.utcParts(date)
        return "\(t.0)\(t.1)\(t.2)T\(t.3)\(t.4)\(t.5)Z"
    }

    static func iso(_ date: Date) -> String { CronFormat.iso8601(date, in: .utc).replacingOccurrences(of: "+00:00", with: "Z") }

    static func format(_ seconds: TimeInterval) -> String {
        Duration.seconds(Int64(seconds.rounded())).optionDescription
    }
}

extension Duration {
    var seconds: TimeInterval {
        TimeInterval(components.seconds) + TimeInterval(components.attoseconds) * 1e-18
    }
}

/// Zero-padded UTC date parts for names.
enum LocalTimeFormatter {
    static func utcParts(_ date: Date) -> (String, String, String, String, String, String) {
        let iso = CronFormat.iso8601(date, in: .utc)  // 2026-11-29T01:00:00+00:00
        let c = Array(iso)
        return (
            String(c[0..<4]), String(c[5..<7]), String(c[8..<10]), String(c[11..<13]), String(c[14..<16]),
            String(c[17..<19])
        )
    }
}

import CronExpression
import Foundation
import SnapshotBackend

/// What the store said at start-up, for ``RunEngine/start(now:state:)``.
struct EngineStartState: Sendable {
    var jobStates: [JobStateRecord]
    var unfinishedRuns: [RunRecord]
    var jobsWithImages: Set<String>
    var hasLateImages: Bool
    var latestRecorded: Date?
    /// The store's installation id, written into image markers.
    var installationID: String?
    /// How long this daemon's hold on its runs lasts without a renewal; nil when no other daemon shares the store.
    var runLease: TimeInterval? = nil
}

/// The run engine's decisions, and nothing else: which fire runs, which run may create now, when to poll, when a
/// run ends and how, when retention, sweeps and upkeep are due.
///
/// It does no I/O and reads no clock: `tick(now:events:)` takes the time and what happened (store answers,
/// backend results) and returns what to do as ``EngineAction``s, which the executor carries out. Every decision
/// can therefore be replayed and checked on a simulated clock.
struct RunEngine {
    let limits: ConcurrencyLimits
    let pacing: RunPacing

    /// A class so that the dictionary holds a pointer: a dictionary of 100,000 inline jobs took over 100 MB.
    final class JobEntry {
        var job: Job
        var generation: Int
        var paused: Bool
        var lastHandled: Date?
        /// The scheduled instant of the job's live queue entry.
        var pending: Date?

        init(job: Job, generation: Int, paused: Bool, lastHandled: Date? = nil) {
            self.job = job
            self.generation = generation
            self.paused = paused
            self.lastHandled = lastHandled
        }
    }

    private(set) var jobs: [String: JobEntry] = [:]
    private var generation = 0
    private var fireQueue = MinHeap<FireEntry>()
    private var staleFireEntries = 0
    private(set) var runs: [Int64: EngineRun] = [:]
    private var timers = MinHeap<RunTimer>()
    private var awaiting: [String: RunQueue] = [:]
    private var runsByTarget: [String: Set<Int64>] = [:]
    /// Targets with a claim sent to the store and not yet answered.
    private var claimsInFlight: [String: Int] = [:]
    /// Scheduled claims the store failed to take, sent again at `nextClaimRetry`.
    private var claimRetries: [RunClaim] = []
    private var nextClaimRetry: Date?
    private var createCalls: [String: Int] = [:]
    private var unfinishedImages: [String: Int] = [:]
    private var pollQueues: [String: MinHeap<RunTimer>] = [:]
    private var pollPassesInFlight: Set<String> = []
    /// When each backend may have its next poll pass (``RunPacing/pollPassGap`` after the last one began).
    private var nextPollPass: [String: Date] = [:]
    private var retentionRunning: Set<String> = []
    private var retentionPending: Set<String> = []
    /// Jobs whose retention waits for a free pass (see ``RunPacing/maxConcurrentRetentions``), taken from the end:
    /// a pass asked after a run goes before the start-up backlog (every job with images, checked once).
    private var retentionBacklog: [String] = []
    private var retentionQueued: Set<String> = []
    private var nextLateImageCheck: Date?
    private var nextSweep: Date?
    private var sweepRunning = false
    private var nextHistoryPrune: Date?
    private var lastNow: Date?
    /// Image names of fires scheduled after this cannot have been used by an earlier process: its fires were all
    /// due before it stopped, so before this one started (or before the store's latest record, if the clock was
    /// stepped back since).
    private var freshNamesAfter = Date.distantFuture
    private var installationID: String?
    /// Cluster mode: how long a lease on runs lasts, and when to renew it next (a third of the lease).
    private var runLease: TimeInterval?
    private var nextLeaseRenewal: Date?
    private(set) var started = false
    /// A pause read from the store changed a job's state since the scheduler last published the paused set.
    var pausesChanged = false
    private(set) var lastFailure: String?

    init(jobs: [Job], limits: ConcurrencyLimits, pacing: RunPacing) {
        self.limits = limits
        self.pacing = pacing
        self.jobs.reserveCapacity(jobs.count)
        for job in jobs {
            generation += 1
            self.jobs[job.name] = JobEntry(
                job: job.withoutSourceText, generation: generation, paused: job.options.paused)
        }
    }

    // MARK: Start

    /// Reads the store's state once: job state, unfinished runs to resume, work left from a previous process.
    mutating func start(now: Date, state: EngineStartState) -> [EngineAction] {
        var out: [EngineAction] = []
        started = true
        freshNamesAfter = max(now, state.latestRecorded ?? now)
        installationID = state.installationID
        runLease = state.runLease
        nextLeaseRenewal = state.runLease.map { now.addingTimeInterval($0 / 3) }
        var clampTo: Date?
        if let latest = state.latestRecorded, latest > now.addingTimeInterval(pacing.clockStepTolerance) {
            clampTo = now
            out.append(
                .note(
                    level: .warning, message: "Clock is behind the state's latest record: it was stepped back",
                    fields: [
                        "event": "clock.stepped_back", "latest_recorded": Self.iso(latest), "now": Self.iso(now),
                    ]))
            out.append(.clampLastScheduled(notAfter: now))
        }
        let states = Dictionary(state.jobStates.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var entries: [FireEntry] = []
        entries.reserveCapacity(jobs.count)
        for (name, entry) in jobs {
            var last = states[name]?.lastScheduledAt
            if let bound = clampTo, let value = last, value > bound { last = bound }
            entry.lastHandled = last
            entry.paused = entry.job.options.paused || (states[name]?.paused ?? false)
            if let next = firstFire(of: entry, now: now) { entries.append(next) }
        }
        fireQueue.replaceAll(with: entries)
        for record in state.unfinishedRuns { resume(record, now: now, out: &out) }
        if state.hasLateImages { followLateImages(now: now) }
        retentionBacklog = jobs.keys.filter { state.jobsWithImages.contains($0) }.sorted(by: >)
        retentionQueued = Set(retentionBacklog)
        nextSweep = now.addingTimeInterval(pacing.firstSweepDelay)
        nextHistoryPrune = now.addingTimeInterval(pacing.firstSweepDelay)
        lastNow = now
        return out
    }

    private func firstFire(of entry: JobEntry, now: Date) -> FireEntry? {
        // A new job starts from now: there is nothing of it to catch up.
        let after = entry.lastHandled ?? now
        guard let scheduled = entry.job.expression.nextDate(after: after, in: entry.job.zone) else { return nil }
        entry.pending = scheduled
        return queueEntry(entry, scheduled: scheduled)
    }

    private func queueEntry(_ entry: JobEntry, scheduled: Date) -> FireEntry {
        FireEntry(
            due: scheduled.addingTimeInterval(Self.jitter(for: entry.job, scheduled: scheduled)),
            scheduled: scheduled, job: entry.job.name, generation: entry.generation)
    }

    /// Picks up a run that was unfinished when the daemon stopped, or that a lapsed daemon of a cluster left.
    private mutating func resume(_ record: RunRecord, now: Date, out: inout [EngineAction], takenOver: Bool = false) {
        var run = engineRun(for: record)
        run.takenOver = takenOver
        if record.state == .claimed, record.attempts == 0, let startBy = run.startBy, now > startBy {
            // Never started, and the outage outlasted its deadline: it must not hold its target against the
            // fresh catch-up fire.
            out.append(
                .finish(finishOrder(run, state: .missed, error: "not started before its deadline (daemon was down)")))
            return
        }
        // A clock stepped back while the daemon was down leaves the run's recorded times ahead of now: as for a
        // step seen while running (`detectBackwardStep`), they count from now, or the run would wait out the
        // step before its retry and its timeout, holding its target all that time.
        if let started = run.startedAt, started > now { run.startedAt = now }
        switch record.state {
        case .waiting where record.imageID != nil:
            run.holdsQuota = true
            // Past its timeout, the first poll is the last: it decides between late success and a time-out.
            run.finalPoll = run.deadline.map { now >= $0 } ?? false
            run.resumesAfterRestart = !run.finalPoll
            run.phase = .waiting(now)
        case .claimed where record.attempts > 0:
            let retry = record.nextPollAt ?? now
            run.phase = .retryDue(retry > now.addingTimeInterval(pacing.retryMax) ? now : max(now, retry))
        default:
            break  // claimed, or creating: create again by name (the backend finds the image if it was made)
        }
        insert(run)
        if case .waiting(let at) = run.phase { pollQueues[run.backend, default: MinHeap()].push(RunTimer(due: at, run: run.id)) }
        if case .retryDue(let at) = run.phase { timers.push(RunTimer(due: at, run: run.id)) }
        if run.phase == .queued { enqueue(run) }
    }

    // MARK: The tick

    /// Takes what happened since the last tick, then handles whatever is due at `now`.
    mutating func tick(now: Date, events: [EngineEvent]) -> [EngineAction] {
        var out: [EngineAction] = []
        detectBackwardStep(now: now, out: &out)
        for event in events { handle(event, now: now, out: &out) }
        retryFailedClaims(now: now, out: &out)
        processDueFires(now: now, out: &out)
        processTimers(now: now, out: &out)
        admit(now: now, out: &out)
        startPollPasses(now: now, out: &out)
        startQueuedRetentions(out: &out)
        if let check = nextLateImageCheck, now >= check {
            nextLateImageCheck = nil
            out.append(.checkLateImages)
        }
        if let renewal = nextLeaseRenewal, let lease = runLease, now >= renewal {
            nextLeaseRenewal = now.addingTimeInterval(lease / 3)
            out.append(.renewRunLease)
        }
        if let sweep = nextSweep, now >= sweep, !sweepRunning {
            nextSweep = nil
            sweepRunning = true
            var targets: [String: Set<String>] = [:]
            for entry in jobs.values { targets[entry.job.backend, default: []].insert(entry.job.target) }
            out.append(.sweep(targets: targets))
        }
        if let prune = nextHistoryPrune, now >= prune {
            nextHistoryPrune = now.addingTimeInterval(pacing.historyPruneInterval)
            out.append(.pruneHistory(olderThan: now.addingTimeInterval(-pacing.historyKeep)))
        }
        lastNow = max(lastNow ?? now, now)
        return out
    }

    /// The longest timeout of any job's hook commands (how long a stopping daemon may wait for a `post`).
    var longestHookTimeout: Duration {
        jobs.values.lazy.compactMap { $0.job.options.hooks?.timeout }.max() ?? .zero
    }

    /// When the next tick is needed (at most a day ahead).
    func nextWake(now: Date) -> Date {
        var wake = now.addingTimeInterval(86_400)
        if let first = fireQueue.first { wake = min(wake, first.due) }
        if let first = timers.first { wake = min(wake, first.due) }
        for (backend, queue) in pollQueues where !pollPassesInFlight.contains(backend) {
            if let first = queue.first { wake = min(wake, max(first.due, nextPollPass[backend] ?? first.due)) }
        }
        if !retentionBacklog.isEmpty && retentionRunning.count < pacing.maxConcurrentRetentions { wake = now }
        // While runs are under way, a wake-up lost in a race costs at most this long (an idle daemon still sleeps).
        if !runs.isEmpty { wake = min(wake, now.addingTimeInterval(pacing.maxPollInterval)) }
        for date in [nextLateImageCheck, nextSweep, nextHistoryPrune, nextLeaseRenewal, nextClaimRetry]
            .compactMap({ $0 })
        {
            wake = min(wake, date)
        }
        return wake
    }

    // MARK: Clock steps

    /// A wall clock that went backwards (a bad RTC corrected by NTP) would leave every job waiting for the bogus
    /// future it last saw: bring last handled fires, run times and queued fires back to now.
    private mutating func detectBackwardStep(now: Date, out: inout [EngineAction]) {
        guard let last = lastNow, now < last.addingTimeInterval(-pacing.clockStepTolerance) else { return }
        out.append(
            .note(
                level: .warning, message: "Clock stepped back",
                fields: ["event": "clock.stepped_back", "from": Self.iso(last), "to": Self.iso(now)]))
        out.append(.clampLastScheduled(notAfter: now))
        lastNow = now
        // Timers on the wall clock would wait out the step: the lease renewal (other nodes would take this one's
        // runs) and the claims to send again (their fires would pass their deadlines).
        if let renewal = nextLeaseRenewal, renewal > now { nextLeaseRenewal = now }
        if let retry = nextClaimRetry, retry > now { nextClaimRetry = now }
        var entries: [FireEntry] = []
        for entry in jobs.values {
            if let handled = entry.lastHandled, handled > now { entry.lastHandled = now }
            if let pending = entry.pending, pending > now { entry.pending = nil }
            if let pending = entry.pending {
                entries.append(queueEntry(entry, scheduled: pending))
            } else if let next = firstFire(of: entry, now: now) {
                entries.append(next)
            }
        }
        fireQueue.replaceAll(with: entries)
        staleFireEntries = 0
        nextPollPass = [:]
        for (id, var run) in runs {
            if let started = run.startedAt, started > now {
                run.startedAt = now
                if let deadline = run.deadline { timers.push(RunTimer(due: deadline, run: id)) }
            }
            switch run.phase {
            case .waiting(let at) where at > now.addingTimeInterval(pacing.maxPollInterval):
                run.phase = .waiting(now)
                pollQueues[run.backend, default: MinHeap()].push(RunTimer(due: now, run: id))
            case .retryDue(let at) where at > now.addingTimeInterval(pacing.retryMax):
                run.phase = .retryDue(now)
                timers.push(RunTimer(due: now, run: id))
            default: break
            }
            runs[id] = run
        }
        if let check = nextLateImageCheck, check > now.addingTimeInterval(pacing.unfinishedImageInterval) {
            nextLateImageCheck = now
        }
        if let sweep = nextSweep, sweep > now.addingTimeInterval(pacing.sweepInterval) { nextSweep = now }
        if let prune = nextHistoryPrune, prune > now.addingTimeInterval(pacing.historyPruneInterval) {
            nextHistoryPrune = now.addingTimeInterval(pacing.historyPruneInterval)
        }
    }

    // MARK: Fires

    private mutating func processDueFires(now: Date, out: inout [EngineAction]) {
        var claims: [RunClaim] = []
        var claimedTargets: Set<String> = []
        while let top = fireQueue.first, top.due <= now {
            _ = fireQueue.popFirst()
            guard let entry = jobs[top.job], entry.generation == top.generation, entry.pending == top.scheduled else {
                staleFireEntries = max(0, staleFireEntries - 1)
                continue
            }
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
                out.append(
                    .note(
                        level: .warning, message: "Missed fires not recorded one by one",
                        fields: ["event": "run.missed", "job": job.name, "count": "\(dropped)"]))
            }
            for older in fires.dropLast() {
                out.append(
                    .recordMissed(
                        job: job.name, scheduled: older,
                        reason: "a later fire was due too; only the newest missed fire runs", alert: nil))
            }
            let jitter = Self.jitter(for: job, scheduled: newest)
            let lateness = now.timeIntervalSince(newest)
            if lateness > job.options.deadline.timeInterval + jitter {
                out.append(
                    .recordMissed(
                        job: job.name, scheduled: newest,
                        reason: "\(Self.format(lateness)) late, past deadline=\(job.options.deadline.optionDescription)",
                        alert: job.options.hooks.map {
                            MissedFireAlert(hooks: $0, backend: job.backend, target: job.target)
                        }))
            } else {
                let late = lateness - jitter > pacing.lateness || fires.count > 1
                let trigger: RunTrigger = late ? .catchUp : .schedule
                let key = Self.targetKey(job.backend, job.target)
                if let reason = refusal(entry, trigger: trigger, claimedThisTick: claimedTargets.contains(key)) {
                    out.append(.recordSkipped(job: job.name, scheduled: newest, trigger: trigger, reason: reason))
                } else {
                    claims.append(claim(job, scheduled: newest, trigger: trigger))
                    claimedTargets.insert(key)
                }
            }
            entry.lastHandled = newest
            entry.pending = nil
            if let next = job.expression.nextDate(after: newest, in: job.zone) {
                entry.pending = next
                fireQueue.push(queueEntry(entry, scheduled: next))
            }
        }
        if !claims.isEmpty {
            for claim in claims { claimsInFlight[Self.targetKey(claim.backend, claim.target), default: 0] += 1 }
            out.append(.claim(claims))
        }
        if staleFireEntries > max(1024, jobs.count) { rebuildFireQueue() }
    }

    /// Why a fire may not be claimed (paused job, busy target), or nil.
    private func refusal(_ entry: JobEntry, trigger: RunTrigger, claimedThisTick: Bool) -> String? {
        let job = entry.job
        if trigger != .manual && entry.paused { return "job is paused" }
        guard trigger != .manual, job.options.overlap == .skip else { return nil }
        let key = Self.targetKey(job.backend, job.target)
        if let busy = runsByTarget[key]?.min() {
            return "run \(busy) of \(job.qualifiedTarget) is still unfinished (overlap=skip)"
        }
        if claimedThisTick || claimsInFlight[key, default: 0] > 0 {
            return "another fire of \(job.qualifiedTarget) starts at the same time (overlap=skip)"
        }
        return nil
    }

    /// Sends again the claims the store failed to take. As after downtime, only each job's newest fire runs, and
    /// only within its deadline; older ones, or one a later fire due now supersedes, are recorded missed.
    private mutating func retryFailedClaims(now: Date, out: inout [EngineAction]) {
        guard let due = nextClaimRetry, now >= due else { return }
        nextClaimRetry = nil
        let newestByJob = Dictionary(claimRetries.map { ($0.job, $0) }) { $0.scheduledAt >= $1.scheduledAt ? $0 : $1 }
        var claims: [RunClaim] = []
        for claim in claimRetries {
            guard let entry = jobs[claim.job] else { continue }  // removed by a reload meanwhile
            let job = entry.job
            let lateness = now.timeIntervalSince(claim.scheduledAt)
            let superseded =
                newestByJob[claim.job]?.scheduledAt != claim.scheduledAt || (entry.pending.map { $0 <= now } ?? false)
                || (entry.lastHandled.map { $0 > claim.scheduledAt } ?? false)
            let pastDeadline = lateness > job.options.deadline.timeInterval + Self.jitter(for: job, scheduled: claim.scheduledAt)
            guard superseded || pastDeadline else {
                var retried = claim
                if lateness > pacing.lateness { retried.trigger = .catchUp }
                claims.append(retried)
                continue
            }
            out.append(
                .recordMissed(
                    job: claim.job, scheduled: claim.scheduledAt,
                    reason: superseded
                        ? "the store could not record the fire, and a later fire was due too"
                        : "the store could not record the fire until \(Self.format(lateness)) late, past "
                            + "deadline=\(job.options.deadline.optionDescription)",
                    alert: superseded
                        ? nil : job.options.hooks.map { MissedFireAlert(hooks: $0, backend: job.backend, target: job.target) }))
        }
        claimRetries = []
        guard !claims.isEmpty else { return }
        for claim in claims { claimsInFlight[Self.targetKey(claim.backend, claim.target), default: 0] += 1 }
        out.append(.claim(claims, retried: true))
    }

    private func claim(_ job: Job, scheduled: Date, trigger: RunTrigger) -> RunClaim {
        RunClaim(
            job: job.name, scheduledAt: scheduled, trigger: trigger,
            imageName: Self.imageName(job: job.name, scheduled: scheduled), backend: job.backend, target: job.target)
    }

    private mutating func rebuildFireQueue() {
        var entries: [FireEntry] = []
        entries.reserveCapacity(jobs.count)
        for entry in jobs.values {
            if let pending = entry.pending { entries.append(queueEntry(entry, scheduled: pending)) }
        }
        fireQueue.replaceAll(with: entries)
        staleFireEntries = 0
    }

    // MARK: Events

    private mutating func handle(_ event: EngineEvent, now: Date, out: inout [EngineAction]) {
        switch event {
        case .claimed(let claims, let records):
            for (claim, record) in zip(claims, records) {
                let key = Self.targetKey(claim.backend, claim.target)
                claimsInFlight[key, default: 1] -= 1
                if claimsInFlight[key] == 0 { claimsInFlight[key] = nil }
                guard let record, runs[record.id] == nil else { continue }
                if record.state == .claimed && record.attempts == 0 {
                    track(record, now: now)
                } else {
                    // A retried claim's own run that was taken back meanwhile, or went further: resumed as it is.
                    resume(record, now: now, out: &out, takenOver: true)
                }
            }
        case .claimFailed(let claims, _):
            for claim in claims {
                let key = Self.targetKey(claim.backend, claim.target)
                claimsInFlight[key, default: 1] -= 1
                if claimsInFlight[key] == 0 { claimsInFlight[key] = nil }
            }
            // A manual trigger's caller got the error; a scheduled fire is tried again until its deadline.
            claimRetries += claims.filter { $0.trigger != .manual }
            if !claimRetries.isEmpty, nextClaimRetry == nil {
                nextClaimRetry = now.addingTimeInterval(pacing.claimRetryInterval)
            }
        case .createsNotStarted(let ids, _):
            for id in ids {
                guard var run = runs[id], run.phase == .creating else { continue }
                releaseCreateCall(run.backend)
                releaseQuota(&run)
                run.attempts = max(0, run.attempts - 1)
                run.phase = .retryDue(now.addingTimeInterval(1))
                runs[id] = run
                timers.push(RunTimer(due: now.addingTimeInterval(1), run: id))
            }
        case .createFinished(let id, let outcome):
            createFinished(id, outcome: outcome, now: now, out: &out)
        case .runWriteFenced:
            if runLease != nil { nextLeaseRenewal = now }
        case .runLeaseLost:
            let lost = runs.keys.sorted()
            for id in lost { forget(id) }
            out.append(
                .note(
                    level: .warning, message: "Lease on runs lapsed; other nodes may resume them",
                    fields: ["event": "cluster.lease_lost", "runs": "\(lost.count)"]))
        case .storedPausesRead(let paused):
            for (name, entry) in jobs {
                let isPaused = entry.job.options.paused || paused.contains(name)
                if entry.paused != isPaused {
                    entry.paused = isPaused
                    pausesChanged = true
                }
            }
        case .runsTakenOver(let records):
            for record in records where runs[record.id] == nil {
                resume(record, now: now, out: &out, takenOver: true)
            }
        case .pollFinished(let backend, let outcomes):
            pollFinished(backend: backend, outcomes: outcomes, now: now, out: &out)
        case .runRecorded(let job, let state, let hasImage):
            if state == .succeeded { requestRetention(job: job, out: &out) }
            // A run that ends otherwise with an image (timed out, cancelled) leaves it to the late-image checks.
            if state != .succeeded && state != .failed && hasImage { followLateImages(now: now) }
        case .retentionFinished(let job):
            retentionRunning.remove(job)
            if retentionPending.remove(job) != nil { requestRetention(job: job, out: &out) }
            startQueuedRetentions(out: &out)
        case .lateImagesChecked(let stillOpen, let activeJobs):
            for job in activeJobs.sorted() { requestRetention(job: job, out: &out) }
            if stillOpen { followLateImages(now: now) }
        case .sweepFinished(let recordedJobs):
            sweepRunning = false
            nextSweep = now.addingTimeInterval(pacing.sweepInterval)
            for job in recordedJobs.sorted() { requestRetention(job: job, out: &out) }
            if !recordedJobs.isEmpty { followLateImages(now: now) }
        case .imageAdopted(let job, let state):
            if state == .active { requestRetention(job: job, out: &out) }
            if state == .queued || state == .saving { followLateImages(now: now) }
        }
    }

    private mutating func track(_ record: RunRecord, now: Date) {
        let run = engineRun(for: record)
        insert(run)
        enqueue(run)
    }

    /// A stored run as the engine follows it, with its job's current options (defaults for a removed job).
    private func engineRun(for record: RunRecord) -> EngineRun {
        let job = jobs[record.job]?.job
        let options = job?.options ?? JobOptions()
        let jitter = job.map { Self.jitter(for: $0, scheduled: record.scheduledAt) } ?? 0
        return EngineRun(
            id: record.id, job: record.job, backend: record.backend ?? job?.backend ?? "",
            target: record.target ?? job?.target ?? "", scheduledAt: record.scheduledAt, trigger: record.trigger,
            imageName: record.imageName ?? Self.imageName(job: record.job, scheduled: record.scheduledAt),
            timeout: options.timeout.timeInterval, retries: options.retries,
            startBy: record.trigger == .manual
                ? nil : record.scheduledAt.addingTimeInterval(options.deadline.timeInterval + jitter),
            attempts: record.attempts, phase: .queued, startedAt: record.startedAt,
            pollInterval: pacing.firstPollInterval, imageID: record.imageID)
    }

    private mutating func insert(_ run: EngineRun) {
        runs[run.id] = run
        runsByTarget[Self.targetKey(run.backend, run.target), default: []].insert(run.id)
        if run.holdsQuota { unfinishedImages[run.backend, default: 0] += 1 }
        if let startBy = run.startBy, run.phase == .queued { timers.push(RunTimer(due: startBy, run: run.id)) }
        if let deadline = run.deadline { timers.push(RunTimer(due: deadline, run: run.id)) }
    }

    private mutating func enqueue(_ run: EngineRun) {
        awaiting[run.backend, default: RunQueue()].append(run.id)
    }

    // MARK: Admission

    /// Starts the creates that the backends' limits allow: a few create calls at a time per backend, and no more
    /// unfinished images than the backend's quota. Waiting for images to become active blocks nobody else.
    private mutating func admit(now: Date, out: inout [EngineAction]) {
        var orders: [CreateOrder] = []
        for backend in awaiting.keys.sorted() {
            guard var queue = awaiting[backend] else { continue }
            let callLimit = limits.createCalls(for: backend)
            let quota = limits.unfinishedImages(for: backend)
            while let id = queue.first {
                guard var run = runs[id], run.phase == .queued else {
                    queue.removeFirst()
                    continue
                }
                if let startBy = run.startBy, now > startBy, run.attempts == 0 {
                    queue.removeFirst()
                    end(&run, state: .missed, error: "waited for a free create slot past its deadline", now: now, out: &out)
                    continue
                }
                if createCalls[backend, default: 0] >= callLimit { break }
                if !run.holdsQuota && unfinishedImages[backend, default: 0] >= quota { break }
                queue.removeFirst()
                if !run.holdsQuota {
                    run.holdsQuota = true
                    unfinishedImages[backend, default: 0] += 1
                }
                createCalls[backend, default: 0] += 1
                run.attempts += 1
                run.phase = .creating
                if run.startedAt == nil {
                    run.startedAt = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
                    timers.push(RunTimer(due: run.deadline!, run: id))
                }
                runs[id] = run
                orders.append(
                    CreateOrder(
                        run: id, job: run.job, backend: backend, target: run.target, imageName: run.imageName,
                        description: Self.imageDescription(
                            job: run.job, scheduled: run.scheduledAt, run: id, installation: installationID),
                        nameIsFresh: run.attempts == 1 && run.scheduledAt > freshNamesAfter && !run.takenOver,
                        deadline: run.deadline!,
                        hooks: jobs[run.job]?.job.options.hooks, scheduledAt: run.scheduledAt,
                        firstAttempt: run.attempts == 1))
            }
            awaiting[backend] = queue.isEmpty ? nil : queue
        }
        if !orders.isEmpty { out.append(.beginCreates(orders)) }
    }

    private mutating func releaseCreateCall(_ backend: String) {
        createCalls[backend, default: 1] -= 1
        if createCalls[backend] == 0 { createCalls[backend] = nil }
    }

    private mutating func releaseQuota(_ run: inout EngineRun) {
        guard run.holdsQuota else { return }
        run.holdsQuota = false
        unfinishedImages[run.backend, default: 1] -= 1
        if unfinishedImages[run.backend] == 0 { unfinishedImages[run.backend] = nil }
    }

    private mutating func createFinished(_ id: Int64, outcome: CreateOutcome, now: Date, out: inout [EngineAction]) {
        guard var run = runs[id], run.phase == .creating else { return }  // ended at its timeout meanwhile
        releaseCreateCall(run.backend)
        switch outcome {
        case .recorded(let imageID, let state):
            run.imageID = imageID
            if state == .active {
                end(&run, state: .succeeded, error: nil, now: now, out: &out, asksSize: true)
                return
            }
            run.lastSeen = state
            run.pollInterval = pacing.firstPollInterval
            let at = now.addingTimeInterval(pacing.firstPollInterval)
            run.phase = .waiting(at)
            runs[id] = run
            pollQueues[run.backend, default: MinHeap()].push(RunTimer(due: at, run: id))
        case .unrecorded(let imageID, let error):
            end(&run, state: .failed, error: "could not record image \(imageID): \(error)", now: now, out: &out,
                looksUp: true)
        case .failed(let error, let transient):
            let timedOut = run.deadline.map { now >= $0 } ?? false
            if transient && run.attempts <= run.retries && !timedOut {
                let delay = Self.backoff(attempt: run.attempts, seed: UInt64(bitPattern: id), pacing: pacing)
                let at = now.addingTimeInterval(delay)
                releaseQuota(&run)
                run.phase = .retryDue(at)
                runs[id] = run
                timers.push(RunTimer(due: at, run: id))
                out.append(.recordRetry(run: id, job: run.job, error: error, attempt: run.attempts, at: at))
            } else {
                end(&run, state: timedOut ? .timedOut : .failed, error: error, now: now, out: &out, looksUp: true)
            }
        }
    }

    // MARK: Timers

    private mutating func processTimers(now: Date, out: inout [EngineAction]) {
        while let timer = timers.first, timer.due <= now {
            _ = timers.popFirst()
            guard var run = runs[timer.run] else { continue }
            let timedOut = run.deadline.map { now >= $0 } ?? false
            switch run.phase {
            case .queued:
                if timedOut {
                    end(&run, state: .timedOut, error: timeoutMessage(run), now: now, out: &out, looksUp: true)
                } else if let startBy = run.startBy, now > startBy, run.attempts == 0 {
                    end(&run, state: .missed, error: "waited for a free create slot past its deadline", now: now,
                        out: &out)
                }
            case .retryDue(let at):
                if timedOut {
                    end(&run, state: .timedOut, error: timeoutMessage(run), now: now, out: &out, looksUp: true)
                } else if at <= now {
                    run.phase = .queued
                    runs[run.id] = run
                    enqueue(run)
                }
            case .creating:
                if timedOut {
                    // The call is cut; a late reply is recorded against the ended run (never lost).
                    releaseCreateCall(run.backend)
                    end(&run, state: .timedOut, error: timeoutMessage(run), now: now, out: &out, looksUp: true)
                }
            case .waiting:
                if timedOut && !run.finalPoll {
                    // One last look before giving up: the image may have become active meanwhile.
                    run.finalPoll = true
                    run.phase = .waiting(now)
                    runs[run.id] = run
                    pollQueues[run.backend, default: MinHeap()].push(RunTimer(due: now, run: run.id))
                }
            case .polling:
                if timedOut {
                    run.finalPoll = true
                    runs[run.id] = run
                }
            }
        }
    }

    private func timeoutMessage(_ run: EngineRun) -> String {
        let subject =
            run.imageID.map { "image \($0) still \(run.lastSeen?.description ?? "not active")" }
            ?? "no image yet (\(run.phase.name))"
        return "\(subject) after timeout=\(Self.format(run.timeout)); the backend may be stuck: check the image "
            + "at the provider (for TWCC, contact support if it stays QUEUED or SAVING) and delete it by hand if needed"
    }

    // MARK: Polls

    /// One status pass per backend for every image due now (and those due soon after, so that images created close
    /// together share one batched call).
    private mutating func startPollPasses(now: Date, out: inout [EngineAction]) {
        for backend in pollQueues.keys.sorted() where !pollPassesInFlight.contains(backend) {
            guard var queue = pollQueues[backend], let first = queue.first, first.due <= now,
                now >= nextPollPass[backend] ?? now
            else { continue }
            var orders: [PollOrder] = []
            while let top = queue.first {
                guard var run = runs[top.run], case .waiting(let at) = run.phase, at == top.due else {
                    _ = queue.popFirst()
                    continue
                }
                // Also the images due before this backend's next pass may start.
                let window =
                    top.due <= now ? 0 : max(run.pollInterval * pacing.pollCoalescing, pacing.pollPassGap)
                guard top.due <= now.addingTimeInterval(window) else { break }
                _ = queue.popFirst()
                run.phase = .polling
                orders.append(
                    PollOrder(
                        run: run.id, imageID: run.imageID ?? "", target: run.target,
                        resumesAfterRestart: run.resumesAfterRestart,
                        deadline: run.deadline ?? now.addingTimeInterval(pacing.backendCallTimeout)))
                run.resumesAfterRestart = false
                runs[run.id] = run
            }
            pollQueues[backend] = queue.isEmpty ? nil : queue
            if !orders.isEmpty {
                nextPollPass[backend] = now.addingTimeInterval(pacing.pollPassGap)
                pollPassesInFlight.insert(backend)
                out.append(.poll(backend: backend, orders))
            }
        }
    }

    private mutating func pollFinished(
        backend: String, outcomes: [Int64: PollOutcome], now: Date, out: inout [EngineAction]
    ) {
        pollPassesInFlight.remove(backend)
        for (id, var run) in runs where run.backend == backend && run.phase == .polling && outcomes[id] == nil {
            // Not answered this pass: asked again soon.
            run.phase = .waiting(now.addingTimeInterval(run.pollInterval))
            runs[id] = run
            pollQueues[backend, default: MinHeap()].push(RunTimer(due: now.addingTimeInterval(run.pollInterval), run: id))
        }
        for (id, outcome) in outcomes.sorted(by: { $0.key < $1.key }) {
            guard var run = runs[id], run.phase == .polling else { continue }
            let timedOut = run.finalPoll || (run.deadline.map { now >= $0 } ?? false)
            let image = run.imageID ?? "?"
            switch outcome {
            case .state(.active, let size):
                end(&run, state: .succeeded, error: nil, sizeBytes: size, now: now, out: &out)
            case .state(.error(let reason), _):
                end(&run, state: .failed, error: "image \(image) failed at the backend: \(reason)", now: now, out: &out)
            case .state(.gone, _):
                end(&run, state: .failed, error: "image \(image) disappeared before it became active", now: now,
                    out: &out)
            case .state(let state, _):
                run.lastSeen = state
                if timedOut {
                    end(&run, state: .timedOut,
                        error: "image \(image) still \(state) after timeout=\(Self.format(run.timeout)); "
                            + "check it at the provider (for TWCC, contact support if it stays QUEUED or SAVING)",
                        now: now, out: &out)
                    continue
                }
                run.pollInterval = min(pacing.maxPollInterval, run.pollInterval * 2)
                let next = now.addingTimeInterval(run.pollInterval)
                run.phase = .waiting(next)
                runs[id] = run
                pollQueues[backend, default: MinHeap()].push(RunTimer(due: next, run: id))
                out.append(.recordPoll(run: id, state: state == .queued ? .queued : .saving, nextPollAt: next))
            case .failed(let error, let transient):
                if timedOut {
                    end(&run, state: .timedOut, error: "\(timeoutMessage(run)); last poll: \(error)", now: now, out: &out)
                } else if transient {
                    run.pollInterval = min(pacing.maxPollInterval, run.pollInterval * 2)
                    let next = now.addingTimeInterval(run.pollInterval)
                    run.phase = .waiting(next)
                    runs[id] = run
                    pollQueues[backend, default: MinHeap()].push(RunTimer(due: next, run: id))
                    out.append(
                        .note(
                            level: .warning, message: "Status poll failed, will retry",
                            fields: ["job": run.job, "run": "\(id)", "error": error]))
                } else {
                    end(&run, state: .failed, error: error, now: now, out: &out)
                }
            }
        }
    }

    // MARK: Ending runs

    /// Drops a run without writing anything: another daemon of the cluster owns it now. Queue and timer entries
    /// of it are skipped when they come up, as for an ended run.
    private mutating func forget(_ id: Int64) {
        guard var run = runs[id] else { return }
        if run.phase == .creating { releaseCreateCall(run.backend) }
        releaseQuota(&run)
        runs[id] = nil
        let key = Self.targetKey(run.backend, run.target)
        runsByTarget[key]?.remove(id)
        if runsByTarget[key]?.isEmpty == true { runsByTarget[key] = nil }
    }

    /// Ends a run: out of memory at once, its row written by the executor.
    private mutating func end(
        _ run: inout EngineRun, state: RunState, error: String?, sizeBytes: Int64? = nil, now: Date,
        out: inout [EngineAction], asksSize: Bool = false, looksUp: Bool = false
    ) {
        releaseQuota(&run)
        runs[run.id] = nil
        let key = Self.targetKey(run.backend, run.target)
        runsByTarget[key]?.remove(run.id)
        if runsByTarget[key]?.isEmpty == true { runsByTarget[key] = nil }
        var order = finishOrder(run, state: state, error: error)
        order.sizeBytes = sizeBytes
        order.asksSize = asksSize
        // A run that started a create but has no image id may have made one whose reply was lost.
        order.looksUpImage = looksUp && run.imageID == nil && run.attempts > 0
        // Retention and late checks follow once the end is written (``EngineEvent/runRecorded``), never before.
        out.append(.finish(order))
        switch state {
        case .timedOut:
            lastFailure = "\(run.job) timed out at \(Self.iso(now))"
        case .failed:
            lastFailure = "\(run.job) failed at \(Self.iso(now))"
        default:
            break
        }
    }

    private func finishOrder(_ run: EngineRun, state: RunState, error: String?) -> FinishOrder {
        FinishOrder(
            run: run.id, job: run.job, backend: run.backend, target: run.target, scheduledAt: run.scheduledAt,
            imageName: run.imageName, imageID: run.imageID, state: state, error: error, sizeBytes: nil,
            asksSize: false, looksUpImage: false, startedAt: run.startedAt, hooks: jobs[run.job]?.job.options.hooks)
    }

    // MARK: Retention and late images

    /// Retention for `job` after a success (or when asked); a pass already running is followed by another.
    mutating func requestRetention(job name: String, out: inout [EngineAction]) {
        guard let job = jobs[name]?.job, !job.options.retention.keepsEverything else { return }
        guard !retentionRunning.contains(name) else {
            retentionPending.insert(name)
            return
        }
        guard retentionRunning.count < pacing.maxConcurrentRetentions else {
            if retentionQueued.insert(name).inserted { retentionBacklog.append(name) }
            return
        }
        retentionRunning.insert(name)
        out.append(.retain(RetentionOrder(job: job)))
    }

    /// Starts queued retention passes (the latest request first) while fewer than the limit run.
    private mutating func startQueuedRetentions(out: inout [EngineAction]) {
        while retentionRunning.count < pacing.maxConcurrentRetentions, let name = retentionBacklog.popLast() {
            retentionQueued.remove(name)
            requestRetention(job: name, out: &out)
        }
    }

    private mutating func followLateImages(now: Date) {
        let check = now.addingTimeInterval(pacing.unfinishedImageInterval)
        nextLateImageCheck = min(nextLateImageCheck ?? check, check)
    }

    // MARK: Requests

    /// Replaces the schedule. Jobs that mean the same keep their place (a moved line or a comment changes
    /// nothing); changed ones keep a fire already waiting out its jitter; removed ones stop firing (their
    /// unfinished runs still finish). `storedPauses` holds the store's pauses of jobs that were not loaded.
    mutating func apply(jobs newJobs: [Job], now: Date, storedPauses: Set<String>) -> [EngineAction] {
        var out: [EngineAction] = []
        var next: [String: JobEntry] = [:]
        next.reserveCapacity(newJobs.count)
        for job in newJobs.map(\.withoutSourceText) {
            if let old = jobs[job.name], old.job.meansTheSame(as: job) {
                old.job = job
                next[job.name] = old
                continue
            }
            generation += 1
            let old = jobs[job.name]
            let entry = JobEntry(
                job: job, generation: generation,
                paused: job.options.paused || (old?.paused ?? storedPauses.contains(job.name)),
                lastHandled: old?.lastHandled)
            if let old, old.job.options.paused && !job.options.paused {
                // Taking `paused=yes` off the line resumes the job, for good: also after a restart.
                entry.paused = false
                out.append(.note(level: .info, message: "Job resumed by its line", fields: ["job": job.name]))
                out.append(.storePause(job: job.name, paused: false))
            }
            if old != nil { staleFireEntries += 1 }
            next[job.name] = entry
            guard started else { continue }
            // A fire of the old line waiting out its jitter stays, if the new line has that fire too.
            if let pending = old?.pending, pending <= now,
                job.expression.nextDate(after: pending.addingTimeInterval(-1), in: job.zone) == pending
            {
                entry.pending = pending
                fireQueue.push(queueEntry(entry, scheduled: pending))
            } else if let scheduled = job.expression.nextDate(after: max(entry.lastHandled ?? now, now), in: job.zone) {
                entry.pending = scheduled
                fireQueue.push(queueEntry(entry, scheduled: scheduled))
            }
        }
        staleFireEntries += jobs.keys.filter { next[$0] == nil }.count
        jobs = next
        if staleFireEntries > max(1024, jobs.count) { rebuildFireQueue() }
        return out
    }

    /// Runs `job` now, outside its schedule: the claim to send.
    mutating func trigger(job name: String, now: Date) throws(SchedulerError) -> RunClaim {
        guard let entry = jobs[name] else { throw SchedulerError(.notFound, "no job named '\(name)'") }
        let job = entry.job
        let key = Self.targetKey(job.backend, job.target)
        if job.options.overlap == .skip {
            if let busy = runsByTarget[key]?.min() {
                throw SchedulerError(
                    .conflict, "run \(busy) of \(job.qualifiedTarget) is still unfinished (overlap=skip)")
            }
            if claimsInFlight[key, default: 0] > 0 {
                throw SchedulerError(.conflict, "a fire of \(job.qualifiedTarget) is being claimed right now")
            }
        }
        let instant = Date(timeIntervalSince1970: now.timeIntervalSince1970.rounded(.down))
        claimsInFlight[key, default: 0] += 1
        return claim(job, scheduled: instant, trigger: .manual)
    }

    mutating func setPaused(job name: String, _ paused: Bool) throws(SchedulerError) {
        guard let entry = jobs[name] else { throw SchedulerError(.notFound, "no job named '\(name)'") }
        entry.paused = paused
    }

    func job(named name: String) -> Job? { jobs[name]?.job }

    /// The next fire of each job (nominal instant).
    func nextFires(now: Date) -> [String: Date] {
        var result: [String: Date] = [:]
        for (name, entry) in jobs {
            if let pending = entry.pending {
                result[name] = pending
            } else if let date = entry.job.expression.nextDate(after: max(entry.lastHandled ?? now, now), in: entry.job.zone) {
                result[name] = date
            }
        }
        return result
    }

    /// The queue's top when it is live (a stale top, until the next tick pops it, gives nil).
    var nextFire: (job: String, at: Date)? {
        guard let top = fireQueue.first, jobs[top.job]?.pending == top.scheduled else { return nil }
        return (top.job, top.scheduled)
    }

    var pausedJobNames: Set<String> {
        var names: Set<String> = []
        for index in jobs.indices where jobs.values[index].paused { names.insert(jobs.keys[index]) }
        return names
    }

    // MARK: Names and arithmetic

    static func targetKey(_ backend: String, _ target: String) -> String { backend + ":" + target }

    /// Deterministic per job and fire, so a restart computes the same due time.
    static func jitter(for job: Job, scheduled: Date) -> TimeInterval {
        let range = job.options.jitter.timeInterval
        guard range >= 1 else { return 0 }
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in job.name.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        hash = (hash ^ UInt64(bitPattern: Int64(scheduled.timeIntervalSince1970))) &* 0x100_0000_01B3
        hash ^= hash >> 29
        return TimeInterval(hash % UInt64(range))
    }

    static func backoff(attempt: Int, seed: UInt64, pacing: RunPacing) -> TimeInterval {
        let base = min(pacing.retryMax, pacing.retryBase * pow(2, Double(max(0, attempt - 1))))
        var hash = (seed &+ UInt64(attempt)) &* 0x9E37_79B9_7F4A_7C15
        hash ^= hash >> 31
        let spread = Double(hash % 1000) / 1000 * 0.5 - 0.25  // ±25 %
        return max(1, base * (1 + spread))
    }

    /// `snapcron-<job>-<UTC stamp>`, e.g. `snapcron-web-20261129T010000Z`.
    static func imageName(job: String, scheduled: Date) -> String { "snapcron-\(job)-\(stamp(scheduled))" }

    /// Carries the marker that lets backends (and people) tell snapcron's images from others.
    static func imageDescription(job: String, scheduled: Date, run: Int64, installation: String? = nil) -> String {
        let install = installation.map { " install=\($0)" } ?? ""
        return "created by snapcron (\(ImageMarker.prefix)\(job) scheduled=\(iso(scheduled)) run=\(run)\(install))"
    }

    static func stamp(_ date: Date) -> String {
        let t = LocalTimeFormatter.utcParts(date)
        return "\(t.0)\(t.1)\(t.2)T\(t.3)\(t.4)\(t.5)Z"
    }

    static func iso(_ date: Date) -> String {
        CronFormat.iso8601(date, in: .utc).replacingOccurrences(of: "+00:00", with: "Z")
    }

    static func format(_ seconds: TimeInterval) -> String {
        Duration.seconds(Int64(seconds.rounded())).optionDescription
    }
}

/// A FIFO of run ids that pops from the front in O(1).
struct RunQueue {
    private var items: [Int64] = []
    private var head = 0

    var first: Int64? { head < items.count ? items[head] : nil }
    var isEmpty: Bool { head >= items.count }

    mutating func append(_ id: Int64) { items.append(id) }

    mutating func removeFirst() {
        head += 1
        if head > 1024 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
    }
}

/// snapcron's mark in an image's description:
/// `snapcron:job=<job> scheduled=<ISO 8601> run=<id> install=<store's installation id>` (older images lack `install`).
public enum ImageMarker {
    public static let prefix = "snapcron:job="

    /// The job, scheduled instant and installation a description's marker names, or nil without a marker.
    public static func parse(_ description: String) -> (job: String, scheduled: Date?, installation: String?)? {
        guard let range = description.range(of: prefix) else { return nil }
        let rest = description[range.upperBound...]
        let words = rest.split(whereSeparator: { $0 == " " || $0 == ")" })
        guard let job = words.first, !job.isEmpty else { return nil }
        var scheduled: Date?
        var installation: String?
        for word in words.dropFirst() {
            if word.hasPrefix("scheduled=") {
                scheduled = ISO8601DateFormatter().date(from: String(word.dropFirst("scheduled=".count)))
            } else if word.hasPrefix("install="), word.count > "install=".count {
                installation = String(word.dropFirst("install=".count))
            }
        }
        return (String(job), scheduled, installation)
    }
}

extension Job {
    /// Whether two jobs schedule and run the same way: where the line stands in the file does not count.
    public func meansTheSame(as other: Job) -> Bool {
        name == other.name && expression == other.expression && zone == other.zone && backend == other.backend
            && target == other.target && options == other.options
    }

    /// What the job means, in one line: nodes of a cluster compare these to find schedules that differ.
    public var clusterFingerprint: String {
        "\(expression.normalized) \(zone.identifier) \(backend):\(target) \(options.scheduleText)"
    }

    /// The job without the text of its schedule line: the scheduler holds every job for the daemon's lifetime,
    /// and the line text (needed only for load-time diagnostics) was a tenth of its memory with 100,000 jobs.
    public var withoutSourceText: Job {
        var job = self
        job.location.text = ""
        return job
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

import ControlProtocol
import CronExpression
import Foundation
import Logging
import NIOCore
import NIOConcurrencyHelpers
import SnapcronCore
import SnapshotBackend

/// What the control service needs from the daemon; tests build one around a manual clock and a fake backend.
public struct ControlEnvironment: Sendable {
    public var store: any StateStore
    public var scheduler: SchedulerService
    public var catalog: JobCatalog
    public var config: SnapcronConfig
    public var backends: [String: any SnapshotBackend]
    public var schedulePath: String
    public var access: ControlAccess
    public var startedAt: Date
    /// The scheduler's clock.
    public var now: @Sendable () -> Date
    /// Re-reads the schedule file and applies it, or returns every diagnostic while the old schedule stays.
    public var reload: @Sendable () async -> Result<Schedule, DiagnosticList>

    public init(
        store: any StateStore, scheduler: SchedulerService, catalog: JobCatalog, config: SnapcronConfig,
        backends: [String: any SnapshotBackend], schedulePath: String, access: ControlAccess, startedAt: Date,
        now: @escaping @Sendable () -> Date, reload: @escaping @Sendable () async -> Result<Schedule, DiagnosticList>
    ) {
        self.store = store
        self.scheduler = scheduler
        self.catalog = catalog
        self.config = config
        self.backends = backends
        self.schedulePath = schedulePath
        self.access = access
        self.startedAt = startedAt
        self.now = now
        self.reload = reload
    }
}

/// Answers control requests: parses a line, checks the caller, runs the method, encodes the answer.
///
/// Transport-free, so tests call it in-process and `ControlServer` calls it for each line of a socket. Read
/// methods read the store, the ``JobCatalog`` and the scheduler's published paused set directly; only `status`
/// (one short snapshot) and the changing methods go through the scheduler actor.
public final class ControlService: Sendable {
    let environment: ControlEnvironment
    let logger: Logger
    /// `quick_check` reads the whole database: its answer is reused for this long.
    static let healthTTL: TimeInterval = 60
    private let health = NIOLockedValueBox<(at: Date, value: StoreHealthInfo)?>(nil)
    private let jobsCache = NIOLockedValueBox(JobsCache())

    public init(environment: ControlEnvironment, logger: Logger) {
        self.environment = environment
        self.logger = logger
    }

    /// The response line (with its newline) to one request line; nil for a notification (a request without id).
    public func respond(to line: some Collection<UInt8> & Sendable, peer: PeerCredentials?) async -> Data? {
        await response(to: line, peer: peer)?.data
    }

    /// The response to one request line, in parts written back to back; nil for a notification.
    public func response(to line: some Collection<UInt8> & Sendable, peer: PeerCredentials?) async -> ControlResponse? {
        let request: ParsedRequest
        switch RequestParser.parse(line) {
        case .failure(let failure):
            return ControlResponse(error: failure.error, id: failure.id)
        case .success(let parsed):
            request = parsed
        }
        let response: ControlResponse
        do {
            if request.changesState,
                let reason = environment.access.refusal(for: peer, method: request.method.rawValue)
            {
                logger.notice(
                    "Control request refused",
                    metadata: ["method": "\(request.method.rawValue)", "peer": "\(peer?.description ?? "unknown")"])
                throw RPCError(.notPermitted, reason, data: ErrorData(method: request.method.rawValue))
            }
            if request.changesState {
                logger.info(
                    "Control request",
                    metadata: ["method": "\(request.method.rawValue)", "peer": "\(peer?.description ?? "unknown")"])
            }
            response = ControlResponse(result: try await handle(request), id: request.responseID)
        } catch let error as RPCError {
            response = ControlResponse(error: error, id: request.responseID)
        } catch {
            response = ControlResponse(error: RPCError(.internalError, "\(error)"), id: request.responseID)
        }
        return request.id == nil ? nil : response
    }

    /// Runs one request and returns its encoded result.
    func handle(_ request: ParsedRequest) async throws -> ByteBuffer {
        switch request.method {
        case .status:
            _ = try request.decodeParams(NoParams.self)
            return try encode(await status())
        case .jobs:
            _ = try request.decodeParams(NoParams.self)
            return try jobs()
        case .job: return try encode(await job(try request.decodeParams(JobParams.self).job, paused: pausedJobs()))
        case .next: return try encode(next(try request.decodeParams(NextParams.self)))
        case .history: return try encode(await history(try request.decodeParams(HistoryParams.self)))
        case .images: return try encode(await images(job: try request.decodeParams(JobParams.self).job))
        case .orphans:
            _ = try request.decodeParams(NoParams.self)
            return try encode(await orphans())
        case .run: return try encode(await run(id: try request.decodeParams(RunParams.self).id))
        case .freshness:
            _ = try request.decodeParams(NoParams.self)
            return try encode(await freshness(paused: pausedJobs()))
        case .trigger: return try encode(await trigger(job: try request.decodeParams(JobParams.self).job))
        case .pause: return try encode(await setPaused(job: try request.decodeParams(JobParams.self).job, true))
        case .resume: return try encode(await setPaused(job: try request.decodeParams(JobParams.self).job, false))
        case .pin: return try encode(await pin(try request.decodeParams(PinParams.self), true))
        case .unpin: return try encode(await pin(try request.decodeParams(PinParams.self), false))
        case .reload:
            _ = try request.decodeParams(NoParams.self)
            return try encode(await reload())
        case .check: return try encode(check(try request.decodeParams(CheckParams.self)))
        case .prune: return try encode(await prune(try request.decodeParams(PruneParams.self)))
        case .pruneOrphans:
            return try encode(await pruneOrphans(try request.decodeParams(PruneOrphansParams.self)))
        }
    }

    private func encode(_ value: some Encodable) throws -> ByteBuffer {
        ByteBuffer(bytes: try ControlCoding.encoder.encode(value))
    }

    // MARK: Read methods

    func status() async throws -> StatusResult {
        let snapshot = await environment.scheduler.snapshot()
        let now = environment.now()
        let store = environment.store
        // While the store is unreachable (PostgreSQL restarting), status still answers and says so.
        var lastFailureInfo: RunInfo?
        var nodes: [ClusterNodeInfo]?
        var health: StoreHealthInfo
        do {
            if let lastFailure = try await store.lastFailure() { lastFailureInfo = try await runInfo(lastFailure) }
            if store.runLease != nil {
                nodes = try await store.clusterNodes().map {
                    ClusterNodeInfo(
                        name: $0.name, host: $0.host, pid: $0.pid, version: $0.version, lastSeen: $0.lastSeen,
                        leaseLive: $0.leaseLive, runsHeld: $0.runsHeld, isSelf: $0.isSelf)
                }
            }
            health = await storeHealth(now: now)
        } catch {
            guard store.runLease != nil else { throw RPCError(.internalError, "the state database failed: \(error)") }
            health = StoreHealthInfo(ok: false, message: "reconnecting: \(error)")
        }
        if let problem = environment.scheduler.storeProblem {
            health = StoreHealthInfo(ok: false, message: "reconnecting: \(problem)")
        }
        return StatusResult(
            version: SnapcronVersion.current, pid: getpid(), startedAt: environment.startedAt,
            uptimeSeconds: max(0, Int(now.timeIntervalSince(environment.startedAt))),
            schedulePath: environment.schedulePath, jobs: snapshot.jobCount, pausedJobs: snapshot.pausedJobs,
            running: snapshot.runningRuns.map {
                RunningRunInfo(id: $0.id, job: $0.job, phase: $0.phase, imageId: $0.imageID, startedAt: $0.startedAt)
            },
            nextFire: snapshot.nextFire.map { NextFireInfo(job: $0.job, at: $0.at) },
            lastFailure: lastFailureInfo, store: health, nodes: nodes)
    }

    private func storeHealth(now: Date) async -> StoreHealthInfo {
        if let cached = health.withLockedValue({ $0 }), now.timeIntervalSince(cached.at) < Self.healthTTL,
            now >= cached.at
        {
            return cached.value
        }
        let result = await environment.store.health()
        let value = StoreHealthInfo(ok: result.isOK, message: result.message)
        health.withLockedValue { $0 = (now, value) }
        return value
    }

    private func pausedJobs() -> Set<String> { environment.scheduler.pausedJobs }

    /// The encoded `jobs` result, shared between answers: 2.8 MB for 10,000 jobs is written to each client without
    /// a copy, and its paused set is read without a hop onto the scheduler actor.
    func jobs() throws -> ByteBuffer {
        let paused = environment.scheduler.pausedJobs
        let catalog = environment.catalog.snapshot
        let now = environment.now()
        // Under the lock: one caller refreshes, the others then find it fresh (no stampede after a fire).
        return try jobsCache.withLockedValue { try $0.answer(catalog: catalog, paused: paused, now: now) }
    }

    func job(_ name: String, paused: Set<String>) async throws -> JobDetailResult {
        let catalog = environment.catalog.snapshot
        guard let job = catalog.job(named: name), var info = catalog.info(named: name) else {
            throw notFound(job: name)
        }
        info.paused = paused.contains(name)
        info.nextFire = job.expression.nextDate(after: environment.now(), in: job.zone)
        let store = environment.store
        let (state, runs, images) = try await storeCall {
            (
                try await store.jobState(name: name),
                try await store.runs(job: name, state: nil, since: nil, limit: 10),
                try await store.images(job: name, includeDeleted: false)
            )
        }
        let plan = retentionPlan(for: job, images: images)
        return JobDetailResult(
            job: info, lastFire: state?.lastScheduledAt, recentRuns: try await runInfos(runs), images: images.count,
            newestActive: images.first { $0.state == .active }.map { imageInfo($0, plan: plan) })
    }

    func next(_ params: NextParams) throws -> NextResult {
        let count = params.count ?? 5
        guard (1...1000).contains(count) else { throw RPCError(.invalidParams, "next: count must be 1-1000") }
        let now = environment.now()
        switch (params.job, params.expression) {
        case (let name?, nil):
            guard params.zone == nil else {
                throw RPCError(.invalidParams, "next: zone goes with expression; a job has its own zone")
            }
            guard let job = environment.catalog.snapshot.job(named: name) else { throw notFound(job: name) }
            return NextResult(
                job: name, expression: job.expressionText, normalized: job.expression.normalized,
                description: job.expression.englishDescription, zone: job.zone.identifier,
                fires: job.expression.fires(after: now, in: job.zone).prefix(count).map(\.date))
        case (nil, let text?):
            guard let zone = CronTimeZone(identifier: params.zone ?? "UTC") else {
                throw RPCError(.invalidParams, "next: unknown time zone '\(params.zone ?? "")'")
            }
            let expression: CronExpression
            do {
                expression = try CronExpression.parseWithWarnings(text, hashSeed: nil).expression
            } catch {
                throw RPCError(.invalidParams, "next: column \(error.column): \(error.message)")
            }
            return NextResult(
                job: nil, expression: text, normalized: expression.normalized,
                description: expression.englishDescription, zone: zone.identifier,
                fires: expression.fires(after: now, in: zone).prefix(count).map(\.date))
        default:
            throw RPCError(.invalidParams, "next: give exactly one of job and expression")
        }
    }

    func history(_ params: HistoryParams) async throws -> HistoryResult {
        var state: RunState?
        if let name = params.state {
            guard let parsed = RunState(rawValue: name) else {
                let states = RunState.allCases.map(\.rawValue).joined(separator: ", ")
                throw RPCError(.invalidParams, "history: unknown state '\(name)' (one of: \(states))")
            }
            state = parsed
        }
        let limit = params.limit ?? 50
        guard (1...10_000).contains(limit) else { throw RPCError(.invalidParams, "history: limit must be 1-10000") }
        let store = environment.store
        let runs = try await storeCall {
            try await store.runs(job: params.job, state: state, since: params.since, limit: limit)
        }
        var infos = try await runInfos(runs)
        if params.verbose == true {
            let hooks = try await storeCall { try await store.hookResults(runIDs: runs.map(\.id)) }
            for index in infos.indices {
                infos[index].hooks = (hooks[infos[index].id] ?? []).map {
                    HookInfo(
                        phase: $0.phase.rawValue, hookSet: $0.hookSet, result: $0.result, exitStatus: $0.exitStatus,
                        durationMs: $0.durationMs, finishedAt: $0.finishedAt)
                }
            }
        }
        return HistoryResult(runs: infos)
    }

    func images(job name: String) async throws -> ImagesResult {
        let job = environment.catalog.snapshot.job(named: name)
        let store = environment.store
        let images = try await storeCall { try await store.images(job: name, includeDeleted: false) }
        guard job != nil || !images.isEmpty else { throw notFound(job: name) }
        let plan = job.map { retentionPlan(for: $0, images: images) }
        return ImagesResult(job: name, images: images.map { imageInfo($0, plan: plan) })
    }

    /// Images of targets no job images now; the scheduler decides which (it holds the live schedule).
    func orphans() async throws -> OrphansResult {
        let orphans: [OrphanedImage]
        do {
            orphans = try await environment.scheduler.orphanedImages()
        } catch {
            throw RPCError(error, context: "cannot list the orphaned images")
        }
        return OrphansResult(
            images: orphans.map {
                OrphanedImageInfo(
                    job: $0.image.job, backend: $0.image.backend, target: $0.image.target, id: $0.image.id,
                    name: $0.image.name, createdAt: $0.image.createdAt, state: $0.image.state.rawValue,
                    pinned: $0.image.pinned, reason: $0.reason)
            })
    }

    func run(id: Int64) async throws -> RunInfo {
        let store = environment.store
        guard let record = try await storeCall({ try await store.run(id: id) }) else {
            throw RPCError(.notFound, "no run with id \(id)")
        }
        return try await runInfo(record)
    }

    func freshness(paused: Set<String>) async throws -> FreshnessResult {
        let now = environment.now()
        let store = environment.store
        let (newest, states) = try await storeCall {
            (try await store.newestActiveImageDates(notAfter: now), try await store.allJobStates())
        }
        let lastFires = Dictionary(states.map { ($0.name, $0.lastScheduledAt) }, uniquingKeysWith: { a, _ in a })
        let entries = environment.catalog.snapshot.jobs.map { job in
            FreshnessResult.Entry(
                job: job.name, newestActive: newest[job.name], periodSeconds: Self.period(of: job, after: now),
                paused: paused.contains(job.name), lastFire: lastFires[job.name] ?? nil)
        }
        return FreshnessResult(now: now, jobs: entries)
    }

    /// The longest gap between the job's next 8 fires: how old its newest image may normally get.
    static func period(of job: Job, after now: Date) -> Int? {
        let fires = job.expression.fires(after: now, in: job.zone).prefix(8).map(\.date)
        guard fires.count >= 2 else { return nil }
        return zip(fires, fires.dropFirst()).map { Int($1.timeIntervalSince($0)) }.max()
    }

    func check(_ params: CheckParams) -> CheckResult {
        let file = params.file ?? "<schedule>"
        let loader = ScheduleLoader(config: environment.config, backends: environment.backends)
        switch loader.check(text: params.text, file: file, now: environment.now()) {
        case .success(let schedule):
            return CheckResult(
                valid: true, jobs: schedule.jobs.count, errors: [], warnings: Self.infos(schedule.warnings))
        case .failure(let diagnostics):
            return CheckResult(
                valid: false, jobs: 0, errors: Self.infos(diagnostics.filter { $0.severity != .warning }),
                warnings: Self.infos(diagnostics.filter { $0.severity == .warning }))
        }
    }

    // MARK: Changing methods

    func trigger(job name: String) async throws -> TriggerResult {
        guard environment.catalog.snapshot.job(named: name) != nil else { throw notFound(job: name) }
        do {
            let record = try await environment.scheduler.trigger(job: name)
            return TriggerResult(
                runId: record.id, job: name, scheduledAt: record.scheduledAt, state: record.state.rawValue)
        } catch {
            throw RPCError(error, context: "cannot trigger \(name)")
        }
    }

    func setPaused(job name: String, _ paused: Bool) async throws -> PauseResult {
        guard let job = environment.catalog.snapshot.job(named: name) else { throw notFound(job: name) }
        if !paused && job.options.paused {
            // The schedule file says so: a resume here would not survive the next start.
            throw RPCError(
                .conflict,
                "job '\(name)' is paused by its schedule line (paused=yes at \(job.location.file):"
                    + "\(job.location.number)); remove that option and reload to resume it")
        }
        do {
            try await environment.scheduler.setPaused(job: name, paused)
        } catch {
            throw RPCError(error, context: "cannot \(paused ? "pause" : "resume") \(name)")
        }
        return PauseResult(job: name, paused: paused)
    }

    func pin(_ params: PinParams, _ pinned: Bool) async throws -> ControlProtocol.ImageInfo {
        let catalog = environment.catalog.snapshot
        var backends = Set(environment.config.backends.keys).union(catalog.jobs.map(\.backend)).sorted()
        if let name = params.job {
            guard let job = catalog.job(named: name) else { throw notFound(job: name) }
            backends = [job.backend]
        }
        let store = environment.store
        let found = try await storeCall { () async throws -> ImageRecord? in
            for backend in backends {
                if let image = try await store.image(id: params.image, backend: backend),
                    params.job == nil || image.job == params.job
                {
                    return image
                }
            }
            return nil
        }
        guard let image = found else {
            throw RPCError(
                .notFound, "no image '\(params.image)'" + (params.job.map { " of job '\($0)'" } ?? "") + " in the store"
            )
        }
        guard image.state != .deleted else {
            throw RPCError(.conflict, "image \(image.id) was deleted \(image.deletedAt.map(Self.iso) ?? "")")
        }
        guard !(pinned && image.state == .deleting) else {
            throw RPCError(.conflict, "image \(image.id) is being deleted by retention; it cannot be pinned")
        }
        let updated = try await storeCall { try await store.setPinned(id: image.id, backend: image.backend, pinned) }
        return imageInfo(updated, plan: nil)
    }

    func reload() async throws -> ReloadResult {
        switch await environment.reload() {
        case .success(let schedule):
            return ReloadResult(jobs: schedule.jobs.count, warnings: Self.infos(schedule.warnings))
        case .failure(let diagnostics):
            let errors = diagnostics.errorCount
            throw RPCError(
                .invalidSchedule,
                "\(environment.schedulePath): \(errors) error\(errors == 1 ? "" : "s"); the running schedule stays",
                data: ErrorData(diagnostics: Self.infos(Array(diagnostics))))
        }
    }

    func prune(_ params: PruneParams) async throws -> PruneResult {
        guard let job = environment.catalog.snapshot.job(named: params.job) else { throw notFound(job: params.job) }
        let dryRun = params.dryRun ?? false
        let plan: RetentionPlan
        if dryRun {
            let store = environment.store
            plan = retentionPlan(
                for: job, images: try await storeCall { try await store.images(job: job.name, includeDeleted: false) })
        } else {
            do {
                plan = try await environment.scheduler.pruneNow(job: job.name)
            } catch {
                throw RPCError(error, context: "cannot prune \(job.name)")
            }
        }
        let keepsEverything = job.options.retention.keepsEverything
        return PruneResult(
            job: job.name, dryRun: dryRun, policy: plan.policy,
            decisions: plan.decisions.map {
                PruneResult.Decision(
                    id: $0.id, createdAt: $0.createdAt, state: $0.state, action: $0.action.rawValue,
                    reasons: $0.reasons)
            },
            deleting: dryRun || keepsEverything ? [] : plan.deletions.map(\.id))
    }

    func pruneOrphans(_ params: PruneOrphansParams) async throws -> PruneOrphansResult {
        let dryRun = params.dryRun ?? false
        let chosen: [OrphanedImage]
        do {
            chosen = try await environment.scheduler.pruneOrphaned(dryRun: dryRun)
        } catch {
            throw RPCError(error, context: "cannot prune the orphaned images")
        }
        let store = environment.store
        // The deletes have finished (or failed) when the scheduler answers: report each image's state now.
        var states: [StoredImageState] = []
        for orphan in chosen {
            guard !dryRun else {
                states.append(orphan.image.state)
                continue
            }
            let image = try await storeCall { try await store.image(id: orphan.image.id, backend: orphan.image.backend) }
            states.append(image?.state ?? orphan.image.state)
        }
        return PruneOrphansResult(
            dryRun: dryRun,
            images: zip(chosen, states).map { orphan, state in
                PruneOrphansResult.Deletion(
                    job: orphan.image.job, backend: orphan.image.backend, target: orphan.image.target,
                    id: orphan.image.id, name: orphan.image.name, createdAt: orphan.image.createdAt,
                    state: state.rawValue, action: "delete", reason: orphan.reason)
            })
    }

    // MARK: Helpers

    private func notFound(job name: String) -> RPCError {
        let names = environment.catalog.snapshot.jobs.map(\.name)
        var message = "no job named '\(name)'"
        if let suggestion = names.min(by: { Self.distance($0, name) < Self.distance($1, name) }),
            Self.distance(suggestion, name) <= 2
        {
            message += "; did you mean '\(suggestion)'?"
        }
        return RPCError(.notFound, message)
    }

    /// Edit distance counting a swap of two neighbours as one edit (`wbe` → `web`), capped at 3.
    private static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a)
        let b = Array(b)
        guard abs(a.count - b.count) <= 2 else { return 3 }
        guard !a.isEmpty, !b.isEmpty else { return max(a.count, b.count) }
        var table = [[Int]](repeating: [Int](repeating: 0, count: b.count + 1), count: a.count + 1)
        for i in 0...a.count { table[i][0] = i }
        for j in 0...b.count { table[0][j] = j }
        for i in 1...a.count {
            for j in 1...b.count {
                let cost = a[i - 1] == b[j - 1] ? 0 : 1
                table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
                if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
                    table[i][j] = min(table[i][j], table[i - 2][j - 2] + 1)
                }
            }
        }
        return table[a.count][b.count]
    }

    /// Store calls throw store errors; the caller gets an internal error that says what failed.
    private func storeCall<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch {
            throw RPCError(.internalError, "the state database failed: \(error)")
        }
    }

    private func runInfos(_ records: [RunRecord]) async throws -> [RunInfo] {
        var infos: [RunInfo] = []
        infos.reserveCapacity(records.count)
        for record in records { infos.append(try await runInfo(record)) }
        return infos
    }

    private func runInfo(_ record: RunRecord) async throws -> RunInfo {
        var imageState: String?
        if let imageID = record.imageID, let backend = record.backend {
            let store = environment.store
            imageState = try await storeCall { try await store.image(id: imageID, backend: backend)?.state.rawValue }
        }
        return RunInfo(
            id: record.id, job: record.job, scheduledAt: record.scheduledAt, trigger: record.trigger.rawValue,
            state: record.state.rawValue, attempts: record.attempts, imageName: record.imageName,
            imageId: record.imageID, imageState: imageState,
            target: record.backend.map { "\($0):\(record.target ?? "")" }, claimedAt: record.claimedAt,
            startedAt: record.startedAt, finishedAt: record.finishedAt, error: record.error)
    }

    private func retentionPlan(for job: Job, images: [ImageRecord]) -> RetentionPlan {
        RetentionPlanning.plan(for: job, images: images, now: environment.now())
    }

    private func imageInfo(_ image: ImageRecord, plan: RetentionPlan?) -> ControlProtocol.ImageInfo {
        let decision = plan?.decisions.first { $0.id == image.id }
        let keptBy: String? =
            if let decision { decision.action == .keep ? decision.reasons.joined(separator: "; ") : nil } else {
                image.pinned ? "pinned" : image.keepReason
            }
        return ControlProtocol.ImageInfo(
            id: image.id, name: image.name, job: image.job, backend: image.backend, createdAt: image.createdAt,
            state: image.state.rawValue, sizeBytes: image.sizeBytes, pinned: image.pinned, keptBy: keptBy,
            pruneReason: decision?.action == .delete ? decision?.reasons.joined(separator: "; ") : nil)
    }

    static func infos(_ diagnostics: [Diagnostic]) -> [DiagnosticInfo] {
        diagnostics.map {
            DiagnosticInfo(
                file: $0.file, line: $0.line, column: $0.columns?.lowerBound, severity: $0.severity.rawValue,
                message: $0.message, note: $0.note, rendered: $0.description)
        }
    }

    static func iso(_ date: Date) -> String { date.formatted(.iso8601) }
}

/// The encoded `jobs` answer, one JSON fragment per job: a fire, a pause or a reload re-encodes only the jobs it
/// changed, so the 10,000-job answer is a concatenation most of the time.
struct JobsCache {
    private var revision = -1
    private var infos: [JobInfo] = []
    private var fragments: [Data] = []
    private var paused: Set<String> = []
    /// The earliest next fire: until then no job's `next_fire` changes.
    private var validUntil = Date.distantPast
    private var computedAt = Date.distantPast
    private var encoded = ByteBuffer()

    /// The `jobs` result for this schedule version, paused set and time.
    mutating func answer(catalog: JobCatalog.Snapshot, paused: Set<String>, now: Date) throws -> ByteBuffer {
        if catalog.revision == revision, paused == self.paused, now < validUntil, now >= computedAt {
            return encoded
        }
        let encoder = ControlCoding.encoder
        if catalog.revision != revision || now < computedAt {  // a new schedule, or the clock was set back
            revision = catalog.revision
            infos = catalog.infos
            fragments = Array(repeating: Data(), count: infos.count)
            for index in infos.indices { infos[index].nextFire = .distantPast }  // forces the first encoding
        }
        var earliest = now.addingTimeInterval(3600)
        for index in infos.indices {
            let job = catalog.jobs[index]
            var changed = false
            let isPaused = paused.contains(job.name)
            if infos[index].paused != isPaused || fragments[index].isEmpty {
                infos[index].paused = isPaused
                changed = true
            }
            if let next = infos[index].nextFire, next <= now {
                infos[index].nextFire = job.expression.nextDate(after: now, in: job.zone)
                changed = true
            }
            if changed { fragments[index] = try encoder.encode(infos[index]) }
            if let next = infos[index].nextFire { earliest = min(earliest, next) }
        }
        self.paused = paused
        validUntil = earliest
        computedAt = now
        var result = ByteBuffer()
        result.reserveCapacity(fragments.reduce(16) { $0 + $1.count + 1 })
        result.writeString("{\"jobs\":[")
        for (index, fragment) in fragments.enumerated() {
            if index > 0 { result.writeInteger(UInt8(ascii: ",")) }
            result.writeBytes(fragment)
        }
        result.writeString("]}")
        encoded = result
        return result
    }
}

/// One response line in parts: an envelope around a result that may be shared with other answers.
public struct ControlResponse: Sendable {
    /// Written in order, they make one line with its newline.
    public var parts: [ByteBuffer]

    init(result: ByteBuffer, id: RequestID) {
        parts = [
            ByteBuffer(bytes: ResponseWriter.resultPrefix(id: id)), result,
            ByteBuffer(bytes: ResponseWriter.resultSuffix),
        ]
    }

    init(error: RPCError, id: RequestID) {
        parts = [ByteBuffer(bytes: ResponseWriter.error(id: id, error))]
    }

    /// The whole line, joined (tests and in-process callers).
    public var data: Data {
        var data = Data(capacity: parts.reduce(0) { $0 + $1.readableBytes })
        for part in parts { data.append(contentsOf: part.readableBytesView) }
        return data
    }
}

extension RPCError {
    /// The one place a scheduler refusal becomes a control-protocol error.
    init(_ error: SchedulerError, context: String) {
        let code: RPCErrorCode =
            switch error.code {
            case .notFound: .notFound
            case .conflict: .conflict
            default: .internalError
            }
        self.init(code, "\(context): \(error.message)")
    }
}

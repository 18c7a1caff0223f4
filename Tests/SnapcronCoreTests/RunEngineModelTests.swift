import Foundation
import Logging
import SnapcronStore
import SnapshotBackend
import Synchronization
import Testing

@testable import SnapcronCore

/// The real scheduler (SchedulerService, RunExecutor, the SQLite store) on a model clock against a chaotic
/// backend, driven by seeded random steps: time passing (seconds to hours), pins and unpins through the store,
/// `pruneNow`, `pruneOrphaned`, triggers, pauses, reloads (targets moved, comment lines, `paused=yes` toggled,
/// retention changed), foreign images, clock steps of an hour to two days either way (noticed by the loop or
/// not), and crashes at any store call (the process is abandoned with its calls in flight; a new one starts on
/// the same database and backend).
///
/// What must hold, checked where it could break (the chaos backend's create and delete) and at the end:
/// - one image at most per fire (job, scheduled time), ever;
/// - no image deleted while a pin the store confirmed stands, nor one the store did not take into `deleting`;
/// - never the newest active image of a (job, backend, target) that is not dated in the future;
/// - never a foreign image (no marker, or a marker of a fire this store never claimed);
/// - after a quiet period (no chaos, no new fires, long enough for timeouts, late-image checks and sweeps):
///   every image at the backend whose marker names a fire this store claimed is known to the store and not
///   deleted there, none is left `queued`/`saving` in the store when the backend has finished it, no image is
///   left `deleting`, none is deleted in the store but still at the backend, no run is unfinished, and the
///   store's health check is OK.
///
/// `SNAPCRON_SEEDS=N` runs N random seeds (default 200, in two lanes: `SNAPCRON_MODEL_LANES`); `SNAPCRON_SEED=N`
/// replays one (N times with `SNAPCRON_SEEDS=N`), printing the steps of a failure, and with
/// `SNAPCRON_MODEL_LOG=1` the scheduler's log too.
@Suite(.serialized) struct RunEngineModelTests {
    @Test func chaosNeverBreaksTheRunEngineInvariants() async throws {
        let environment = ProcessInfo.processInfo.environment
        var seeds: [UInt64] = []
        let replay = environment["SNAPCRON_SEED"].flatMap { UInt64($0) }
        if let replay {
            // A replay repeats the seed's steps; concurrent tasks may still interleave differently, so a rare
            // failure may need a few repeats (SNAPCRON_SEEDS=N).
            seeds = Array(repeating: replay, count: environment["SNAPCRON_SEEDS"].flatMap { Int($0) } ?? 1)
        } else {
            var random = SystemRandomNumberGenerator()
            let count = environment["SNAPCRON_SEEDS"].flatMap { Int($0) } ?? 200
            seeds = (0..<count).map { _ in random.next() }
        }
        let logs = environment["SNAPCRON_MODEL_LOG"] == "1"
        // Seeds are independent: two lanes keep both cores busy while one seed waits for its other thread.
        let lanes = replay != nil ? 1 : max(1, environment["SNAPCRON_MODEL_LANES"].flatMap { Int($0) } ?? 2)
        let started = ContinuousClock.now
        let reports = await withTaskGroup(of: [(UInt64, ModelReport)].self) { group in
            for lane in 0..<lanes {
                let mine = stride(from: lane, to: seeds.count, by: lanes).map { seeds[$0] }
                group.addTask {
                    var reports: [(UInt64, ModelReport)] = []
                    for seed in mine {
                        do {
                            let model = try ModelRun(seed: seed, collectsLog: logs)
                            reports.append((seed, await model.run()))
                        } catch {
                            reports.append((seed, ModelReport(failures: ["setup: \(error)"], trace: [], stats: [:])))
                        }
                    }
                    return reports
                }
            }
            var all: [(UInt64, ModelReport)] = []
            for await reports in group { all += reports }
            return all
        }
        var totals: [String: Int] = [:]
        var failed: [UInt64] = []
        for (seed, report) in reports {
            for (key, value) in report.stats { totals[key, default: 0] += value }
            guard !report.failures.isEmpty else { continue }
            if replay != nil { print(report.trace.joined(separator: "\n")) }
            failed.append(seed)
            let steps = replay != nil ? [] : report.trace.suffix(80)
            Issue.record(
                """
                seed \(seed) (replay with SNAPCRON_SEED=\(seed)):
                \(report.failures.joined(separator: "\n"))
                last steps:
                \(steps.joined(separator: "\n"))
                """)
        }
        let elapsed = ContinuousClock.now - started
        let summary = totals.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        print("RunEngineModelTests: \(seeds.count) seeds in \(elapsed), \(failed.count) failed \(failed); \(summary)")
    }
}

/// One job line of the model's schedule.
struct JobSpec {
    var name: String
    var expression: String
    var backend: String
    var target: String
    var options: [(String, String)]
    var paused = false

    var line: String {
        let opts = options.map { "\($0.0)=\($0.1)" } + (paused ? ["paused=yes"] : [])
        return ([expression, name, "\(backend):\(target)"] + opts).joined(separator: " ")
    }

    static let expressions = [
        "*/10 * * * *", "*/15 * * * *", "0 * * * *", "*/30 * * * *", "7,37 * * * *", "0 */2 * * *",
    ]

    static func retention(_ rng: inout SplitMix64) -> [(String, String)] {
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: []
        case 1: [("keep", "\(Int.random(in: 1...3, using: &rng))")]
        case 2: [("keep", "1"), ("keep-hourly", "2")]
        case 3: [("keep-within", rng.pick(["30m", "2h"]))]
        case 4: [("keep-daily", "2")]
        default: [("keep", "\(Int.random(in: 2...4, using: &rng))"), ("keep-within", "1h")]
        }
    }
}

/// A process of the model: one SchedulerService over its own store proxy and backend connections.
final class ModelProcess: @unchecked Sendable {
    let id: Int
    let service: SchedulerService
    let store: CrashingStore
    var task: Task<Void, Never>?
    let finished = Atomic<Bool>(false)
    /// Requests (trigger, prune, reload, ...) the driver made that have not returned.
    let requests = Atomic<Int>(0)

    init(id: Int, service: SchedulerService, store: CrashingStore) {
        self.id = id
        self.service = service
        self.store = store
    }
}

struct ModelReport {
    var failures: [String]
    var trace: [String]
    var stats: [String: Int]
}

/// One seed: the world, the schedule, the processes, and the steps.
final class ModelRun: @unchecked Sendable {
    static let start = utc("2026-03-02T00:00:00Z")
    static let steps = 24

    let seed: UInt64
    private var rng: SplitMix64
    let clock: ModelClock
    let db: SnapcronDatabase
    let pins = PinBook()
    let world: ChaosWorld
    let backendNames: [String]
    let targets: [String: [String]]
    let limits: ConcurrencyLimits
    let pacing: RunPacing
    let chaos: ChaosSettings
    private var specs: [JobSpec] = []
    private var jobs: [Job] = []
    private var processes: [ModelProcess] = []
    private var live: ModelProcess!
    private let trace = ModelLog()
    private let log: ModelLog?
    private var failures: [String] = []
    private var quiet = false
    private var stats: [String: Int] = [:]

    init(seed: UInt64, collectsLog: Bool) throws {
        self.seed = seed
        var rng = SplitMix64(seed: seed)
        clock = ModelClock(now: Self.start.addingTimeInterval(Double(Int.random(in: 0..<86_400, using: &rng))))
        db = try SnapcronDatabase.inMemory()
        backendNames = rng.chance(0.5) ? ["b1", "b2"] : ["b1"]
        var targets: [String: [String]] = [:]
        for name in backendNames { targets[name] = ["t1", "t2", "t3"] }
        self.targets = targets
        var limits = ConcurrencyLimits(createCalls: Int.random(in: 1...4, using: &rng))
        if rng.chance(0.3) { limits.unfinishedImagesPerBackend = ["b1": Int.random(in: 1...3, using: &rng)] }
        self.limits = limits
        var pacing = RunPacing()
        pacing.firstPollInterval = 15
        pacing.maxPollInterval = 300
        pacing.sweepInterval = 3600
        pacing.firstSweepDelay = 60
        pacing.unfinishedImageInterval = 600
        pacing.backendCallTimeout = 300
        self.pacing = pacing
        chaos = ChaosSettings.random(using: &rng)
        let listsAll = Set(backendNames.filter { _ in rng.chance(0.5) })
        log = collectsLog ? ModelLog() : nil
        world = ChaosWorld(
            seed: seed, clock: clock, store: db, pins: pins, listsAll: listsAll, chaos: chaos)
        let count = Int.random(in: 2...4, using: &rng)
        for index in 1...count {
            let backend = rng.pick(backendNames)
            var options: [(String, String)] = [
                ("timeout", rng.pick(["20m", "45m", "1h", "2h"])), ("deadline", rng.pick(["5m", "20m", "1h"])),
                ("retries", "\(Int.random(in: 0...3, using: &rng))"),
                ("overlap", rng.chance(0.7) ? "skip" : "allow"),
            ]
            if rng.chance(0.2) { options.append(("jitter", "1m")) }
            options += JobSpec.retention(&rng)
            specs.append(
                JobSpec(
                    name: "j\(index)", expression: rng.pick(JobSpec.expressions), backend: backend,
                    target: rng.pick(targets[backend]!), options: options))
        }
        self.rng = rng
    }

    private func note(_ line: String) {
        trace.append("[\(RunEngine.iso(clock.wallNow)) skew=\(Int(clock.currentSkew))] \(line)")
    }

    private func fail(_ line: String) {
        failures.append(line)
        note("FAILURE: \(line)")
    }

    private func count(_ what: String) { stats[what, default: 0] += 1 }

    // MARK: The run

    func run() async -> ModelReport {
        do {
            jobs = try parse(specs, comments: 0)
        } catch {
            return ModelReport(failures: ["schedule did not parse: \(error)"], trace: [], stats: [:])
        }
        note("seed \(seed): \(backendNames) listsAll=\(world.listsAll) limits=\(limits) chaos=\(chaos)")
        for spec in specs { note("job: \(spec.line)") }
        await seedForeignImages()
        startProcess()
        await settle()
        for _ in 0..<Self.steps where failures.isEmpty {
            await step()
        }
        if failures.isEmpty { await quietDown() }
        if failures.isEmpty { await checkEnd() }
        let violations = await world.violations
        failures.insert(contentsOf: violations.map { "invariant: \($0)" }, at: 0)
        for (key, value) in await world.stats { stats[key] = value }
        stats["processes"] = processes.count
        await shutDown()
        var lines = trace.all
        if let log { lines += ["scheduler log:"] + log.all }
        return ModelReport(failures: failures, trace: lines, stats: stats)
    }

    private func parse(_ specs: [JobSpec], comments: Int) throws -> [Job] {
        var lines = specs.map(\.line)
        for index in 0..<comments { lines.insert("# reload note \(index)", at: min(index * 2, lines.count)) }
        return try simulationJobs(lines.joined(separator: "\n"), backends: backendNames)
    }

    /// Images of the targets that snapcron did not make: some without a marker, some whose marker names fires
    /// this store never claimed (another installation, years ago).
    private func seedForeignImages() async {
        for backend in backendNames {
            for target in targets[backend]! {
                if rng.chance(0.5) { await addForeign(backend: backend, target: target) }
                if rng.chance(0.5) { await addForeign(backend: backend, target: target) }
            }
        }
    }

    private func addForeign(backend: String, target: String) async {
        let n = Int.random(in: 1...999_999, using: &rng)
        if rng.chance(0.5) {
            await world.addForeign(
                backend: backend, target: target, name: "manual-\(n)", description: "taken by hand before an upgrade",
                state: rng.chance(0.8) ? .active : .queued)
        } else {
            let job = rng.chance(0.7) ? rng.pick(specs).name : "elsewhere"
            let scheduled = utc("2020-01-01T00:00:00Z").addingTimeInterval(Double(n * 60))
            await world.addForeign(
                backend: backend, target: target, name: SchedulerService.imageName(job: job, scheduled: scheduled),
                description: SchedulerService.imageDescription(job: job, scheduled: scheduled, run: Int64(n)),
                state: rng.chance(0.8) ? .active : .queued)
        }
        count("foreign")
    }

    // MARK: Processes

    private func startProcess() {
        let id = (processes.last?.id ?? 0) + 1
        let calls: Int? = quiet || rng.chance(0.25) ? nil : Int.random(in: 1...150, using: &rng)
        let clock = self.clock
        let store = CrashingStore(base: db, calls: calls, commitsLastCall: rng.chance(0.5)) { clock.freeze(id) }
        var backends: [String: any SnapshotBackend] = [:]
        for name in backendNames { backends[name] = ChaosBackend(name: name, process: id, world: world) }
        let logger: Logger
        if let log {
            logger = Logger(label: "model") { _ in ModelLogHandler(sink: log, clock: clock, process: id) }
        } else {
            logger = silentLogger
        }
        let service = SchedulerService(
            jobs: jobs, store: store, backends: backends, clock: ProcessClock(process: id, model: clock),
            limits: limits, pacing: pacing, logger: logger)
        let process = ModelProcess(id: id, service: service, store: store)
        process.task = Task {
            do {
                try await service.run()
            } catch {}
            process.finished.store(true, ordering: .sequentiallyConsistent)
        }
        processes.append(process)
        live = process
        note("p\(id) starts (dies after \(calls.map(String.init) ?? "no") store calls)")
    }

    /// Whether `process` has nothing left to do but wait for time: its loop asleep on the clock, and each of its
    /// tasks (executor work and the driver's requests) waiting for a backend reply.
    private func isIdle(_ process: ModelProcess) -> Bool {
        let state = clock.state(of: process.id)
        return state.loopAsleep && state.cuts == 0
            && process.service.backendWorkInFlight + process.requests.load(ordering: .sequentiallyConsistent)
                == state.replies
    }

    /// Waits until the live process is idle; a process that crashed meanwhile is replaced first.
    @discardableResult
    private func settle() async -> Bool {
        var spins = 0
        while true {
            let process = live!
            if process.store.isDead || process.finished.load(ordering: .sequentiallyConsistent) {
                await replace(process)
                spins = 0
                continue
            }
            if isIdle(process) { return true }
            spins += 1
            stats["spins", default: 0] += 1
            if spins > 2_000_000 {
                let state = clock.state(of: process.id)
                fail(
                    "p\(process.id) did not settle: loop asleep \(state.loopAsleep), work "
                        + "\(process.service.backendWorkInFlight), requests "
                        + "\(process.requests.load(ordering: .relaxed)), "
                        + "replies awaited \(state.replies), cuts \(state.cuts)")
                return false
            }
            await Self.pause(after: spins)
        }
    }

    /// Lets other tasks run while the driver waits for them: a few yields, then short naps so that a waiting
    /// driver does not take a core from the work it waits for. Never a condition: what ends a wait is exact.
    private static func pause(after spins: Int) async {
        if spins <= 5 {
            await Task.yield()
        } else {
            try? await Task.sleep(for: .microseconds(50))
        }
    }

    /// A crash: the dead process is abandoned (its loop frozen in its sleep, its task cancelled and never
    /// awaited; calls it had made keep their effect at the backend), and a new one starts on the same database.
    private func replace(_ dead: ModelProcess) async {
        clock.freeze(dead.id)
        var spins = 0
        while !clock.state(of: dead.id).frozenLoop && !dead.finished.load(ordering: .sequentiallyConsistent) {
            spins += 1
            if spins > 2_000_000 {
                fail("crashed p\(dead.id) did not stop")
                break
            }
            await Self.pause(after: spins)
        }
        dead.task?.cancel()
        count("crashes")
        note("p\(dead.id) crashed after \(dead.store.calls) store calls")
        startProcess()
    }

    /// Moves true time by `seconds`, from deadline to deadline: replies first, then call limits and the loop.
    private func advance(by seconds: TimeInterval) async {
        let target = clock.providerNow.addingTimeInterval(seconds)
        while failures.isEmpty {
            guard await settle() else { return }
            guard let next = clock.nextDue, next <= target else { break }
            clock.set(trueNow: next)
            count(quiet ? "wakes.quiet" : "wakes")
            clock.wake([.reply])
            guard await settle() else { return }
            clock.wake([.callLimit, .loop])
        }
        clock.set(trueNow: target)
        await settle()
    }

    /// Runs a request of the operator (control socket) against the live process, without waiting for it: it may
    /// wait for a backend reply that only time brings.
    private func request(_ what: String, _ body: @escaping @Sendable (SchedulerService) async -> String) async {
        let process = live!
        process.requests.add(1, ordering: .sequentiallyConsistent)
        let trace = self.trace
        let clock = self.clock
        note("p\(process.id) \(what)")
        Task {
            let outcome = await body(process.service)
            trace.append("[\(RunEngine.iso(clock.wallNow))]   p\(process.id) \(what): \(outcome)")
            process.requests.subtract(1, ordering: .sequentiallyConsistent)
        }
        await settle()
    }

    // MARK: Steps

    private func step() async {
        let roll = Int.random(in: 0..<100, using: &rng)
        switch roll {
        case 0..<22:
            let seconds = Double(Int.random(in: 1...120, using: &rng))
            note("advance \(Int(seconds))s")
            await advance(by: seconds)
        case 22..<47:
            let seconds = Double(Int.random(in: 2...30, using: &rng) * 60)
            note("advance \(Int(seconds / 60))m")
            await advance(by: seconds)
        case 47..<55:
            let seconds = Double(Int.random(in: 30...120, using: &rng) * 60)
            note("advance \(Int(seconds / 60))m")
            await advance(by: seconds)
        case 55..<65:
            await pinOrUnpin()
        case 65..<70:
            let job = rng.pick(specs).name
            await request("pruneNow \(job)") { service in
                do {
                    let plan = try await service.pruneNow(job: job)
                    return "\(plan.deletions.count) to delete"
                } catch { return "\(error)" }
            }
        case 70..<72:
            await request("pruneOrphaned") { service in
                do {
                    return "deleted \(try await service.pruneOrphaned(dryRun: false).map(\.image.id))"
                } catch { return "\(error)" }
            }
        case 72..<80:
            let job = rng.pick(specs).name
            await request("trigger \(job)") { service in
                do {
                    return "run \(try await service.trigger(job: job).id)"
                } catch { return "\(error)" }
            }
        case 80..<87:
            await reload()
        case 87..<89:
            let job = rng.pick(specs).name
            let paused = rng.chance(0.5)
            await request("setPaused \(job) \(paused)") { service in
                do {
                    try await service.setPaused(job: job, paused)
                    return "ok"
                } catch { return "\(error)" }
            }
        case 89..<95:
            let hours = Double(Int.random(in: 60...(rng.chance(0.2) ? 2 * 1440 : 720), using: &rng)) * 60
            let delta = rng.chance(0.5) ? hours : -hours
            let wakes = rng.chance(0.8)
            note("clock step \(Int(delta / 60))m\(wakes ? "" : " (unnoticed)")")
            count("clock_steps")
            clock.step(by: delta, wakesLoops: wakes)
            await settle()
        case 95..<97:
            let backend = rng.pick(backendNames)
            let target = rng.pick(targets[backend]!)
            note("foreign image on \(backend):\(target)")
            await addForeign(backend: backend, target: target)
        default:
            let calls = Int.random(in: 1...20, using: &rng)
            note("p\(live.id) to crash within \(calls) store calls")
            live.store.setRemaining(calls)
            await settle()
        }
    }

    private func pinOrUnpin() async {
        var images = specs.flatMap { (try? db.images(job: $0.name, includeDeleted: true)) ?? [] }
        // Mostly active images, above all those retention decided to delete and has not yet taken (the pin
        // races the delete).
        let active = images.filter { $0.state == .active }
        let doomed = active.filter { $0.deleteReason != nil }
        if !doomed.isEmpty && rng.chance(0.5) {
            images = doomed
        } else if !active.isEmpty && rng.chance(0.75) {
            images = active
        }
        guard !images.isEmpty else { return }
        let image = rng.pick(images)
        let pinned = rng.chance(image.pinned ? 0.2 : 0.7)
        do {
            _ = try db.setPinned(id: image.id, backend: image.backend, pinned)
            pins.set(image.key, pinned: pinned)
            note("\(pinned ? "pinned" : "unpinned") \(image.id) (\(image.state.rawValue))")
            count(pinned ? (image.deleteReason != nil && image.state == .active ? "pins.doomed" : "pins") : "unpins")
        } catch {
            note("\(pinned ? "pin" : "unpin") of \(image.id) refused: \(error)")
            count("pins_refused")
        }
    }

    private func reload() async {
        var changes: [String] = []
        for _ in 0..<Int.random(in: 1...2, using: &rng) {
            let index = Int.random(in: 0..<specs.count, using: &rng)
            switch Int.random(in: 0..<4, using: &rng) {
            case 0:
                let backend = rng.pick(backendNames)
                specs[index].backend = backend
                specs[index].target = rng.pick(targets[backend]!)
                changes.append("\(specs[index].name) -> \(backend):\(specs[index].target)")
            case 1:
                specs[index].paused.toggle()
                changes.append("\(specs[index].name) paused=\(specs[index].paused)")
            case 2:
                specs[index].options.removeAll { $0.0.hasPrefix("keep") }
                specs[index].options += JobSpec.retention(&rng)
                changes.append("\(specs[index].name) \(specs[index].options.filter { $0.0.hasPrefix("keep") })")
            default:
                changes.append("comments only")
            }
        }
        do {
            jobs = try parse(specs, comments: Int.random(in: 0...3, using: &rng))
        } catch {
            fail("schedule did not parse: \(error)")
            return
        }
        count("reloads")
        let jobs = self.jobs
        await request("reload: \(changes.joined(separator: "; "))") { service in
            await service.apply(jobs: jobs)
            return "applied"
        }
    }

    // MARK: The end

    /// No more trouble: the backend behaves, the store stops dying, no job fires; then long enough for timeouts
    /// (2h at most), images baking (3h at most), late-image checks and sweeps.
    private func quietDown() async {
        note("quiet")
        quiet = true
        await world.setChaos(.quiet)
        live.store.setRemaining(nil)
        await settle()
        // No new runs: every job fires next on January 1st (cheaper than paused jobs skipping every fire).
        for index in specs.indices { specs[index].expression = "0 0 1 1 *" }
        do {
            jobs = try parse(specs, comments: 0)
        } catch {
            fail("schedule did not parse: \(error)")
            return
        }
        let jobs = self.jobs
        await request("reload: no job fires any more") { service in
            await service.apply(jobs: jobs)
            return "applied"
        }
        for _ in 0..<6 where failures.isEmpty { await advance(by: 3600) }
    }

    private func checkEnd() async {
        note("checks")
        do {
            for image in await world.liveImages where !image.foreign {
                guard let marker = ImageMarker.parse(image.description), let scheduled = marker.scheduled else {
                    fail("image \(image.id) '\(image.name)' has no marker: '\(image.description)'")
                    continue
                }
                let claimed = try db.runs(job: marker.job, state: nil, since: scheduled, limit: 1_000_000).contains {
                    $0.scheduledAt == scheduled && $0.imageName == image.name
                }
                guard claimed else { continue }
                guard let record = try db.image(id: image.id, backend: image.backend) else {
                    fail(
                        "image \(image.id) '\(image.name)' at \(image.backend):\(image.target) is unknown to the store")
                    continue
                }
                if record.state == .deleted || record.state == .deleting {
                    fail("image \(image.id) '\(image.name)' is \(record.state.rawValue) in the store but still exists")
                }
                let state = image.state(at: clock.providerNow)
                if (record.state == .queued || record.state == .saving) && state.isFinal {
                    fail("image \(image.id) '\(image.name)' is \(record.state.rawValue) in the store but \(state)")
                }
            }
            let unfinished = try db.unfinishedRuns()
            if !unfinished.isEmpty {
                fail("runs left unfinished: \(unfinished.map { "\($0.id) \($0.job) \($0.state.rawValue)" })")
            }
            let live = Set(await world.liveImages.map { ImageKey(id: $0.id, backend: $0.backend) })
            for spec in specs {
                for record in try db.images(job: spec.name, includeDeleted: true) {
                    if record.state == .deleting { fail("image \(record.id) left deleting") }
                    if record.state == .deleted && live.contains(record.key) {
                        fail("image \(record.id) is deleted in the store but still exists at the backend")
                    }
                    // Not an invariant: a delete whose reply was lost is given back to active, and stays so while
                    // retention keeps it (pinned, say). Counted to show how often the store holds such ghosts.
                    if record.state == .active && !live.contains(record.key) { count("ghosts") }
                }
            }
            let health = db.healthCheck()
            if !health.isOK { fail("store health: \(health.message)") }
        } catch {
            fail("store read failed: \(error)")
        }
    }

    /// Lets every process of the seed end: frozen calls and limits are released first (their tasks then fail
    /// fast against a dead store and a closed backend), then the loops, which are cancelled.
    private func shutDown() async {
        for process in processes {
            process.store.kill()
            clock.freeze(process.id)
            process.task?.cancel()
        }
        var spins = 0
        while spins < 100_000 {
            for process in processes { clock.release(process.id, kinds: [.reply, .callLimit]) }
            let busy = processes.contains {
                $0.service.backendWorkInFlight > 0 || $0.requests.load(ordering: .sequentiallyConsistent) > 0
            }
            if !busy { break }
            spins += 1
            await Self.pause(after: spins)
        }
        for process in processes { clock.release(process.id, kinds: [.loop]) }
        spins = 0
        while processes.contains(where: { !$0.finished.load(ordering: .sequentiallyConsistent) }) {
            spins += 1
            if spins > 100_000 {
                failures.append("the processes did not stop after their cancellation")
                break
            }
            await Self.pause(after: spins)
        }
        processes.removeAll()
        live = nil
    }
}

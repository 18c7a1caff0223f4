import BackendTypes
import CronExpression
import ExecDescriptor
import Foundation
import Logging
import PostgresHarness
import SnapcronConfig
import SnapcronCore
import SnapcronPostgres
import SnapcronStore
import SnapcronTestKit
import SnapshotBackend

// daemon-bench: the scheduler with many jobs. Prints one JSON line per measure:
//   startup    parse a 100,000-job schedule and start the scheduler until it sleeps; resident memory after
//   per_fire   10,000 jobs due in the same minute, each run taken to ACTIVE on a fake backend, with the store
//              in memory and in a WAL file (the full per-fire cost: claim, create, poll, finish)
//   idle       the real SystemClock with 100,000 jobs none of which is due: loop wake-ups per minute

func residentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        return (line.split(separator: " ").compactMap { Int($0) }.first ?? 0) * 1024
    }
    return 0
}

func emit(_ object: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
}

let logger: Logger = {
    var logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
    logger.logLevel = .critical
    return logger
}()

var config = SnapcronConfig.default(stateDir: "/var/lib/snapcron-bench")
config.backends["fake"] = BackendConfig(name: "fake", type: .exec)
let start2030 = Date(timeIntervalSince1970: 1_893_456_000)  // 2030-01-01T00:00:00Z

func schedule(jobs: Int, expression: (Int) -> String) -> String {
    var text = ""
    text.reserveCapacity(jobs * 48)
    let zones = ["UTC", "Asia/Taipei", "America/New_York", "Europe/Berlin"]
    for index in 0..<jobs {
        if index % 25_000 == 0 { text += "CRON_TZ=\(zones[(index / 25_000) % zones.count])\n" }
        text += "\(expression(index)) job-\(index) fake:vm-\(index) keep=3\n"
    }
    return text
}

let benchPacing: RunPacing = {
    var pacing = RunPacing()
    if ProcessInfo.processInfo.environment["NOSWEEP"] != nil { pacing.firstSweepDelay = 1e9 }
    return pacing
}()

/// Starts a service on `clock` and returns once it is asleep with nothing in flight.
func startService(_ jobs: [Job], store: SnapcronDatabase, backend: FakeSnapshotBackend, clock: any SchedulerClock)
    async -> (SchedulerService, Task<Void, any Error>)
{
    let service = SchedulerService(
        jobs: jobs, store: store, backends: ["fake": backend], clock: clock,
        limits: ConcurrencyLimits(
            createCalls: Int(ProcessInfo.processInfo.environment["CREATE_CALLS"] ?? "") ?? 100_000),
        pacing: benchPacing, logger: logger)
    let task = Task { try await service.run() }
    await service.waitUntilIdle()
    return (service, task)
}

// MARK: start-up and memory

let only = ProcessInfo.processInfo.environment["BENCH"]  // startup | claim: run one measure

if only == nil || only == "startup" {
    let mixed = ["H H * * *", "H */4 * * *", "H H * * 1-5", "*/15 * * * *", "H 2 * * 0", "H H 1 * *", "@daily", "30 2 * * *"]
    let text = schedule(jobs: 100_000) { mixed[$0 % mixed.count] }
    let before = residentBytes()
    let clock = ManualClock(now: start2030)
    let began = ContinuousClock.now
    let parsed = try ScheduleFile.parse(text: text, file: "bench", config: config, now: start2030, systemZone: .utc)
    ProcessMemory.releaseFreedMemory()  // as the daemon does after loading a schedule
    let parsedAt = ContinuousClock.now
    let rssAfterParse = residentBytes()
    let store = try SnapcronDatabase.inMemory()
    let (service, task) = await startService(parsed.jobs, store: store, backend: FakeSnapshotBackend(), clock: clock)
    let ready = ContinuousClock.now
    ProcessMemory.releaseFreedMemory()
    emit([
        "measure": "startup", "jobs": parsed.jobs.count, "job_struct_bytes": MemoryLayout<Job>.stride, "parse_s": seconds(parsedAt - began),
        "scheduler_start_s": seconds(ready - parsedAt), "total_s": seconds(ready - began),
        "rss_bytes": residentBytes(), "rss_growth_bytes": residentBytes() - before, "rss_after_parse": rssAfterParse,
        
        "warnings": parsed.warnings.count,
    ])
    task.cancel()
    _ = service
}

// MARK: per-fire cost

if only == "startup" { exit(0) }

for storage in ["memory", "wal-file"] where only == nil {
    let count = Int(ProcessInfo.processInfo.environment["FIRES"] ?? "") ?? 10_000
    let text = schedule(jobs: count) { _ in "30 * * * *" }
    let jobs = try ScheduleFile.parse(text: text, file: "bench", config: config, now: start2030, systemZone: .utc).jobs
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("daemon-bench-\(getpid())")
    try? FileManager.default.removeItem(at: directory)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    let store =
        storage == "memory" ? try SnapcronDatabase.inMemory() : try SnapcronDatabase(path: directory.path + "/state.db")
    let clock = ManualClock(now: start2030)
    let backend = FakeSnapshotBackend(defaultBehavior: .active)
    let (service, task) = await startService(jobs, store: store, backend: backend, clock: clock)
    let began = ContinuousClock.now
    var wakes = 0
    while let next = clock.nextDeadline, next <= start2030.addingTimeInterval(1800 + 120) {
        clock.advance(to: next)
        await service.waitUntilIdle()
        wakes += 1
    }
    let elapsed = seconds(ContinuousClock.now - began)
    let succeeded = try store.runs(state: .succeeded, limit: count * 2).count
    emit([
        "measure": "per_fire", "store": storage, "fires": count, "succeeded": succeeded,
        "total_s": elapsed, "us_per_fire": elapsed / Double(count) * 1e6, "loop_wakes": wakes,
    ])
    task.cancel()
    try? FileManager.default.removeItem(at: directory)
}

// MARK: the scheduler's own cost per fire

/// A backend whose create never returns: what remains is the scheduler's work for a fire (pop the queue, compute
/// the next fire, claim the fire, take a slot, mark the run creating: two store transactions) and nothing else.
final class CallCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}

struct StallingBackend: SnapshotBackend {
    let name = "fake"
    let creates = CallCounter()
    func create(target: String, name: String, description: String, logger: Logger) async throws -> ImageRef {
        creates.increment()  // the fire is claimed and its run marked creating by now
        try await Task.sleep(for: .seconds(86_400))
        throw CancellationError()
    }
    func status(_ image: ImageRef, logger: Logger) async throws -> ImageState { .queued }
    func list(target: String, logger: Logger) async throws -> [ImageInfo] { [] }
    func delete(_ image: ImageRef, logger: Logger) async throws {}
    func validate(target: String) throws {}
}

// PostgreSQL (cluster mode, a node with a lease) on a throwaway server, unless NOPG is set or none is installed.
let claimStores =
    ["memory", "wal-file"]
    + (ProcessInfo.processInfo.environment["NOPG"] == nil && PostgresServer.findBinaries() != nil ? ["postgresql"] : [])
if only == nil || only == "claim" { for storage in claimStores {
    let count = 10_000
    let text = schedule(jobs: count) { _ in "30 * * * *" }
    let jobs = try ScheduleFile.parse(text: text, file: "bench", config: config, now: start2030, systemZone: .utc).jobs
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("daemon-bench-claim-\(getpid())")
    try? FileManager.default.removeItem(at: directory)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    var server: PostgresServer?
    let store: any StateStore
    switch storage {
    case "memory": store = try SnapcronDatabase.inMemory()
    case "wal-file": store = try SnapcronDatabase(path: directory.path + "/state.db")
    default:
        let started = try PostgresServer.start()
        server = started
        store = try await PostgresStateStore.open(
            url: started.url(), password: started.password, logger: logger,
            node: ClusterNode(name: "bench", lease: .seconds(30), host: "bench", pid: getpid(), version: "bench"))
    }
    let clock = ManualClock(now: start2030)
    let backend = StallingBackend()
    let service = SchedulerService(
        jobs: jobs, store: store, backends: ["fake": backend], clock: clock,
        limits: ConcurrencyLimits(createCalls: 100_000), logger: logger)
    let task = Task { try await service.run() }
    await service.waitUntilIdle()
    let began = ContinuousClock.now
    clock.advance(to: start2030.addingTimeInterval(1800))
    while backend.creates.value < count {  // a lock read, not a store query: the bench must not compete
        try await Task.sleep(for: .milliseconds(1))
    }
    let elapsed = seconds(ContinuousClock.now - began)
    emit([
        "measure": "scheduler_per_fire", "store": storage, "fires": count,
        "total_s": elapsed, "us_per_fire": elapsed / Double(count) * 1e6,
    ])
    task.cancel()
    _ = await task.result
    await (store as? PostgresStateStore)?.close()
    try? server?.stop()
    try? FileManager.default.removeItem(at: directory)
} }

// MARK: idle wake-ups on the real clock

if only == nil {
    let seconds = Double(ProcessInfo.processInfo.environment["IDLE_SECONDS"] ?? "60") ?? 60
    let text = schedule(jobs: 100_000) { _ in "0 0 1 1 *" }
    let jobs = try ScheduleFile.parse(text: text, file: "bench", config: config, now: Date(), systemZone: .utc).jobs
    let store = try SnapcronDatabase.inMemory()
    let service = SchedulerService(
        jobs: jobs, store: store, backends: ["fake": FakeSnapshotBackend()], clock: SystemClock(), logger: logger)
    let task = Task { try await service.run() }
    try await Task.sleep(for: .seconds(1))
    let before = await service.snapshot().loopIterations
    try await Task.sleep(for: .seconds(seconds))
    let after = await service.snapshot().loopIterations
    emit([
        "measure": "idle", "jobs": jobs.count, "observed_s": seconds,
        "loop_wakeups_per_minute": Double(after - before) * 60 / seconds,
    ])
    task.cancel()
}

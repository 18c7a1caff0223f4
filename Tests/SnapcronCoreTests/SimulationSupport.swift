import BackendTypes
import CronExpression
import ExecDescriptor
import Foundation
import Logging
import SnapcronConfig
import SnapcronStore
import SnapcronTestKit
import SnapshotBackend
import Testing

@testable import SnapcronCore

let silentLogger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// `2026-03-08T07:00:00Z` as a date; traps on a malformed literal (test data only).
func utc(_ text: String) -> Date {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime]
    guard let date = formatter.date(from: text) else { fatalError("bad date literal \(text)") }
    return date
}

/// The jobs of schedule `text`, whose targets name the given fake backends (`fake:vm1`, `fb:x`, ...).
func simulationJobs(_ text: String, backends: [String] = ["fake"]) throws -> [Job] {
    var config = SnapcronConfig.default()
    for name in backends { config.backends[name] = BackendConfig(name: name, type: .exec) }
    return try ScheduleFile.parse(
        text: text, file: "sim/schedule", config: config, now: utc("2026-01-01T00:00:00Z"), systemZone: .utc
    ).jobs
}

/// A manual clock that also counts the sleeps started on it, so a test knows the scheduler has gone back to
/// sleep *after* the clock last moved (a sleeper woken by `advance` may not have run yet).
final class SimulationClock: SchedulerClock, @unchecked Sendable {
    let manual: ManualClock
    private let lock = NSLock()
    private var sleeps = 0

    init(now: Date) { manual = ManualClock(now: now) }

    var sleepCount: Int { lock.withLock { sleeps } }

    func now() -> Date { manual.now() }

    func sleep(until deadline: Date) async throws {
        lock.withLock { sleeps += 1 }
        try await manual.sleep(until: deadline)
    }

    /// Call limits wait on the manual clock without counting as the scheduler going back to sleep.
    func sleepForCallLimit(until deadline: Date) async throws {
        try await manual.sleep(until: deadline)
    }
}

/// Counts images in progress (created, not yet final) per backend, and when each call happened, across backends.
final class BackendObserver: @unchecked Sendable {
    private let lock = NSLock()
    private var inProgress: [String: Set<String>] = [:]
    private(set) var maxInProgress: [String: Int] = [:]
    private(set) var maxTotal = 0
    private(set) var createTimes: [String: [Date]] = [:]

    func created(backend: String, image: String) {
        lock.withLock {
            inProgress[backend, default: []].insert(image)
            maxInProgress[backend] = max(maxInProgress[backend] ?? 0, inProgress[backend]!.count)
            maxTotal = max(maxTotal, inProgress.values.map(\.count).reduce(0, +))
        }
    }

    func finished(backend: String, image: String) {
        _ = lock.withLock { inProgress[backend]?.remove(image) }
    }

    func createCalled(name: String, at date: Date) {
        lock.withLock { createTimes[name, default: []].append(date) }
    }

    var snapshot: (perBackend: [String: Int], total: Int, createTimes: [String: [Date]]) {
        lock.withLock { (maxInProgress, maxTotal, createTimes) }
    }
}

/// A fake backend seen through a `BackendObserver`.
struct ObservedBackend: SnapshotBackend {
    let fake: FakeSnapshotBackend
    let observer: BackendObserver
    let clock: any SchedulerClock

    var name: String { fake.name }

    func create(target: String, name imageName: String, description: String, logger: Logger) async throws -> ImageRef {
        observer.createCalled(name: imageName, at: clock.now())
        let ref = try await fake.create(target: target, name: imageName, description: description, logger: logger)
        observer.created(backend: name, image: ref.id)
        return ref
    }

    func status(_ image: ImageRef, logger: Logger) async throws -> ImageState {
        let state = try await fake.status(image, logger: logger)
        if state.isFinal { observer.finished(backend: name, image: image.id) }
        return state
    }

    func list(target: String, logger: Logger) async throws -> [ImageInfo] {
        try await fake.list(target: target, logger: logger)
    }

    func resumeAfterRestart(_ image: ImageRef, target: String, logger: Logger) async {
        await fake.resumeAfterRestart(image, target: target, logger: logger)
    }

    func delete(_ image: ImageRef, logger: Logger) async throws {
        try await fake.delete(image, logger: logger)
    }

    func validate(target: String) throws { try fake.validate(target: target) }
}

/// A scheduler on a manual clock with fake backends and an in-memory store, driven deadline to deadline.
final class Simulation: @unchecked Sendable {
    let clock: SimulationClock
    let store: SnapcronDatabase
    let fakes: [String: FakeSnapshotBackend]
    let observer = BackendObserver()
    var limits: ConcurrencyLimits
    var pacing: RunPacing
    /// Wraps each backend before the scheduler sees it (a gate, a counter, a create that hangs).
    var wrap: (@Sendable (any SnapshotBackend) -> any SnapshotBackend)?
    /// The store the scheduler sees, over `store` (one that fails for a while, say); nil: `store` itself.
    var storeWrap: (@Sendable (SnapcronDatabase) -> any StateStore)?
    private(set) var service: SchedulerService!
    private var task: Task<Void, any Error>?
    /// How many times the clock was moved to a scheduler deadline.
    private(set) var steps = 0

    init(
        start: Date, backends: [String] = ["fake"], defaultBehavior: FakeSnapshotBackend.ImageBehavior = .active,
        limits: ConcurrencyLimits = ConcurrencyLimits(), pacing: RunPacing = RunPacing()
    ) throws {
        clock = SimulationClock(now: start)
        store = try SnapcronDatabase.inMemory()
        var fakes: [String: FakeSnapshotBackend] = [:]
        for name in backends { fakes[name] = FakeSnapshotBackend(name: name, defaultBehavior: defaultBehavior) }
        self.fakes = fakes
        self.limits = limits
        self.pacing = pacing
    }

    var fake: FakeSnapshotBackend { fakes["fake"]! }
    var now: Date { clock.now() }

    /// Starts a scheduler (a new one after `stop`, on the same store) and waits until it sleeps.
    @discardableResult
    func start(_ jobs: [Job], pausePoint: (@Sendable (String) async -> Void)? = nil) async -> SchedulerService {
        var backends: [String: any SnapshotBackend] = [:]
        for (name, fake) in fakes {
            let observed = ObservedBackend(fake: fake, observer: observer, clock: clock)
            backends[name] = wrap?(observed) ?? observed
        }
        let service = SchedulerService(
            jobs: jobs, store: storeWrap?(store) ?? store, backends: backends, clock: clock, limits: limits,
            pacing: pacing, logger: silentLogger, pausePoint: pausePoint)
        self.service = service
        let sleeps = clock.sleepCount
        task = Task { try await service.run() }
        await settle(after: sleeps)
        return service
    }

    /// Cancels the running scheduler and waits for it to return (a clean stop).
    func stop() async {
        task?.cancel()
        do {
            try await task?.value
        } catch {
            Issue.record("the scheduler stopped with \(error)")
        }
        task = nil
    }

    /// Waits until the scheduler has handled everything due now, has nothing in flight and sleeps on the clock,
    /// in a sleep begun after the clock's sleep count was `sleeps`.
    func settle(after sleeps: Int) async {
        for _ in 0..<5_000_000 {
            await service.waitUntilIdle()
            if clock.sleepCount > sleeps, clock.manual.nextDeadline != nil { return }
            await Task.yield()
        }
        Issue.record("the scheduler did not settle at \(now)")
    }

    /// Lets the scheduler look at its state again (after a request such as `apply` or `trigger`).
    func settle() async {
        await service.waitUntilIdle()
        for _ in 0..<5_000_000 {
            await service.waitUntilIdle()
            if clock.manual.nextDeadline != nil { return }
            await Task.yield()
        }
        Issue.record("the scheduler did not settle at \(now)")
    }

    /// Moves the clock to `date` (waking whatever is due) and waits until the scheduler is idle again.
    func advance(to date: Date) async {
        let sleeps = clock.sleepCount
        let wakes = clock.manual.nextDeadline.map { $0 <= date } ?? false
        clock.manual.advance(to: date)
        if wakes {
            await settle(after: sleeps)
        } else {
            await settle()  // nothing was due: the scheduler sleeps on
        }
    }

    /// Steps the wall clock like `date -s` (waking the scheduler) and waits until it is idle again.
    func step(to date: Date) async {
        let sleeps = clock.sleepCount
        clock.manual.step(to: date)
        await settle(after: sleeps)
    }

    /// Jumps from scheduler deadline to scheduler deadline until `end`, then to `end`.
    func run(until end: Date) async {
        while let next = clock.manual.nextDeadline, next <= end {
            await advance(to: next)
            steps += 1
        }
        if now < end { await advance(to: end) }
    }

    /// Every run of `job` (or of every job), oldest fire first.
    func runs(_ job: String? = nil) throws -> [RunRecord] {
        try store.runs(job: job, limit: 1_000_000).reversed()
    }
}

extension Array where Element == RunRecord {
    var scheduled: [Date] { map(\.scheduledAt) }
    func inState(_ state: RunState) -> [RunRecord] { filter { $0.state == state } }
}

/// Local wall-clock arithmetic from the tz database alone (Foundation's `TimeZone`), independent of the cron
/// engine: the instants at which a wall time happens in a zone.
struct WallClock {
    let zone: TimeZone
    let calendar: Calendar

    init(_ identifier: String) {
        zone = TimeZone(identifier: identifier)!
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        self.calendar = calendar
    }

    /// Every instant whose local wall time is the given one: none in a gap, two in an overlap.
    func instants(_ year: Int, _ month: Int, _ day: Int, _ hour: Int, _ minute: Int) -> [Date] {
        let wall = calendar.date(from: DateComponents(year: year, month: month, day: day, hour: hour, minute: minute))!
        let offsets = Set([-14, 0, 14].map { zone.secondsFromGMT(for: wall.addingTimeInterval(TimeInterval($0 * 3600))) })
        return offsets.map { wall.addingTimeInterval(-TimeInterval($0)) }
            .filter { zone.secondsFromGMT(for: $0) == Int(wall.timeIntervalSince($0)) }
            .sorted()
    }

    /// D11/D12 for a fixed job: the first occurrence, or the end of the gap when the wall time does not exist.
    func fixedInstant(_ year: Int, _ month: Int, _ day: Int, _ hour: Int, _ minute: Int) -> Date {
        if let first = instants(year, month, day, hour, minute).first { return first }
        let wall = calendar.date(from: DateComponents(year: year, month: month, day: day, hour: hour, minute: minute))!
        return zone.nextDaylightSavingTimeTransition(after: wall.addingTimeInterval(-2 * 86_400))!
    }

    /// The local dates (year, month, day) of `year`, optionally only in `months`.
    func days(of year: Int, months: Set<Int>? = nil) -> [(Int, Int, Int)] {
        var result: [(Int, Int, Int)] = []
        var date = calendar.date(from: DateComponents(year: year, month: 1, day: 1))!
        while calendar.component(.year, from: date) == year {
            let parts = calendar.dateComponents([.year, .month, .day], from: date)
            if months?.contains(parts.month!) ?? true { result.append((parts.year!, parts.month!, parts.day!)) }
            date = date.addingTimeInterval(86_400)
        }
        return result
    }

    /// The weekday (0 = Sunday) of a date.
    func weekday(_ year: Int, _ month: Int, _ day: Int) -> Int {
        calendar.component(.weekday, from: calendar.date(from: DateComponents(year: year, month: month, day: day))!) - 1
    }

    /// The local year of an instant.
    func localYear(of date: Date) -> Int {
        var local = Calendar(identifier: .gregorian)
        local.timeZone = zone
        return local.component(.year, from: date)
    }
}

/// The documented `H` hash (docs/cron-syntax.md): FNV-1a 64 over the name, a 0 byte and the field number, then
/// the SplitMix64 finalizer. Written out here from the documentation, not taken from the parser.
func documentedHash(_ name: String, field: UInt8) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in Array(name.utf8) + [0, field] {
        h ^= UInt64(byte)
        h = h &* 0x0000_0100_0000_01B3
    }
    h = (h ^ (h >> 30)) &* 0xbf58_476d_1ce4_e5b9
    h = (h ^ (h >> 27)) &* 0x94d0_49bb_1331_11eb
    return h ^ (h >> 31)
}

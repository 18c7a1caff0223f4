import Foundation
import Logging
import SnapcronStore
import SnapshotBackend
import Synchronization

@testable import SnapcronCore

// The parts of the run engine's model-based test (RunEngineModelTests): a clock that knows who waits on it, a
// store that dies mid-flight, and a chaotic backend that checks the invariants where they can be broken.

// MARK: Random numbers

/// SplitMix64: a tiny seeded generator so that a failing run prints a seed that reproduces it.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A generator for one named decision: the same seed and key always draw the same numbers, whatever order
    /// concurrent calls arrive in.
    init(seed: UInt64, key: String) {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3 }
        self.init(seed: hash)
    }

    mutating func chance(_ probability: Double) -> Bool {
        probability > 0 && Double.random(in: 0..<1, using: &self) < probability
    }

    mutating func pick<T>(_ items: [T]) -> T { items[Int.random(in: 0..<items.count, using: &self)] }
}

// MARK: The clock

/// The model's time: the provider's true time (monotonic: backends, bake times, replies and call limits run on
/// it) and the host's wall clock (true time plus a skew that clock steps change), which the scheduler reads.
///
/// Every sleeper is known with its process and kind, so the driver can tell exactly when a process has nothing
/// left to do but wait for time: its loop asleep, and every task of its executor waiting for a backend reply.
/// A process that crashed is frozen: its sleepers never wake (a dead process gets no replies and no timers).
final class ModelClock: @unchecked Sendable {
    enum Kind { case loop, callLimit, reply }

    private struct Sleeper {
        var process: Int
        var kind: Kind
        /// Wall-clock deadline of a loop sleep; true-time deadline of the others.
        var deadline: Date
        var continuation: CheckedContinuation<Void, any Error>
    }

    private let lock = NSLock()
    private var trueNow: Date
    private var skew: TimeInterval = 0
    private var sleepers: [UInt64: Sleeper] = [:]
    private var frozenSleepers: [UInt64: Sleeper] = [:]
    private var frozen: Set<Int> = []
    /// Call limits that fired and have not yet cut their call, per process.
    private var cuts: [Int: Int] = [:]
    private var nextID: UInt64 = 0

    init(now: Date) { trueNow = now }

    var providerNow: Date { lock.withLock { trueNow } }
    var wallNow: Date { lock.withLock { trueNow.addingTimeInterval(skew) } }
    var currentSkew: TimeInterval { lock.withLock { skew } }

    func isFrozen(_ process: Int) -> Bool { lock.withLock { frozen.contains(process) } }

    /// Suspends until the deadline: a wall-clock one for `.loop` and `.callLimit` (a call limit is turned into
    /// true time at once, as a monotonic timer would), a true-time one for `.reply`.
    func sleep(process: Int, kind: Kind, until deadline: Date) async throws {
        let id: UInt64 = lock.withLock {
            nextID += 1
            return nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                lock.lock()
                let due: Date
                switch kind {
                case .loop: due = deadline
                case .callLimit: due = deadline.addingTimeInterval(-skew)
                case .reply: due = deadline
                }
                let sleeper = Sleeper(process: process, kind: kind, deadline: due, continuation: continuation)
                if frozen.contains(process) {
                    frozenSleepers[id] = sleeper
                    lock.unlock()
                } else if Task.isCancelled {
                    lock.unlock()
                    continuation.resume(throwing: CancellationError())
                } else if trueDue(sleeper) <= trueNow {
                    lock.unlock()
                    continuation.resume()
                } else {
                    sleepers[id] = sleeper
                    lock.unlock()
                }
            }
        } onCancel: {
            lock.lock()
            guard let sleeper = sleepers.removeValue(forKey: id) else {
                lock.unlock()
                return
            }
            // A reply cut by its call limit: the limit's work is done.
            if sleeper.kind == .reply, let pending = cuts[sleeper.process], pending > 0 {
                cuts[sleeper.process] = pending - 1
            }
            lock.unlock()
            sleeper.continuation.resume(throwing: CancellationError())
        }
    }

    private func trueDue(_ sleeper: Sleeper) -> Date {
        sleeper.kind == .loop ? sleeper.deadline.addingTimeInterval(-skew) : sleeper.deadline
    }

    /// The earliest true-time deadline of a sleeper that can still wake.
    var nextDue: Date? {
        lock.withLock { sleepers.values.map(trueDue).min() }
    }

    /// Moves true time (and the wall clock with it) to `date`, waking nobody.
    func set(trueNow date: Date) {
        lock.withLock { trueNow = max(trueNow, date) }
    }

    /// Wakes the sleepers of `kinds` that are due.
    func wake(_ kinds: Set<Kind>) {
        lock.lock()
        var woken: [CheckedContinuation<Void, any Error>] = []
        for id in sleepers.keys.sorted() {
            guard let sleeper = sleepers[id], kinds.contains(sleeper.kind), trueDue(sleeper) <= trueNow else {
                continue
            }
            sleepers[id] = nil
            if sleeper.kind == .callLimit { cuts[sleeper.process, default: 0] += 1 }
            woken.append(sleeper.continuation)
        }
        lock.unlock()
        for continuation in woken { continuation.resume() }
    }

    /// Steps the wall clock by `delta`; `wakesLoops` as `SystemClock` does (its timerfd is cancelled on a step).
    /// Call limits and replies run on true time and keep their deadlines.
    func step(by delta: TimeInterval, wakesLoops: Bool) {
        lock.lock()
        skew += delta
        var woken: [CheckedContinuation<Void, any Error>] = []
        if wakesLoops {
            for (id, sleeper) in sleepers.sorted(by: { $0.key < $1.key }) where sleeper.kind == .loop {
                sleepers[id] = nil
                woken.append(sleeper.continuation)
            }
        }
        lock.unlock()
        for continuation in woken { continuation.resume() }
    }

    /// A crash: nothing of `process` wakes again until ``release(_:kinds:)``.
    func freeze(_ process: Int) {
        lock.withLock {
            frozen.insert(process)
            for (id, sleeper) in sleepers where sleeper.process == process {
                sleepers[id] = nil
                frozenSleepers[id] = sleeper
            }
            cuts[process] = nil
        }
    }

    /// Throws `CancellationError` into the frozen sleepers of `process` of `kinds` (clean-up); returns how many.
    @discardableResult
    func release(_ process: Int, kinds: Set<Kind>) -> Int {
        lock.lock()
        var woken: [CheckedContinuation<Void, any Error>] = []
        for (id, sleeper) in frozenSleepers where sleeper.process == process && kinds.contains(sleeper.kind) {
            frozenSleepers[id] = nil
            woken.append(sleeper.continuation)
        }
        lock.unlock()
        for continuation in woken { continuation.resume(throwing: CancellationError()) }
        return woken.count
    }

    struct ProcessState {
        var loopAsleep: Bool
        var replies: Int
        var cuts: Int
        var frozenLoop: Bool
    }

    func state(of process: Int) -> ProcessState {
        lock.withLock {
            var state = ProcessState(loopAsleep: false, replies: 0, cuts: cuts[process] ?? 0, frozenLoop: false)
            for sleeper in sleepers.values where sleeper.process == process {
                if sleeper.kind == .loop { state.loopAsleep = true }
                if sleeper.kind == .reply { state.replies += 1 }
            }
            state.frozenLoop = frozenSleepers.values.contains { $0.process == process && $0.kind == .loop }
            return state
        }
    }

    func hasLoopSleeper(_ process: Int) -> Bool { state(of: process).loopAsleep }
}

/// One process's view of the model clock.
struct ProcessClock: SchedulerClock {
    let process: Int
    let model: ModelClock

    func now() -> Date { model.wallNow }

    func sleep(until deadline: Date) async throws {
        try await model.sleep(process: process, kind: .loop, until: deadline)
    }

    func sleepForCallLimit(until deadline: Date) async throws {
        try await model.sleep(process: process, kind: .callLimit, until: deadline)
    }

    var hasWaitingSleeper: Bool { model.hasLoopSleeper(process) }
}

// MARK: The store

/// The error of a store whose process crashed.
struct ProcessCrashed: Error, CustomStringConvertible {
    var description: String { "the process crashed" }
}

/// A `StateStore` over the real SQLite store that dies after a number of calls: from then on every call of that
/// process throws. The call that kills it may still commit (the process dies before it hears the answer).
final class CrashingStore: StateStore {
    let base: SnapcronDatabase
    private struct Budget {
        var remaining: Int?
        var dead = false
        var calls = 0
    }
    private let budget: Mutex<Budget>
    private let commitsLastCall: Bool
    private let onDeath: @Sendable () -> Void

    /// Acts as a cluster's store (renewals, takeovers, pauses read back) when set.
    let lease: Duration?

    init(
        base: SnapcronDatabase, calls: Int?, commitsLastCall: Bool, lease: Duration? = nil,
        onDeath: @escaping @Sendable () -> Void
    ) {
        self.base = base
        self.lease = lease
        budget = Mutex(Budget(remaining: calls))
        self.commitsLastCall = commitsLastCall
        self.onDeath = onDeath
    }

    var isDead: Bool { budget.withLock { $0.dead } }
    var calls: Int { budget.withLock { $0.calls } }

    /// Dies now, without a last call.
    func kill() { budget.withLock { $0.dead = true } }

    /// Answers again, as a database server back from a restart does.
    func revive() {
        budget.withLock {
            $0.dead = false
            $0.remaining = nil
        }
    }

    /// Dies after `calls` more calls (nil: never).
    func setRemaining(_ calls: Int?) { budget.withLock { if !$0.dead { $0.remaining = calls } } }

    private enum Verdict { case go, dead, last }

    private func pass<T>(_ body: () throws -> T) throws -> T {
        let verdict = budget.withLock { budget -> Verdict in
            if budget.dead { return .dead }
            budget.calls += 1
            guard let remaining = budget.remaining else { return .go }
            if remaining <= 1 {
                budget.dead = true
                return .last
            }
            budget.remaining = remaining - 1
            return .go
        }
        switch verdict {
        case .go:
            return try body()
        case .dead:
            throw ProcessCrashed()
        case .last:
            onDeath()
            if commitsLastCall { _ = try? body() }
            throw ProcessCrashed()
        }
    }

    func allJobStates() async throws -> [JobStateRecord] { try pass { try base.allJobStates() } }
    func unfinishedRuns() async throws -> [RunRecord] { try pass { try base.unfinishedRuns() } }
    func jobsWithImages() async throws -> Set<String> { try pass { try base.jobsWithImages() } }
    func latestRecordedInstant() async throws -> Date? { try pass { try base.latestRecordedInstant() } }
    func installationID() async throws -> String { try pass { try base.installationID() } }
    func recordHookResult(_ record: HookRecord) async throws { try pass { try base.recordHookResult(record) } }
    func targetsOfRunsEndedWithoutImage(since: Date) async throws -> [(backend: String, target: String)] {
        try pass { try base.targetsOfRunsEndedWithoutImage(since: since) }
    }
    func clampLastScheduled(notAfter now: Date) async throws -> [String] {
        try pass { try base.clampLastScheduled(notAfter: now) }
    }
    func claimRuns(_ claims: [RunClaim], now: Date) async throws -> [RunRecord?] {
        if claimCommitsThenFails.withLock({ flag in defer { flag = false }; return flag }) {
            _ = try base.claimRuns(claims, now: now)
            throw ProcessCrashed()
        }
        return try pass { try base.claimRuns(claims, now: now) }
    }
    func pausedJobNames() async throws -> Set<String> { try pass { try base.pausedJobNames() } }
    func ownUnfinishedRun(job: String, scheduledAt: Date) async throws -> RunRecord? {
        try await pass { try base }.ownUnfinishedRun(job: job, scheduledAt: scheduledAt)
    }

    /// The next claim commits, but its answer is lost (the connection dropped just then).
    let claimCommitsThenFails = Mutex(false)
    func recordMissed(job: String, scheduledAt: Date, now: Date, reason: String) async throws -> RunRecord? {
        try pass { try base.recordMissed(job: job, scheduledAt: scheduledAt, now: now, reason: reason) }
    }
    func recordSkipped(job: String, scheduledAt: Date, trigger: RunTrigger, now: Date, reason: String) async throws
        -> RunRecord?
    {
        try pass {
            try base.recordSkipped(job: job, scheduledAt: scheduledAt, trigger: trigger, now: now, reason: reason)
        }
    }
    func setPaused(name: String, _ paused: Bool, now: Date) async throws -> JobStateRecord {
        try pass { try base.setPaused(name: name, paused, now: now) }
    }
    func markCreating(runIDs: [Int64], now: Date) async throws -> [RunRecord?] {
        try pass { try base.markCreating(runIDs: runIDs, now: now) }
    }
    func markWaiting(runID: Int64, imageID: String, description: String?, now: Date, nextPollAt: Date) async throws
        -> RunRecord
    {
        try pass {
            try base.markWaiting(
                runID: runID, imageID: imageID, description: description, now: now, nextPollAt: nextPollAt)
        }
    }
    func updatePoll(runID: Int64, imageState: StoredImageState, sizeBytes: Int64?, nextPollAt: Date?, now: Date)
        async throws -> RunRecord
    {
        try pass {
            try base.updatePoll(
                runID: runID, imageState: imageState, sizeBytes: sizeBytes, nextPollAt: nextPollAt, now: now)
        }
    }
    func finishRun(runID: Int64, state: RunState, error: String?, sizeBytes: Int64?, now: Date) async throws
        -> RunRecord
    {
        try pass { try base.finishRun(runID: runID, state: state, error: error, sizeBytes: sizeBytes, now: now) }
    }
    func recordRetryableFailure(runID: Int64, error: String, nextAttemptAt: Date) async throws -> RunRecord {
        try pass { try base.recordRetryableFailure(runID: runID, error: error, nextAttemptAt: nextAttemptAt) }
    }
    func adoptImage(runID: Int64, imageID: String, description: String?, now: Date) async throws -> RunRecord {
        try pass { try base.adoptImage(runID: runID, imageID: imageID, description: description, now: now) }
    }
    func run(id: Int64) async throws -> RunRecord? { try pass { try base.run(id: id) } }
    func run(job: String, scheduledAt: Date) async throws -> RunRecord? {
        try pass { try base.run(job: job, scheduledAt: scheduledAt) }
    }
    func runs(job: String?, state: RunState?, since: Date?, limit: Int) async throws -> [RunRecord] {
        try pass { try base.runs(job: job, state: state, since: since, limit: limit) }
    }
    func lastFailure() async throws -> RunRecord? { try pass { try base.lastFailure() } }
    func images(job: String, includeDeleted: Bool) async throws -> [ImageRecord] {
        try pass { try base.images(job: job, includeDeleted: includeDeleted) }
    }
    func image(id: String, backend: String) async throws -> ImageRecord? {
        try pass { try base.image(id: id, backend: backend) }
    }
    func imagesLeftUnfinished(limit: Int) async throws -> [ImageRecord] {
        try pass { try base.imagesLeftUnfinished(limit: limit) }
    }
    func imageStates(backend: String) async throws -> [String: StoredImageState] {
        try pass { try base.imageStates(backend: backend) }
    }
    func recordFoundImage(_ image: FoundImage, now: Date) async throws -> ImageRecord? {
        try pass { try base.recordFoundImage(image, now: now) }
    }
    func imageTargets() async throws -> [ImageTarget] { try pass { try base.imageTargets() } }
    func setPinned(id: String, backend: String, _ pinned: Bool) async throws -> ImageRecord {
        try pass { try base.setPinned(id: id, backend: backend, pinned) }
    }
    func updateImageState(id: String, backend: String, state: StoredImageState, sizeBytes: Int64?, now: Date)
        async throws -> ImageRecord
    {
        try pass { try base.updateImageState(id: id, backend: backend, state: state, sizeBytes: sizeBytes, now: now) }
    }
    func recordRetentionDecisions(_ decisions: [(ImageKey, RetentionDecision)]) async throws -> [ImageRecord] {
        try pass { try base.recordRetentionDecisions(decisions) }
    }
    func beginDeleting(id: String, backend: String, reason: String, now: Date) async throws -> ImageRecord? {
        try pass { try base.beginDeleting(id: id, backend: backend, reason: reason, now: now) }
    }
    func markImageDeleted(id: String, backend: String, now: Date, reason: String) async throws -> ImageRecord {
        try pass { try base.markImageDeleted(id: id, backend: backend, now: now, reason: reason) }
    }
    func abortDeleting(id: String, backend: String, error: String, now: Date) async throws -> ImageRecord? {
        try pass { try base.abortDeleting(id: id, backend: backend, error: error, now: now) }
    }
    func imagesBeingDeleted() async throws -> [ImageRecord] { try pass { try base.imagesBeingDeleted() } }
    func newestActiveImageDates(notAfter now: Date) async throws -> [String: Date] {
        try pass { try base.newestActiveImageDates(notAfter: now) }
    }
    func pruneHistory(olderThan cutoff: Date) async throws -> HistoryPruneResult {
        try pass { try base.pruneHistory(olderThan: cutoff) }
    }
    func health() async -> StoreHealth {
        (try? pass { base.healthCheck() }) ?? StoreHealth(isOK: false, message: "the process crashed")
    }
    func jobState(name: String) async throws -> JobStateRecord? { try pass { try base.jobState(name: name) } }
    func hookResults(runIDs: [Int64]) async throws -> [Int64: [HookRecord]] {
        try pass { try base.hookResults(runIDs: runIDs) }
    }
    func imageCensus(notAfter now: Date) async throws -> [ImageCensusRow] {
        try pass { try base.imageCensus(notAfter: now) }
    }
    func lastSuccessfulRunEnds(jobs: [String]) async throws -> [String: Date] {
        try pass { try base.lastSuccessfulRunEnds(jobs: jobs) }
    }
    func checkpoint() async throws { try pass { try base.checkpoint() } }
    var runLease: Duration? { lease }
    func renewRunLease() async throws -> Bool { try pass { true } }
    func takeOverRuns() async throws -> [RunRecord] { [] }
    func clusterNodes() async throws -> [ClusterNodeRecord] { [] }
    func beginRetention(job: String) async throws -> Bool { true }
    func endRetention(job: String) async throws {}
    func publishSchedule(_ fingerprints: [String: String]) async throws -> [String: [String]] { [:] }
}

// MARK: The backend

/// How often each kind of trouble happens at the chaos backend; zero everywhere once the test is quiet.
struct ChaosSettings: Sendable {
    var createFailsTransient = 0.0
    var createFailsPermanent = 0.0
    var createLosesReply = 0.0
    var createReplyLate = 0.0
    var pollFails = 0.0
    var pollUnanswered = 0.0
    var pollLate = 0.0
    var listFails = 0.0
    var listLate = 0.0
    var deleteFailsTransient = 0.0
    var deleteFailsPermanent = 0.0
    var deleteLosesReply = 0.0
    var deleteLate = 0.0
    /// The longest late reply (true time); past the call's limit the call is cut.
    var maxReplyDelay: TimeInterval = 0
    /// Images end in `error` this often; bake up to `maxBake` (queued, then saving).
    var imageFails = 0.0
    var maxBake: TimeInterval = 120

    static let quiet = ChaosSettings()

    static func random(using rng: inout SplitMix64) -> ChaosSettings {
        // A third of the seeds are calm, a third rough, a third wild.
        let level = [0.02, 0.1, 0.25][Int.random(in: 0..<3, using: &rng)]
        func p() -> Double { Double.random(in: 0...level, using: &rng) }
        var chaos = ChaosSettings()
        chaos.createFailsTransient = p()
        chaos.createFailsPermanent = p() / 4
        chaos.createLosesReply = p()
        chaos.createReplyLate = p()
        chaos.pollFails = p()
        chaos.pollUnanswered = p()
        chaos.pollLate = p()
        chaos.listFails = p()
        chaos.listLate = p()
        chaos.deleteFailsTransient = p()
        chaos.deleteFailsPermanent = p() / 2
        chaos.deleteLosesReply = p()
        chaos.deleteLate = p()
        chaos.maxReplyDelay = rng.pick([30, 240, 900, 3 * 3600])
        chaos.imageFails = p() / 2
        chaos.maxBake = rng.pick([60, 600, 3600, 3 * 3600])
        return chaos
    }
}

/// The pins the test confirmed through the store and did not undo.
final class PinBook: @unchecked Sendable {
    private let lock = NSLock()
    private var pins: Set<ImageKey> = []

    func set(_ key: ImageKey, pinned: Bool) {
        lock.withLock {
            if pinned { pins.insert(key) } else { pins.remove(key) }
        }
    }

    func contains(_ key: ImageKey) -> Bool { lock.withLock { pins.contains(key) } }
    var all: Set<ImageKey> { lock.withLock { pins } }
}

/// The cloud of the model: every backend's images, baking on the provider's time; calls that fail, lose their
/// reply or answer late, decided per call from the seed. It checks, where a delete or create happens, what the
/// engine must never do, and keeps every image it ever made.
actor ChaosWorld {
    struct Image: Sendable {
        var id: String
        var backend: String
        var target: String
        var name: String
        var description: String
        var createdAt: Date
        var queuedUntil: Date
        var readyAt: Date
        var failure: String?
        var foreign: Bool
        /// The fire its marker names (`job@scheduled`), else its name.
        var fire: String = ""
        var deletedAt: Date?

        func state(at now: Date) -> ImageState {
            if now < queuedUntil { return .queued }
            if now < readyAt { return .saving }
            return failure.map { .error($0) } ?? .active
        }
    }

    let seed: UInt64
    let clock: ModelClock
    let store: SnapcronDatabase
    let pins: PinBook
    /// Backends that can list every image at once (`listAll`); the others are swept target by target.
    let listsAll: Set<String>
    var chaos: ChaosSettings
    private var live: [ImageKey: Image] = [:]
    private var idsByName: [String: ImageKey] = [:]
    /// Every image snapcron made, by the fire its marker names, deleted ones too.
    private(set) var madeByFire: [String: [Image]] = [:]
    private var counters: [String: Int] = [:]
    private(set) var violations: [String] = []
    private(set) var stats: [String: Int] = [:]

    init(seed: UInt64, clock: ModelClock, store: SnapcronDatabase, pins: PinBook, listsAll: Set<String>,
        chaos: ChaosSettings)
    {
        self.seed = seed
        self.clock = clock
        self.store = store
        self.pins = pins
        self.listsAll = listsAll
        self.chaos = chaos
    }

    func setChaos(_ settings: ChaosSettings) { chaos = settings }

    var liveImages: [Image] { live.values.sorted { ($0.backend, $0.id) < ($1.backend, $1.id) } }

    func violation(_ text: String) { violations.append(text) }

    private func count(_ what: String) { stats[what, default: 0] += 1 }

    /// The generator of one call: keyed by what the call is about and how many such calls came before.
    private func roll(_ key: String) -> SplitMix64 {
        let n = counters[key, default: 0]
        counters[key] = n + 1
        return SplitMix64(seed: seed, key: "\(key)#\(n)")
    }

    private func gone(_ backend: String, _ operation: SnapshotBackendError.Operation) -> SnapshotBackendError {
        .transient(backend: backend, operation, "connection closed (the process is gone)")
    }

    /// Waits `delay` of true time for the reply; a call cut meanwhile (its limit) loses it.
    private func late(_ delay: TimeInterval, process: Int, backend: String, _ operation: SnapshotBackendError.Operation)
        async throws(SnapshotBackendError)
    {
        do {
            try await clock.sleep(process: process, kind: .reply, until: clock.providerNow.addingTimeInterval(delay))
        } catch {
            throw .transient(backend: backend, operation, "the call was cut before its reply came")
        }
    }

    /// The same image gets the same id in every replay of a seed, whatever order calls come in.
    static func id(backend: String, name: String, earlier: Int) -> String {
        let short = name.hasPrefix("snapcron-") ? String(name.dropFirst("snapcron-".count)) : name
        return "\(backend)/\(short)" + (earlier > 0 ? "#\(earlier)" : "")
    }

    private func delay(_ rng: inout SplitMix64) -> TimeInterval {
        max(1, Double.random(in: 0...max(1, chaos.maxReplyDelay), using: &rng).rounded())
    }

    // MARK: Foreign images

    /// An image another installation or a person made on `target`.
    @discardableResult
    func addForeign(backend: String, target: String, name: String, description: String, state: ImageState = .active)
        -> String
    {
        let now = clock.providerNow
        let image = Image(
            id: "\(backend)/x-\(name)", backend: backend, target: target, name: name, description: description,
            createdAt: now.addingTimeInterval(-3600),
            queuedUntil: state == .queued ? .distantFuture : now, readyAt: state == .active ? now : .distantFuture,
            failure: nil, foreign: true)
        let key = ImageKey(id: image.id, backend: backend)
        live[key] = image
        idsByName[backend + "\u{0}" + target + "\u{0}" + name] = key
        return image.id
    }

    // MARK: Calls

    func create(
        backend: String, process: Int, target: String, name: String, description: String, nameIsFresh: Bool
    ) async throws -> CreatedImage {
        guard !clock.isFrozen(process) else { throw gone(backend, .create) }
        let nameKey = backend + "\u{0}" + target + "\u{0}" + name
        // A backend may skip its idempotency lookup for a fresh name: the engine must never be wrong about it.
        if nameIsFresh, idsByName[nameKey] != nil { violation("create of \(name) said fresh, but that name was made before") }
        if nameIsFresh { count("create.fresh") }
        var rng = roll("create \(backend) \(target) \(name)")
        if rng.chance(chaos.createFailsTransient) {
            count("create.failed")
            throw SnapshotBackendError.transient(backend: backend, .create, target: target, "503 service unavailable")
        }
        if rng.chance(chaos.createFailsPermanent) {
            count("create.refused")
            throw SnapshotBackendError.permanent(backend: backend, .create, target: target, "quota exceeded")
        }
        let image: Image
        if let key = idsByName[nameKey], let existing = live[key] {
            image = existing
            count("create.found")
        } else {
            let marker = ImageMarker.parse(description)
            let fire = marker.map { "\($0.job)@\($0.scheduled.map(RunEngine.iso) ?? "?")" } ?? name
            if let earlier = madeByFire[fire], !earlier.isEmpty {
                violation(
                    "second image for one fire (\(fire)): \(name) on \(backend):\(target) (earlier: "
                        + earlier.map { "\($0.id)\($0.deletedAt == nil ? "" : " deleted")" }.joined(separator: ", ")
                        + ")")
            }
            var bake = SplitMix64(seed: seed, key: "bake \(name)")
            let now = clock.providerNow
            let queued = Double.random(in: 0...min(60, chaos.maxBake), using: &bake).rounded()
            let saving = Double.random(in: 0...chaos.maxBake, using: &bake).rounded()
            let made = Image(
                id: Self.id(backend: backend, name: name, earlier: madeByFire[fire]?.count ?? 0), backend: backend,
                target: target, name: name, description: description,
                createdAt: now, queuedUntil: now.addingTimeInterval(queued),
                readyAt: now.addingTimeInterval(queued + saving),
                failure: bake.chance(chaos.imageFails) ? "disk read error" : nil, foreign: false, fire: fire)
            let key = ImageKey(id: made.id, backend: backend)
            live[key] = made
            idsByName[nameKey] = key
            madeByFire[fire, default: []].append(made)
            image = made
            count("create.made")
        }
        if rng.chance(chaos.createLosesReply) {
            count("create.reply_lost")
            throw SnapshotBackendError.transient(backend: backend, .create, target: target, "connection reset")
        }
        if rng.chance(chaos.createReplyLate) {
            count("create.late")
            try await late(delay(&rng), process: process, backend: backend, .create)
        }
        let state = image.state(at: clock.providerNow)
        return CreatedImage(ref: ImageRef(id: image.id), state: state == .active && rng.chance(0.5) ? .active : nil)
    }

    func statuses(backend: String, process: Int, _ refs: [ImageRef]) async
        -> [ImageRef: Result<ImageState, SnapshotBackendError>]
    {
        func all(_ error: SnapshotBackendError) -> [ImageRef: Result<ImageState, SnapshotBackendError>] {
            Dictionary(refs.map { ($0, .failure(error)) }, uniquingKeysWith: { a, _ in a })
        }
        guard !clock.isFrozen(process) else { return all(gone(backend, .status)) }
        var rng = roll("status \(backend) \(refs.map(\.id).sorted().joined(separator: ","))")
        if rng.chance(chaos.pollFails) {
            count("status.failed")
            return all(.transient(backend: backend, .status, "429 too many requests"))
        }
        var results: [ImageRef: Result<ImageState, SnapshotBackendError>] = [:]
        let now = clock.providerNow
        for ref in refs {
            if rng.chance(chaos.pollUnanswered) { continue }
            if rng.chance(chaos.pollFails / 2) {
                results[ref] = .failure(.transient(backend: backend, .status, image: ref, "502 bad gateway"))
                continue
            }
            results[ref] = .success(live[ImageKey(id: ref.id, backend: backend)]?.state(at: now) ?? .gone)
        }
        if rng.chance(chaos.pollLate) {
            count("status.late")
            do {
                try await late(delay(&rng), process: process, backend: backend, .status)
            } catch {
                return all(error)
            }
        }
        return results
    }

    private func info(_ image: Image, now: Date) -> ImageInfo {
        let state = image.state(at: now)
        return ImageInfo(
            id: ImageRef(id: image.id), name: image.name, description: image.description, target: image.target,
            createdAt: image.createdAt, state: state, sizeBytes: state == .active ? 1 << 30 : nil)
    }

    func list(backend: String, process: Int, target: String?) async throws -> [ImageInfo]? {
        guard !clock.isFrozen(process) else { throw gone(backend, .list) }
        if target == nil && !listsAll.contains(backend) { return nil }
        var rng = roll("list \(backend) \(target ?? "*")")
        if rng.chance(chaos.listFails) {
            count("list.failed")
            throw SnapshotBackendError.transient(backend: backend, .list, target: target, "500 internal error")
        }
        let now = clock.providerNow
        let found = live.values.filter { $0.backend == backend && (target == nil || $0.target == target) }
            .sorted { $0.id < $1.id }.map { info($0, now: now) }
        if rng.chance(chaos.listLate) {
            count("list.late")
            try await late(delay(&rng), process: process, backend: backend, .list)
        }
        return found
    }

    func delete(backend: String, process: Int, _ ref: ImageRef) async throws {
        guard !clock.isFrozen(process) else { throw gone(backend, .delete) }
        var rng = roll("delete \(backend) \(ref.id)")
        if rng.chance(chaos.deleteFailsTransient) {
            count("delete.failed")
            throw SnapshotBackendError.transient(backend: backend, .delete, image: ref, "409 image busy")
        }
        if rng.chance(chaos.deleteFailsPermanent) {
            count("delete.refused")
            throw SnapshotBackendError.permanent(backend: backend, .delete, image: ref, "403 forbidden")
        }
        let key = ImageKey(id: ref.id, backend: backend)
        if let image = live[key] {
            if rng.chance(0.3) { pinAnotherDoomed(than: image) }
            check(deleting: image)
            live[key] = nil
            idsByName[backend + "\u{0}" + image.target + "\u{0}" + image.name] = nil
            if var made = madeByFire[image.fire], let index = made.firstIndex(where: { $0.id == image.id }) {
                made[index].deletedAt = clock.providerNow
                madeByFire[image.fire] = made
            }
            count("delete.done")
        }
        if rng.chance(chaos.deleteLosesReply) {
            count("delete.reply_lost")
            throw SnapshotBackendError.transient(backend: backend, .delete, image: ref, "connection reset")
        }
        if rng.chance(chaos.deleteLate) {
            count("delete.late")
            try await late(delay(&rng), process: process, backend: backend, .delete)
        }
    }

    /// An operator pins, while retention deletes `image`, another image of its job that the same pass decided to
    /// delete and has not taken yet: the pass must then leave it alone.
    private func pinAnotherDoomed(than image: Image) {
        guard let record = try? store.image(id: image.id, backend: image.backend),
            let doomed = ((try? store.images(job: record.job, includeDeleted: false)) ?? []).first(where: {
                $0.state == .active && $0.deleteReason != nil && !$0.pinned && $0.id != image.id
                    && $0.backend == record.backend && $0.target == record.target
            }),
            (try? store.setPinned(id: doomed.id, backend: doomed.backend, true)) != nil
        else { return }
        pins.set(doomed.key, pinned: true)
        count("pins.raced")
    }

    /// What must hold whenever snapcron deletes an image.
    private func check(deleting image: Image) {
        let key = ImageKey(id: image.id, backend: image.backend)
        let wall = clock.wallNow
        if image.foreign {
            violation("deleted foreign image \(image.id) '\(image.name)' (\(image.description))")
            return
        }
        if pins.contains(key) {
            violation("deleted pinned image \(image.id) '\(image.name)'")
        }
        guard let record = try? store.image(id: image.id, backend: image.backend) else {
            violation("deleted image \(image.id) '\(image.name)' that the store does not know")
            return
        }
        if record.state != .deleting {
            violation(
                "deleted image \(image.id) '\(image.name)' that the store has \(record.state.rawValue), not deleting")
        }
        // The newest ACTIVE image of its (job, backend, target) as retention sees it: not dated in the future.
        let latestTrusted = wall.addingTimeInterval(RetentionPlanner.futureTolerance)
        let peers = ((try? store.images(job: record.job, includeDeleted: false)) ?? []).filter {
            $0.backend == record.backend && $0.target == record.target
                && ($0.state == .active || $0.state == .deleting) && $0.createdAt <= latestTrusted
        }
        if let newest = peers.max(by: { ($0.createdAt, $0.id) < ($1.createdAt, $1.id) }), newest.id == record.id {
            violation(
                "deleted the newest active image \(image.id) '\(image.name)' of \(record.job) on "
                    + "\(record.backend):\(record.target) (created \(RunEngine.iso(record.createdAt)), wall "
                    + "\(RunEngine.iso(wall)), reason: \(record.deleteReason ?? "?"); peers: "
                    + peers.map { "\($0.id)@\(RunEngine.iso($0.createdAt)) \($0.state.rawValue)" }
                    .joined(separator: ", ")
                    + ")")
        }
    }
}

/// One process's connection to one backend of the chaos world.
struct ChaosBackend: SnapshotBackend {
    let name: String
    let process: Int
    let world: ChaosWorld

    func create(target: String, name imageName: String, description: String, logger: Logger) async throws -> ImageRef {
        try await createImage(target: target, name: imageName, description: description, logger: logger).ref
    }

    func createImage(target: String, name imageName: String, description: String, logger: Logger) async throws
        -> CreatedImage
    {
        try await world.create(
            backend: name, process: process, target: target, name: imageName, description: description,
            nameIsFresh: false)
    }

    func createImage(
        target: String, name imageName: String, description: String, nameIsFresh: Bool, logger: Logger
    ) async throws -> CreatedImage {
        try await world.create(
            backend: name, process: process, target: target, name: imageName, description: description,
            nameIsFresh: nameIsFresh)
    }

    func status(_ image: ImageRef, logger: Logger) async throws -> ImageState {
        let results = await world.statuses(backend: name, process: process, [image])
        switch results[image] {
        case .success(let state)?: return state
        case .failure(let error)?: throw error
        case nil: throw SnapshotBackendError.transient(backend: name, .status, image: image, "no answer")
        }
    }

    func statuses(of images: [ImageRef], logger: Logger) async -> [ImageRef: Result<ImageState, SnapshotBackendError>] {
        await world.statuses(backend: name, process: process, images)
    }

    func list(target: String, logger: Logger) async throws -> [ImageInfo] {
        try await world.list(backend: name, process: process, target: target) ?? []
    }

    func listAll(logger: Logger) async throws -> [ImageInfo]? {
        try await world.list(backend: name, process: process, target: nil)
    }

    func delete(_ image: ImageRef, logger: Logger) async throws {
        try await world.delete(backend: name, process: process, image)
    }

    func validate(target: String) throws {}
}

// MARK: Logs

/// Collects the scheduler's log lines of one seed (only when asked: `SNAPCRON_MODEL_LOG=1`), stamped with the
/// model's wall clock.
final class ModelLog: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []

    func append(_ line: String) { lock.withLock { lines.append(line) } }
    var all: [String] { lock.withLock { lines } }
}

struct ModelLogHandler: LogHandler {
    let sink: ModelLog
    let clock: ModelClock
    let process: Int
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let fields = (event.metadata ?? [:]).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
            .joined(separator: " ")
        sink.append("  [p\(process) \(RunEngine.iso(clock.wallNow))] \(event.level) \(event.message) \(fields)")
    }
}

import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Runs a test on threads of its own instead of Swift's cooperative pool.
///
/// The pool has one thread per core (two on the CI machine) and does not grow when one blocks. A test that waits
/// for a process, polls with `usleep` or boots a systemd holds a pool thread for the whole wait; two such tests at
/// once stall every other test of the run, whose timeouts then fire without their work ever having been scheduled.
/// Suites that block carry `.onOwnThreads`; their synchronous waits then block threads that nobody else needs.
///
/// Long computations (a property search, an oracle comparison) carry `.onCPULane`: a synchronous test body runs as
/// one job, so two of them computing for 20 s would hold both pool threads for 20 s. On a lane of two threads of
/// their own they compete with the pool for the cores through the kernel's scheduler, which shares them fairly.
public struct OwnThreadsTrait: SuiteTrait, TestTrait, TestScoping {
    let executor: OwnThreadsExecutor

    public var isRecursive: Bool { true }

    public func scopeProvider(for test: Test, testCase: Test.Case?) -> Self? {
        testCase == nil ? nil : self
    }

    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        _ = PoolStallWatch.started
        try await withTaskExecutorPreference(executor) { try await function() }
    }
}

extension Trait where Self == OwnThreadsTrait {
    /// The test runs on threads of its own: its blocking waits never hold a thread of the cooperative pool.
    public static var onOwnThreads: Self { OwnThreadsTrait(executor: .shared) }
    /// The test computes on the CPU lane: it never holds a thread of the cooperative pool for long.
    public static var onCPULane: Self { OwnThreadsTrait(executor: .cpuLane) }
}

/// A task executor with threads of its own: as many as it has jobs running (a job never waits for another one
/// to stop blocking), or at most `threadLimit`. Idle threads are kept for a while and then end.
public final class OwnThreadsExecutor: TaskExecutor, @unchecked Sendable {  // guarded by the condition
    /// For tests that block: unbounded.
    public static let shared = OwnThreadsExecutor(threadLimit: nil)
    /// For tests that compute: two threads, so the cooperative pool keeps a fair share of the two cores.
    public static let cpuLane = OwnThreadsExecutor(threadLimit: 2)

    private let threadLimit: Int?
    private let condition = NSCondition()
    private var pending: [UnownedJob] = []
    private var waiting = 0
    private var threads: Set<UInt> = []
    private var starting = 0
    private let idleLifetime: TimeInterval = 10

    init(threadLimit: Int?) { self.threadLimit = threadLimit }

    /// Whether the calling thread is one of this executor's.
    public var isCurrentThreadOwn: Bool {
        let current = UInt(bitPattern: Int(bitPattern: pthread_self()))
        return condition.withLock { threads.contains(current) }
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        pending.append(job)
        // Every pending job needs a waiting thread of its own, or it could wait behind a blocked one; a limited
        // executor queues it once it has all its threads.
        let spawn = pending.count > waiting + starting && threads.count + starting < (threadLimit ?? .max)
        if spawn { starting += 1 } else { condition.signal() }
        condition.unlock()
        if spawn { Thread { [self] in work() }.start() }
    }

    private func work() {
        let current = UInt(bitPattern: Int(bitPattern: pthread_self()))
        condition.lock()
        starting -= 1
        threads.insert(current)
        defer {
            threads.remove(current)
            condition.unlock()
        }
        while true {
            if pending.isEmpty {
                waiting += 1
                let signalled = condition.wait(until: Date(timeIntervalSinceNow: idleLifetime))
                waiting -= 1
                if !signalled && pending.isEmpty { return }
                continue
            }
            let job = pending.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
            condition.lock()
        }
    }
}

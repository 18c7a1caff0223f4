import Foundation
import TestThreads
import Testing

/// The trait the blocking suites rely on to keep Swift's cooperative pool free (Tests/TestThreads).
@Suite(.onOwnThreads) struct OwnThreadsTests {
    @Test func aSynchronousTestBodyRunsOnAThreadOfItsOwn() {
        #expect(OwnThreadsExecutor.shared.isCurrentThreadOwn)
    }

    @Test func anAsynchronousTestBodyStaysThereAcrossSuspensions() async throws {
        #expect(OwnThreadsExecutor.shared.isCurrentThreadOwn)
        try await Task.sleep(for: .milliseconds(1))
        #expect(OwnThreadsExecutor.shared.isCurrentThreadOwn)
    }

    /// More blocked child tasks than cores, each waiting until all have arrived: on the cooperative pool (one
    /// thread per core) the later ones would never start and the first ones would wait out the deadline.
    @Test func blockedChildTasksDoNotWaitForEachOther() async {
        let barrier = Barrier(parties: 8)
        let allArrived = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<8 { group.addTask { barrier.arriveAndWait(deadline: Date(timeIntervalSinceNow: 60)) } }
            return await group.allSatisfy { $0 }
        }
        #expect(allArrived)
    }
}

/// The lane for long computations (Tests/TestThreads): its own threads, never more than two.
@Suite(.onCPULane) struct CPULaneTests {
    @Test func aComputationRunsOnTheLane() {
        #expect(OwnThreadsExecutor.cpuLane.isCurrentThreadOwn)
        #expect(!OwnThreadsExecutor.shared.isCurrentThreadOwn)
    }

    @Test func sixBusyChildTasksShareTwoThreads() async {
        let counter = ConcurrencyCounter()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<6 {
                group.addTask {
                    counter.enter()
                    usleep(50_000)  // busy, as far as the lane can tell
                    counter.leave()
                }
            }
        }
        #expect(counter.finished == 6)
        // The lane is shared with the other suites on it: never more than two at once, maybe fewer.
        #expect((1...2).contains(counter.mostAtOnce))
    }
}

@Suite struct CooperativePoolTests {
    @Test func aTestWithoutTheTraitRunsOnThePool() {
        #expect(!OwnThreadsExecutor.shared.isCurrentThreadOwn)
    }
}

private final class Barrier: @unchecked Sendable {  // guarded by the condition
    private let condition = NSCondition()
    private let parties: Int
    private var arrived = 0

    init(parties: Int) { self.parties = parties }

    /// Whether every party arrived before `deadline`.
    func arriveAndWait(deadline: Date) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        arrived += 1
        condition.broadcast()
        while arrived < parties {
            if !condition.wait(until: deadline) { return arrived >= parties }
        }
        return true
    }
}

private final class ConcurrencyCounter: @unchecked Sendable {  // guarded by the lock
    private let lock = NSLock()
    private var running = 0
    private(set) var mostAtOnce = 0
    private(set) var finished = 0

    func enter() {
        lock.withLock {
            running += 1
            mostAtOnce = max(mostAtOnce, running)
        }
    }

    func leave() {
        lock.withLock {
            running -= 1
            finished += 1
        }
    }
}

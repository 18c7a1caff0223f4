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

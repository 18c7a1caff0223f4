import Foundation
import Testing

@testable import SnapcronCore

/// The real clock's timerfd sleep: a deadline in the past returns at once and cancellation wakes a sleeper
/// immediately (no test here waits for time to pass; the clock-step wake-up needs `date -s` and is not run in CI).
@Suite struct SystemClockTests {
    @Test func aDeadlineInThePastReturnsAtOnce() async throws {
        let clock = SystemClock()
        let started = ContinuousClock.now
        try await clock.sleep(until: clock.now().addingTimeInterval(-3600))
        try await clock.sleep(until: Date(timeIntervalSince1970: 0))
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test func cancellationWakesASleeperAtOnce() async throws {
        let clock = SystemClock()
        let sleeper = Task { try await clock.sleep(until: clock.now().addingTimeInterval(86_400)) }
        sleeper.cancel()
        let started = ContinuousClock.now
        await #expect(throws: CancellationError.self) { try await sleeper.value }
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    @Test func manyShortSleepsLeakNoDescriptors() async throws {
        let clock = SystemClock()
        let before = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
        for _ in 0..<200 { try await clock.sleep(until: clock.now()) }
        let after = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").count
        #expect(after <= before + 2)
    }
}

import Foundation
import Testing

@testable import SnapcronCore

/// The real clock's timerfd sleep: a deadline in the past returns and cancellation wakes a sleeper that would
/// otherwise sleep for a day. (No timing bounds: the suite shares two cores; a hang fails the run instead. The
/// clock-step wake-up needs `date -s` and is not run in CI.)
@Suite struct SystemClockTests {
    @Test func aDeadlineInThePastReturns() async throws {
        let clock = SystemClock()
        try await clock.sleep(until: clock.now().addingTimeInterval(-3600))
        try await clock.sleep(until: Date(timeIntervalSince1970: 0))
    }

    @Test func cancellationWakesADayLongSleeper() async throws {
        let clock = SystemClock()
        let sleeper = Task { try await clock.sleep(until: clock.now().addingTimeInterval(86_400)) }
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
    }
}

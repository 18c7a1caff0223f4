import Foundation
import SnapcronCore

extension SchedulerService {
    /// Triggers `job`, then lets the loop work and moves `clock` on a minute at a time (at most `minutes` times)
    /// until the run ends; the run as `trigger` returned it (its id and image name).
    nonisolated public func triggerAndFinish(
        job: String, store: any StateStore, clock: ManualClock, minutes: Int
    ) async throws -> RunRecord {
        let run = try await trigger(job: job)
        for _ in 0..<minutes {
            try await Task.sleep(for: .milliseconds(20))
            await waitUntilIdle()
            if try await store.run(id: run.id)?.state.isTerminal == true { break }
            clock.advance(by: 60)
        }
        return run
    }
}

import BackendTypes
import Foundation
import Logging
import NIOConcurrencyHelpers
import SnapcronConfig
import SnapcronCore
import SnapcronStore
import SnapcronTestKit
import TWCCStandIn
import Testing
import TWCCDescriptor

@testable import TWCCBackend

/// The scheduler driving the real TWCC backend against the stand-in API over loopback HTTP, on a manual clock:
/// scheduled jobs end to end, retention at the "cloud", and faults turned into run states.
@Suite(.serialized) struct SchedulerTWCCTests {
    static let start = Date(timeIntervalSince1970: 1_893_456_000)  // 2030-01-01T00:00:00Z

    struct Rig {
        let service: SchedulerService
        let store: SnapcronDatabase
        let clock: ManualClock
        let task: Task<Void, any Error>
        /// Every log line the scheduler wrote (what the journal gets, with its metadata).
        let log: NIOLockedValueBox<[String]>

        /// Moves the clock from wake-up to wake-up until `end`, letting every HTTP call finish in between.
        func run(until end: Date) async {
            while true {
                await service.waitUntilIdle()
                guard let next = clock.nextDeadline, next <= end else { break }
                clock.advance(to: next)
            }
            clock.advance(to: end)
            await service.waitUntilIdle()
        }
    }

    /// A stand-in whose images bake on the scheduler's own manual clock (so it does not matter whether the scheduler
    /// follows them with `status` or `statuses(of:)`), and the scheduler running `schedule` against it.
    static func withRig(
        schedule: String, progression: TWCCStandIn.Progression, _ body: (TWCCStandIn, Rig) async throws -> Void
    ) async throws {
        let clock = ManualClock(now: start)
        try await withStandIn(now: { clock.now() }) { standIn in
            standIn.setProgression(progression)
            let rig = try Self.rig(standIn, clock: clock, schedule: schedule)
            try await body(standIn, rig)
        }
    }

    static func rig(_ standIn: TWCCStandIn, clock: ManualClock, schedule: String) throws -> Rig {
        var config = SnapcronConfig.default(stateDir: "/var/lib/snapcron-test")
        config.backends["twcc"] = BackendConfig(name: "twcc", type: .twcc)
        let jobs = try ScheduleFile.parse(
            text: schedule, file: "schedule", config: config, now: start, systemZone: .utc
        ).jobs
        let store = try SnapcronDatabase.inMemory()
        let backend = try makeBackend(standIn)
        let (logger, log) = CapturingLogHandler.logger()
        let service = SchedulerService(
            jobs: jobs, store: store, backends: ["twcc": backend], clock: clock, logger: logger)
        return Rig(service: service, store: store, clock: clock, task: Task { try await service.run() }, log: log)
    }

    @Test func scheduledJobsReachActiveAndRetentionDeletesExactlyTheOldestOfOurs() async throws {
        try await Self.withRig(schedule: "0 * * * *  web  twcc:101  keep=2\n", progression: .baking(seconds: 300)) {
            standIn, rig in
            await rig.run(until: Self.start.addingTimeInterval(4 * 3600 + 600))
            rig.task.cancel()

            let runs = try rig.store.runs(job: "web", limit: 100)
            #expect(runs.count == 4)
            #expect(runs.allSatisfy { $0.state == .succeeded }, "\(runs.map(\.state))")
            let records = try rig.store.images(job: "web", includeDeleted: true)
            #expect(records.filter { $0.state == .active }.count == 2)
            #expect(records.filter { $0.state == .deleted }.count == 2)

            // At the "cloud": the two newest of ours remain; the public image and the hand-made one are untouched.
            let remaining = standIn.images.values.filter { $0.serverID == 555 }.map(\.name).sorted()
            let newest = records.filter { $0.state == .active }.map(\.name).sorted()
            #expect(remaining == (["manual-web01"] + newest).sorted())
            #expect(standIn.images[1] != nil)
            #expect(standIn.complaints.isEmpty, "the stand-in did not understand: \(standIn.complaints)")
        }
    }

    @Test func anImageThatEndsInErrorFailsItsRunWithTheReason() async throws {
        let failing = TWCCStandIn.Progression.timed(
            queued: 30, saving: 120, final: "ERROR", reason: "snapshot of volume failed")
        try await Self.withRig(schedule: "0 * * * *  db  twcc:102  keep=2 retries=0\n", progression: failing) {
            _, rig in
            await rig.run(until: Self.start.addingTimeInterval(3600 + 600))
            rig.task.cancel()
            let run = try #require(try rig.store.runs(job: "db", limit: 10).first)
            #expect(run.state == .failed)
            #expect(run.error?.contains("snapshot of volume failed") == true, "\(run.error ?? "")")
            let entry = rig.log.withLockedValue { $0 }.first { $0.contains("Run failed") }
            #expect(entry?.hasPrefix("error ") == true, "\(entry ?? "no 'Run failed' line")")
            #expect(entry?.contains("\"event\": run.failed") == true && entry?.contains("snapshot of volume failed") == true)
        }
    }

    @Test func anImageStuckQueuedTimesOutWithAdvice() async throws {
        try await Self.withRig(schedule: "0 * * * *  db  twcc:102  timeout=30m\n", progression: .stuckQueued) {
            _, rig in
            await rig.run(until: Self.start.addingTimeInterval(3600 + 45 * 60))
            rig.task.cancel()
            let run = try #require(try rig.store.runs(job: "db", limit: 10).first)
            #expect(run.state == .timedOut)
            #expect(run.error?.contains("contact support") == true, "\(run.error ?? "")")
            let entry = rig.log.withLockedValue { $0 }.first { $0.contains("Run timed out") }
            #expect(entry?.hasPrefix("critical ") == true, "\(entry ?? "no 'Run timed out' line")")
            #expect(entry?.contains("\"event\": run.timed_out") == true && entry?.contains("contact support") == true)
        }
    }
}

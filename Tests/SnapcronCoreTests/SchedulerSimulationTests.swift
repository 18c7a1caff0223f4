import CronExpression
import Foundation
import SnapcronStore
import SnapcronTestKit
import SnapshotBackend
import Synchronization
import Testing

@testable import SnapcronCore

/// The scheduler on a manual clock: fake backends, an in-memory store, time moved from deadline to deadline by
/// the test (never a real sleep).
@Suite(.serialized) struct SchedulerSimulationTests {
    // MARK: A whole year

    /// The jobs of the simulated year. Expectations below are derived from the calendar and the tz database
    /// (`WallClock`), hand-checked DST instants and the documented `H` hash, never from the cron engine.
    static let yearSchedule = """
        CRON_TZ=UTC
        30 2 * * *        u-daily      u-daily:vm
        0 */6 * 1 *       u-6h         u-6h:vm
        @weekly           u-weekly     u-weekly:vm
        @monthly          u-monthly    u-monthly:vm
        0 12 1,15 * *     u-twice      u-twice:vm
        0 23 L * *        u-last       u-last:vm
        H H * * *         u-hash       u-hash:vm
        CRON_TZ=Asia/Taipei
        30 2 * * *        tp-gfs       tp-gfs:vm    keep-daily=7 keep-weekly=4 keep-monthly=12
        0 3 * * 5L        tp-lastfri   tp-lastfri:vm
        0 1 LW * *        tp-lw        tp-lw:vm
        CRON_TZ=America/New_York
        30 2 * * *        ny-0230      ny-0230:vm
        30 1 * * *        ny-0130      ny-0130:vm
        30 * 1-14 3,11 *  ny-hourly    ny-hourly:vm
        0 2 * * 0         ny-sunday    ny-sunday:vm   keep=3
        CRON_TZ=Europe/Berlin
        30 2 * * *        be-0230      be-0230:vm
        0 * 22-31 3,10 *  be-hourly    be-hourly:vm
        0 6 * * 1#1       be-firstmon  be-firstmon:vm
        CRON_TZ=Australia/Lord_Howe
        15 2 * * *        lh-0215      lh-0215:vm
        45 1 * * *        lh-0145      lh-0145:vm
        15 * 1-7 4,10 *   lh-15        lh-15:vm
        45 * 1-7 4,10 *   lh-45        lh-45:vm
        */30 0-3 5 4 *    lh-back      lh-back:vm
        */30 0-3 4 10 *   lh-forward   lh-forward:vm
        """

    static let yearJobNames = yearSchedule.split(separator: "\n").filter { !$0.hasPrefix("CRON_TZ") }.map {
        String($0.split(separator: " ").first { $0.contains(":") }!.split(separator: ":")[0])
    }

    @Test func wholeYearFiresEveryJobExactlyOnItsInstantsAndAppliesRetention() async throws {
        let clockStart = ContinuousClock.now
        let start = utc("2025-12-31T00:00:00Z")
        let end = utc("2026-12-31T23:30:00Z")
        let jobs = try simulationJobs(Self.yearSchedule, backends: Self.yearJobNames)
        // One fake per job: the fake looks names up by scanning its images.
        let sim = try Simulation(start: start, backends: Self.yearJobNames)
        #expect(jobs.count == 23)
        await sim.start(jobs)
        await sim.run(until: end)
        await sim.stop()
        let elapsed = ContinuousClock.now - clockStart

        // Expected fire instants of local year 2026, per job.
        let (u, tp, ny, be, lh) = (
            WallClock("UTC"), WallClock("Asia/Taipei"), WallClock("America/New_York"), WallClock("Europe/Berlin"),
            WallClock("Australia/Lord_Howe")
        )
        func daily(_ w: WallClock, _ h: Int, _ m: Int, where keep: (Int, Int, Int) -> Bool = { _, _, _ in true })
            -> [Date]
        {
            w.days(of: 2026).filter { keep($0.0, $0.1, $0.2) }.map { w.fixedInstant($0.0, $0.1, $0.2, h, m) }
        }
        func hourly(_ w: WallClock, minute: Int, months: Set<Int>, days: ClosedRange<Int>) -> [Date] {
            w.days(of: 2026, months: months).filter { days.contains($0.2) }
                .flatMap { d in (0..<24).flatMap { w.instants(d.0, d.1, d.2, $0, minute) } }
        }
        func lastDay(_ w: WallClock, _ y: Int, _ m: Int) -> Int {
            w.days(of: y, months: [m]).map(\.2).max()!
        }
        let hashMinute = Int(documentedHash("u-hash", field: 0) % 60)
        let hashHour = Int(documentedHash("u-hash", field: 1) % 24)
        var expected: [String: [Date]] = [
            "u-daily": daily(u, 2, 30),
            "u-6h": [0, 6, 12, 18].flatMap { h in daily(u, h, 0) { _, m, _ in m == 1 } }.sorted(),
            "u-weekly": daily(u, 0, 0) { u.weekday($0, $1, $2) == 0 },
            "u-monthly": daily(u, 0, 0) { _, _, d in d == 1 },
            "u-twice": daily(u, 12, 0) { _, _, d in d == 1 || d == 15 },
            "u-last": daily(u, 23, 0) { y, m, d in d == lastDay(u, y, m) },
            "u-hash": daily(u, hashHour, hashMinute),
            "tp-gfs": daily(tp, 2, 30),
            "tp-lastfri": daily(tp, 3, 0) { y, m, d in tp.weekday(y, m, d) == 5 && d + 7 > lastDay(tp, y, m) },
            "tp-lw": daily(tp, 1, 0) { y, m, d in
                let last = lastDay(tp, y, m)
                let lastWeekday = (0..<3).map { last - $0 }.first { (1...5).contains(tp.weekday(y, m, $0)) }!
                return d == lastWeekday
            },
            "ny-0230": daily(ny, 2, 30),
            "ny-0130": daily(ny, 1, 30),
            "ny-hourly": hourly(ny, minute: 30, months: [3, 11], days: 1...14),
            "ny-sunday": daily(ny, 2, 0) { ny.weekday($0, $1, $2) == 0 },
            "be-0230": daily(be, 2, 30),
            "be-hourly": hourly(be, minute: 0, months: [3, 10], days: 22...31),
            "be-firstmon": daily(be, 6, 0) { y, m, d in be.weekday(y, m, d) == 1 && d <= 7 },
            "lh-0215": daily(lh, 2, 15),
            "lh-0145": daily(lh, 1, 45),
            "lh-15": hourly(lh, minute: 15, months: [4, 10], days: 1...7),
            "lh-45": hourly(lh, minute: 45, months: [4, 10], days: 1...7),
        ]
        expected["lh-back"] = [0, 1, 2, 3].flatMap { h in [0, 30].flatMap { lh.instants(2026, 4, 5, h, $0) } }.sorted()
        expected["lh-forward"] = [0, 1, 2, 3].flatMap { h in [0, 30].flatMap { lh.instants(2026, 10, 4, h, $0) } }
            .sorted()

        // Hand counts, so that the oracle itself is checked: 23- and 25-hour days, 53 Thursdays, ...
        let counts: [String: Int] = [
            "u-daily": 365, "u-6h": 124, "u-weekly": 52, "u-monthly": 12, "u-twice": 24, "u-last": 12,
            "u-hash": 365, "tp-gfs": 365, "tp-lastfri": 12, "tp-lw": 12, "ny-0230": 365, "ny-0130": 365,
            "ny-hourly": 14 * 24 - 1 + 14 * 24 + 1, "ny-sunday": 52, "be-0230": 365, "be-hourly": 10 * 24 - 1 + 10 * 24 + 1, "be-firstmon": 12,
            "lh-0215": 365, "lh-0145": 365, "lh-15": 7 * 24 + 7 * 24 - 1, "lh-45": 7 * 24 + 1 + 7 * 24, "lh-back": 9, "lh-forward": 7,
        ]
        #expect(counts.keys.sorted() == expected.keys.sorted())
        for (name, count) in counts { #expect(expected[name]?.count == count, "oracle count of \(name)") }

        // Hand-checked DST instants (UTC).
        let anchors: [(String, String)] = [
            ("ny-0230", "2026-03-08T07:00:00Z"),  // 02:30 does not exist: 03:00 EDT
            ("ny-sunday", "2026-03-08T07:00:00Z"),  // 02:00 Sunday, same gap
            ("ny-0130", "2026-11-01T05:30:00Z"),  // 01:30 EDT, the first of two
            ("be-0230", "2026-03-29T01:00:00Z"),  // 03:00 CEST
            ("be-0230", "2026-10-25T00:30:00Z"),  // 02:30 CEST, the first of two
            ("lh-0215", "2026-10-03T15:30:00Z"),  // Lord Howe's 30-minute gap: 02:30 LHDT
            ("lh-0145", "2026-04-04T14:45:00Z"),  // 01:45 LHDT, the first of two
            ("lh-back", "2026-04-04T14:30:00Z"), ("lh-back", "2026-04-04T15:00:00Z"),  // 01:30 twice
            ("tp-gfs", "2026-01-01T18:30:00Z"),
        ]
        for (name, instant) in anchors {
            #expect(expected[name]?.contains(utc(instant)) == true, "\(name) fires at \(instant)")
        }
        // Lord Howe's gap day: 01:30 LHST (15:00Z) is the last before the gap, 02:00 does not exist, 02:30 LHDT.
        #expect(expected["lh-forward"]?.contains(utc("2026-10-03T15:00:00Z")) == true)
        #expect(expected["lh-forward"]?.contains(utc("2026-10-03T15:30:00Z")) == true)

        // What the scheduler did.
        var createCount = 0
        for job in jobs {
            let runs = try sim.runs(job.name)
            let wall = WallClock(job.zone.identifier)
            let inYear = runs.filter { wall.localYear(of: $0.scheduledAt) == 2026 }
            #expect(inYear.scheduled == expected[job.name], "fire instants of \(job.name)")
            let odd = runs.filter { $0.state != .succeeded || $0.trigger != .schedule || $0.attempts != 1 }
            #expect(odd.isEmpty, "\(job.name): \(odd.prefix(3))")
            #expect(Set(runs.map(\.scheduledAt)).count == runs.count)
            createCount += runs.count
        }
        var creates: [FakeSnapshotBackend.Call] = []
        for fake in sim.fakes.values { creates += await fake.calls(of: .create) }
        #expect(creates.count == createCount)
        #expect(Set(creates.compactMap(\.name)).count == createCount, "one create per fire, no duplicate image")

        // Retention of tp-gfs (Taipei): images 2026-01-01 ... 2027-01-01 local (366; the last fires on
        // 2026-12-31 18:30Z). keep-daily=7: Dec 26 ... Jan 1; keep-weekly=4 (ISO weeks W53, W52, W51, W50):
        // adds Dec 20 and Dec 13; keep-monthly=12 (2027-01 back to 2026-02): adds Nov 30, Oct 31, Sep 30,
        // Aug 31, Jul 31, Jun 30, May 31, Apr 30, Mar 31, Feb 28.
        let keptDays = [
            "2027-01-01", "2026-12-31", "2026-12-30", "2026-12-29", "2026-12-28", "2026-12-27", "2026-12-26",
            "2026-12-20", "2026-12-13", "2026-11-30", "2026-10-31", "2026-09-30", "2026-08-31", "2026-07-31",
            "2026-06-30", "2026-05-31", "2026-04-30", "2026-03-31", "2026-02-28",
        ]
        let keptInstants = keptDays.map { day -> Date in
            let p = day.split(separator: "-").map { Int($0)! }
            return tp.fixedInstant(p[0], p[1], p[2], 2, 30)
        }
        let allImages = try sim.store.images(job: "tp-gfs", includeDeleted: true)
        #expect(allImages.count == 366)
        let live = try sim.store.images(job: "tp-gfs")
        #expect(live.map(\.createdAt) == keptInstants, "the images GFS keeps")
        #expect(live.allSatisfy { $0.state == .active && $0.keepReason != nil })
        let deleted = allImages.filter { $0.state == .deleted }
        #expect(deleted.count == 366 - 19)
        // Deleted on the scheduler's clock, within the simulated year, after the image was made.
        #expect(deleted.allSatisfy { ($0.deletedAt ?? .distantPast) > $0.createdAt && ($0.deletedAt ?? .distantFuture) <= end })
        let fakeImages = await sim.fakes["tp-gfs"]!.images
        #expect(Set(fakeImages.map(\.ref.id)) == Set(live.map(\.id)), "deleted images are gone at the backend too")

        // keep=3 on ny-sunday: the three newest.
        let sundays = try sim.store.images(job: "ny-sunday")
        #expect(sundays.map(\.createdAt) == Array(expected["ny-sunday"]!.suffix(3).reversed()))
        #expect(await sim.fakes["ny-sunday"]!.images.count == 3)
        // Jobs without retention options keep everything.
        #expect(try sim.store.images(job: "u-daily").count == (try sim.runs("u-daily")).count)

        print("simulated year: \(createCount) runs, \(sim.steps) clock steps, \(elapsed)")
        // About 20 s alone on this 2-core builder; up to ~70 s beside the other suites under load. The bound only
        // catches a scheduler that spins or a harness that stalls.
        // A guard against a runaway loop, not a speed goal: 40 s alone here, 190 s inside the whole suite on 2 cores.
        #expect(elapsed < .seconds(600))
    }

    // MARK: Downtime

    @Test func restartAfterDowntimeRunsOneCatchUpPerJobWithinDeadlineAndRecordsTheRestMissed() async throws {
        let jobs = try simulationJobs(
            """
            */10 * * * *   ten      fake:ten
            0 * * * *      hourly   fake:hourly   deadline=20m
            0 3 * * *      daily    fake:daily
            0 1 * * *      early    fake:early
            """)
        var pacing = RunPacing()
        pacing.maxMissedRowsPerJob = 10_000
        let sim = try Simulation(start: utc("2026-03-02T00:00:00Z"), pacing: pacing)
        await sim.start(jobs)
        await sim.run(until: utc("2026-03-02T05:05:00Z"))
        await sim.stop()
        #expect(try sim.runs("ten").count == 30)  // 00:10 ... 05:00

        // Down for two days; back at 03:25 on the 4th.
        let restart = utc("2026-03-04T03:25:00Z")
        sim.clock.manual.advance(to: restart)
        await sim.start(jobs)

        // ten: 05:10 on the 2nd ... 03:20 on the 4th = 278 fires; the newest (5 min late) runs, 277 missed.
        let ten = try sim.runs("ten").filter { $0.scheduledAt > utc("2026-03-02T05:05:00Z") }
        #expect(ten.count == 278)
        #expect(ten.last?.scheduledAt == utc("2026-03-04T03:20:00Z"))
        #expect(ten.last?.trigger == .catchUp)
        #expect(ten.dropLast().allSatisfy { $0.state == .missed && $0.error?.contains("only the newest") == true })
        // hourly: newest missed fire 03:00 is 25 min late, past deadline=20m: all 46 missed, none runs.
        let hourly = try sim.runs("hourly").filter { $0.scheduledAt > utc("2026-03-02T05:05:00Z") }
        #expect(hourly.count == 46)
        #expect(hourly.allSatisfy { $0.state == .missed })
        #expect(hourly.last?.error?.contains("past deadline=20m") == true)
        // daily 03:00: the 3rd missed, the 4th (25 min late) runs.
        let daily = try sim.runs("daily")
        #expect(daily.map(\.scheduledAt) == [utc("2026-03-02T03:00:00Z"), utc("2026-03-03T03:00:00Z"), utc("2026-03-04T03:00:00Z")])
        #expect(daily.map(\.state) == [.succeeded, .missed, .waiting])
        #expect(daily.last?.trigger == .catchUp)
        // early 01:00: both missed fires are past the deadline.
        #expect(try sim.runs("early").map(\.state) == [.succeeded, .missed, .missed])

        await sim.run(until: utc("2026-03-04T06:00:30Z"))
        await sim.stop()

        // Over the whole window every fire of every job was handled exactly once.
        let window = (utc("2026-03-02T00:00:00Z"), utc("2026-03-04T06:00:30Z"))
        for job in jobs {
            let runs = try sim.runs(job.name)
            var expected: [Date] = []
            var cursor = window.0
            while let next = job.expression.nextDate(after: cursor, in: job.zone), next <= window.1 {
                expected.append(next)
                cursor = next
            }
            #expect(runs.map(\.scheduledAt) == expected, "every fire of \(job.name) once")
            let odd = runs.filter { $0.state != .succeeded && $0.state != .missed }
            #expect(odd.isEmpty, "\(job.name): \(odd.map { "\($0.scheduledAt) \($0.state) \($0.error ?? "")" })")
        }
        #expect(try sim.runs("daily").last?.state == .succeeded)
        #expect(try sim.runs("hourly").suffix(3).map(\.state) == [.succeeded, .succeeded, .succeeded])  // 04-06h
        let creates = await sim.fake.calls(of: .create).compactMap(\.name)
        #expect(Set(creates).count == creates.count, "no fire created twice")
        let ran = try sim.runs().filter { $0.state == .succeeded }
        #expect(creates.count == ran.count)
    }

    @Test func longDowntimeKeepsOnlyTheNewestMissedRowsAndRunsTheLatest() async throws {
        let jobs = try simulationJobs("* * * * *   busy   fake:busy   deadline=2h")
        let sim = try Simulation(start: utc("2026-05-01T00:00:00Z"))
        await sim.start(jobs)
        await sim.run(until: utc("2026-05-01T00:03:30Z"))
        await sim.stop()
        sim.clock.manual.advance(to: utc("2026-05-01T10:00:30Z"))
        await sim.start(jobs)
        await sim.stop()
        let runs = try sim.runs("busy")
        // 00:01-00:03 ran; 00:04 ... 10:00 were due (597 fires): the newest runs, the 100 before it get a row.
        #expect(runs.count == 3 + 1 + 100)
        #expect(runs.last?.scheduledAt == utc("2026-05-01T10:00:00Z"))
        #expect(runs.last?.trigger == .catchUp)
        #expect(runs[3].scheduledAt == utc("2026-05-01T08:20:00Z"))
        #expect(runs.dropFirst(3).dropLast().allSatisfy { $0.state == .missed })
        #expect(try sim.store.lastScheduledAt(job: "busy") == utc("2026-05-01T10:00:00Z"))
    }

    // MARK: Overlap

    @Test func skipsFiresWhileTheTargetsImageIsStuckQueued() async throws {
        let jobs = try simulationJobs("*/2 * * * *   every   fake:vm1   timeout=5m")
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"))
        await sim.fake.enqueueCreate(.queuedForever)
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:12:30Z"))
        await sim.stop()
        let runs = try sim.runs("every")
        // The two fires skipped for the same reason share one row (a paused or stuck job adds no row a minute).
        #expect(runs.map(\.state) == [.timedOut, .skipped, .succeeded, .succeeded, .succeeded])
        #expect(runs[0].finishedAt == utc("2026-06-01T00:07:00Z"))
        let reason = "run \(runs[0].id) of fake:vm1 is still unfinished (overlap=skip)"
        #expect(runs[1].error == reason && runs[1].repeatCount == 2)
        #expect(runs[1].repeatedUntil == runs[1].scheduledAt.addingTimeInterval(120))
        #expect(runs[1].imageName == nil && runs[1].backend == nil)
        #expect(await sim.fake.calls(of: .create).count == 4)
    }

    @Test func overlapAllowRunsEveryFireWhileEarlierImagesAreStuck() async throws {
        let jobs = try simulationJobs("* * * * *   every   fake:vm1   timeout=10m overlap=allow")
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"))
        for _ in 0..<3 { await sim.fake.enqueueCreate(.queuedForever) }
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:03:30Z"))
        // Three unfinished runs of one target at once.
        #expect(try sim.store.unfinishedRuns(job: "every").count == 3)
        await sim.run(until: utc("2026-06-01T00:15:30Z"))
        await sim.stop()
        let runs = try sim.runs("every")
        #expect(runs.count == 15)
        #expect(runs.inState(.skipped).isEmpty)
        #expect(runs.prefix(3).allSatisfy { $0.state == .timedOut })
        #expect(runs.dropFirst(3).allSatisfy { $0.state == .succeeded })
        #expect(await sim.fake.images.count == 15)
    }

    // MARK: Timeouts, retries

    @Test func stuckImageTimesOutWithAnOperatorFacingMessage() async throws {
        let jobs = try simulationJobs("0 * * * *   stuck   fake:vm1   timeout=30m")
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"), defaultBehavior: .queuedForever)
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:45:00Z"))
        await sim.stop()
        let run = try #require(try sim.runs("stuck").first)
        #expect(run.state == .timedOut)
        #expect(run.finishedAt == utc("2026-06-01T01:30:00Z"))
        let message = try #require(run.error)
        #expect(message.contains("image fake-1 still queued after timeout=30m"), "\(message)")
        #expect(message.contains("contact support if it stays QUEUED or SAVING"))
        // The image stays as last seen: it may still become active, and retention must not take it.
        #expect(try sim.store.image(id: "fake-1", backend: "fake")?.state == .queued)
        let polls = await sim.fake.calls(of: .status).count
        // Polls at +2 +6 +14 +30 +62 s (doubling), then every 60 s from +122 to +1742 (28): 33 before 30 min; a last
        // one at the timeout (the image may have become active meanwhile); and one more look at 01:45, 15 minutes
        // after the run gave up (the image may still finish).
        #expect(polls == 35)
    }

    @Test func transientCreateFailuresAreRetriedWithBackoff() async throws {
        let jobs = try simulationJobs("0 * * * *   flaky   fake:vm1")
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"))
        await sim.fake.failNext(.create, times: 2, transient: true, message: "503 service unavailable")
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:10:00Z"))
        await sim.stop()
        let run = try #require(try sim.runs("flaky").first)
        #expect(run.state == .succeeded)
        #expect(run.attempts == 3)
        let times = try #require(sim.observer.snapshot.createTimes[run.imageName ?? ""])
        #expect(times.count == 3)
        #expect(times.first == utc("2026-06-01T01:00:00Z"))
        if times.count == 3 {
            let (first, second) = (times[1].timeIntervalSince(times[0]), times[2].timeIntervalSince(times[1]))
            #expect((11.25...18.75).contains(first), "first back-off 15 s ± 25 %: \(first)")
            #expect((22.5...37.5).contains(second), "second back-off 30 s ± 25 %: \(second)")
        }
        #expect(await sim.fake.images.count == 1)
    }

    @Test func createFailingMoreThanRetriesFailsWithTheLastError() async throws {
        let jobs = try simulationJobs("0 * * * *   flaky   fake:vm1   retries=2")
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"))
        await sim.fake.failNext(.create, times: 3, transient: true, message: "429 too many requests")
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:10:00Z"))
        await sim.stop()
        let run = try #require(try sim.runs("flaky").first)
        #expect(run.state == .failed)
        #expect(run.attempts == 3)
        #expect(run.error?.contains("429 too many requests") == true)
        #expect(await sim.fake.images.isEmpty)
    }

    /// A run whose timeout passes while it waits for its create retry ends timed out, in the store too. The store
    /// used to refuse claimed → timed_out (a waiting retry is `claimed`), leaving the run unfinished for good.
    @Test func aRunWaitingForItsRetryAtItsTimeoutEndsTimedOut() async throws {
        let jobs = try simulationJobs("0 * * * *   flaky   fake:vm1   timeout=1m retries=3")
        var pacing = RunPacing()
        pacing.retryBase = 600  // the retry would come 7.5 to 12.5 minutes later: after the timeout
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"), pacing: pacing)
        await sim.fake.failNext(.create, times: 1, transient: true, message: "503 service unavailable")
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:30:00Z"))
        await sim.stop()
        let run = try #require(try sim.runs("flaky").first)
        #expect(run.state == .timedOut)
        #expect(run.finishedAt == utc("2026-06-01T01:01:00Z"))
        #expect(try sim.store.unfinishedRuns().isEmpty)
        #expect(await sim.fake.calls(of: .create).count == 1)
    }

    @Test func permanentCreateFailureFailsAtOnce() async throws {
        let jobs = try simulationJobs("0 * * * *   broken   fake:vm1")
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"))
        await sim.fake.failAlways(.create, message: "server 101 does not exist")
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:10:00Z"))
        await sim.stop()
        let run = try #require(try sim.runs("broken").first)
        #expect(run.state == .failed)
        #expect(run.attempts == 1)
        #expect(run.finishedAt == utc("2026-06-01T01:00:00Z"))
        #expect(run.error?.contains("server 101 does not exist (permanent)") == true)
        #expect(await sim.fake.calls(of: .create).count == 1)
    }

    @Test func lostCreateReplyIsRetriedWithoutADuplicateImage() async throws {
        let jobs = try simulationJobs("0 * * * *   lossy   fake:vm1")
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"))
        await sim.fake.enqueueCreate(.active, reply: .crashBeforeReply)
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:10:00Z"))
        await sim.stop()
        let run = try #require(try sim.runs("lossy").first)
        #expect(run.state == .succeeded)
        #expect(run.attempts == 2)
        #expect(run.imageID == "fake-1")
        #expect(await sim.fake.images.map(\.ref.id) == ["fake-1"])
        #expect(try sim.store.images(job: "lossy").map(\.id) == ["fake-1"])
    }

    /// A create whose reply was lost, in a run that ended without finding the image by name (its look-up failed),
    /// is recorded by the sweep however many runs of the job came after it. The sweep used to look for the fire
    /// among the job's newest 20 runs only, and took the image for another installation's.
    @Test func theSweepRecordsALostImageAfterManyLaterRuns() async throws {
        let jobs = try simulationJobs("* * * * *   busy   fake:vm1   retries=0")
        var pacing = RunPacing()
        pacing.firstSweepDelay = 40 * 60
        let sim = try Simulation(start: utc("2026-06-01T00:00:30Z"), pacing: pacing)
        await sim.fake.enqueueCreate(.active, reply: .crashBeforeReply)
        await sim.fake.failNext(.list)  // the ending run's look-up by name
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:45:00Z"))
        await sim.stop()
        let runs = try sim.runs("busy")
        let first = try #require(runs.first)
        #expect(first.scheduledAt == utc("2026-06-01T00:01:00Z") && first.state == .failed && first.imageID == nil)
        #expect(runs.count > 21, "more than 20 runs after the lost image's fire when the sweep comes")
        let found = try #require(try sim.store.image(id: "fake-1", backend: "fake"), "recorded by the sweep")
        #expect(found.runID == first.id && found.name == first.imageName && found.state == .active)
    }

    @Test func anActiveImageGetsTheSizeTheBackendListsAndAFailedLookupFailsNothing() async throws {
        let jobs = try simulationJobs("*/10 * * * *   sized   fake:vm1")
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"))
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:15:00Z"))
        await sim.fake.failAlways(.list, message: "listing is down")
        await sim.run(until: utc("2026-06-01T00:25:00Z"))
        await sim.stop()
        let runs = try sim.runs("sized")
        #expect(runs.map(\.state) == [.succeeded, .succeeded])
        let images = try sim.store.images(job: "sized").sorted { $0.createdAt < $1.createdAt }
        #expect(images.map(\.state) == [.active, .active])
        #expect(images.map(\.sizeBytes) == [1 << 30, nil], "the fake lists active images at 1 GiB; then list fails")
    }

    // MARK: Limits

    @Test func unfinishedImageQuotaHoldsPerBackendAndCreatesElsewhereAreNotBlocked() async throws {
        var text = ""
        for i in 1...6 { text += "0 * * * *   a\(i)   fa:vm\(i)\n0 * * * *   b\(i)   fb:vm\(i)\n" }
        let jobs = try simulationJobs(text, backends: ["fa", "fb"])
        let sim = try Simulation(
            start: utc("2026-06-01T00:30:00Z"), backends: ["fa", "fb"], defaultBehavior: .succeed(afterPolls: 2),
            limits: ConcurrencyLimits(createCalls: 2, unfinishedImagesPerBackend: ["fa": 1]))
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:30:00Z"))
        await sim.stop()
        let limits = sim.observer.snapshot
        #expect(limits.perBackend["fa"] == 1, "fa's quota: one unfinished image at a time")
        #expect(limits.perBackend["fb"] == 6, "fb has no quota: waiting for ACTIVE blocks none of its creates")
        let runs = try sim.runs()
        #expect(runs.count == 12)
        #expect(runs.allSatisfy { $0.state == .succeeded })
        let bStarts = runs.filter { $0.backend == "fb" }.compactMap(\.startedAt)
        #expect(bStarts.allSatisfy { $0 == utc("2026-06-01T01:00:00Z") }, "fb creates all start on time: \(bStarts)")
        // Runs that waited for the quota started late, each after an earlier one of its backend finished.
        let aStarts = runs.filter { $0.backend == "fa" }.compactMap(\.startedAt).sorted()
        #expect(Set(aStarts).count == 6, "fa runs one at a time: \(aStarts)")
    }

    // MARK: Reload, pause, trigger

    @Test func reloadAppliesChangedAddedAndRemovedJobs() async throws {
        let before = try simulationJobs(
            """
            */15 * * * *   changed   fake:a
            0 * * * *      same      fake:b
            */30 * * * *   removed   fake:c
            """)
        let after = try simulationJobs(
            """
            */20 * * * *   changed   fake:a
            0 * * * *      same      fake:b
            */10 * * * *   added     fake:d
            """)
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"), defaultBehavior: .succeed(afterPolls: 2))
        let service = await sim.start(before)
        await sim.run(until: utc("2026-06-01T01:00:01Z"))  // removed's 01:00 run is still polling
        #expect(try sim.store.unfinishedRuns(job: "removed").count == 1)
        await service.apply(jobs: after)
        await sim.settle()
        await sim.run(until: utc("2026-06-01T02:00:30Z"))
        await sim.stop()
        func times(_ job: String) throws -> [String] {
            try sim.runs(job).map { CronFormat.iso8601($0.scheduledAt, in: .utc).dropFirst(11).prefix(5).description }
        }
        #expect(try times("changed") == ["00:15", "00:30", "00:45", "01:00", "01:20", "01:40", "02:00"])
        #expect(try times("same") == ["01:00", "02:00"])
        #expect(try times("removed") == ["00:30", "01:00"])
        #expect(try times("added") == ["01:10", "01:20", "01:30", "01:40", "01:50", "02:00"])
        #expect(try sim.runs().allSatisfy { $0.state == .succeeded }, "the removed job's last run still finished")
        #expect(await service.currentJobs().map(\.name) == ["added", "changed", "same"])
    }

    @Test func pauseIsPersistedAcrossRestartAndResumeRunsAgain() async throws {
        let jobs = try simulationJobs("*/10 * * * *   p   fake:vm1")
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"))
        var service = await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:25:00Z"))
        #expect(service.pausedJobs.isEmpty)
        try await service.setPaused(job: "p", true)
        #expect(try sim.store.jobState(name: "p")?.paused == true)
        #expect(service.pausedJobs == ["p"], "readable without the actor, at once")
        await sim.run(until: utc("2026-06-01T00:45:00Z"))
        await sim.stop()
        service = await sim.start(jobs)
        #expect(await service.snapshot().pausedJobs == ["p"])
        #expect(service.pausedJobs == ["p"], "loaded from the store at start")
        await sim.run(until: utc("2026-06-01T00:55:00Z"))
        try await service.setPaused(job: "p", false)
        #expect(try sim.store.jobState(name: "p")?.paused == false)
        #expect(service.pausedJobs.isEmpty)
        await sim.run(until: utc("2026-06-01T01:05:00Z"))
        await sim.stop()
        let runs = try sim.runs("p")
        #expect(runs.map(\.state) == [.succeeded, .succeeded, .skipped, .succeeded])
        #expect(runs[2].error == "job is paused" && runs[2].repeatCount == 3, "three paused fires, one row")
        #expect(await sim.fake.calls(of: .create).count == 3)
    }

    @Test func imagesFinishedAfterTheirRunGaveUpAreRecordedAndCountedByRetention() async throws {
        let jobs = try simulationJobs("0 * * * *   slow   fake:vm1   timeout=5m keep=1")
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"))
        await sim.fake.enqueueCreate(.queuedForever)
        await sim.fake.enqueueCreate(.queuedForever)
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:10:00Z"))
        let first = try #require(try sim.runs("slow").first)
        #expect(first.state == .timedOut)
        let firstImage = try #require(first.imageID)
        #expect(try sim.store.image(id: firstImage, backend: "fake")?.state == .queued)

        // The provider finishes it late: the next look records it active, with its size.
        await sim.fake.setBehavior(of: ImageRef(id: firstImage), to: .succeed(afterPolls: 0))
        await sim.run(until: utc("2026-06-01T01:25:00Z"))
        let late = try #require(try sim.store.image(id: firstImage, backend: "fake"))
        #expect(late.state == .active && late.sizeBytes == 1 << 30)

        // The 02:00 image also times out and then fails at the provider: recorded as error, nothing deleted.
        await sim.run(until: utc("2026-06-01T02:10:00Z"))
        let second = try #require(try sim.runs("slow").first { $0.scheduledAt == utc("2026-06-01T02:00:00Z") })
        #expect(second.state == .timedOut)
        let secondImage = try #require(second.imageID)
        await sim.fake.setBehavior(of: ImageRef(id: secondImage), to: .fail(afterPolls: 0, reason: "disk full"))
        await sim.run(until: utc("2026-06-01T02:30:00Z"))
        #expect(try sim.store.image(id: secondImage, backend: "fake")?.state == .error)
        #expect(try sim.store.image(id: firstImage, backend: "fake")?.state == .active, "keep=1 keeps the active one")

        // The 03:00 run succeeds; retention (keep=1) now deletes the late image, which it counts as active.
        await sim.run(until: utc("2026-06-01T03:30:00Z"))
        await sim.stop()
        #expect(try sim.runs("slow").last?.state == .succeeded)
        #expect(try sim.store.image(id: firstImage, backend: "fake").map(\.state) != .active)
        #expect(await sim.fake.images.map(\.ref.id).contains(firstImage) == false, "deleted at the backend")
    }

    @Test func aRestartHandsTheBackendItsImagesBackOnlyWithinTheirTimeout() async throws {
        let jobs = try simulationJobs("1 0 * * *   slow   fake:vm1   timeout=10m")
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"))
        await sim.fake.enqueueCreate(.queuedForever)
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:03:00Z"))
        await sim.stop()
        let image = try #require(try sim.runs("slow").first?.imageID)
        #expect(await sim.fake.resumedAfterRestart.isEmpty, "not without a restart")

        // Back at 00:05, within the 10 minutes from 00:01: the backend gets the image back before the next poll.
        sim.clock.manual.advance(to: utc("2026-06-01T00:05:00Z"))
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:06:00Z"))
        await sim.stop()
        #expect(await sim.fake.resumedAfterRestart == [ImageRef(id: image)])

        // Back at 00:30, past the timeout: one last poll decides, nothing is started again.
        sim.clock.manual.advance(to: utc("2026-06-01T00:30:00Z"))
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:31:00Z"))
        await sim.stop()
        #expect(await sim.fake.resumedAfterRestart == [ImageRef(id: image)])
        #expect(try sim.runs("slow").map(\.state) == [.timedOut])
    }

    @Test func pausesSurviveReloadsAndRestartsTheSameWay() async throws {
        let both = try simulationJobs(
            """
            */10 * * * *   a   fake:vm1
            */10 * * * *   b   fake:vm2   paused=yes
            """)
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"))
        let service = await sim.start(both)
        try await service.setPaused(job: "a", true)
        try await service.setPaused(job: "b", true)  // also paused by its line
        // `a` leaves the schedule and comes back: still paused, as a restart would have it.
        await service.apply(jobs: try simulationJobs("*/10 * * * *   b   fake:vm2   paused=yes"))
        #expect(service.pausedJobs == ["b"])
        await service.apply(jobs: both)
        #expect(service.pausedJobs == ["a", "b"])
        // `b` loses paused=yes: resumed, and still resumed after a restart.
        let unpaused = try simulationJobs(
            """
            */10 * * * *   a   fake:vm1
            */10 * * * *   b   fake:vm2
            """)
        await service.apply(jobs: unpaused)
        #expect(service.pausedJobs == ["a"])
        await sim.stop()
        let restarted = await sim.start(unpaused)
        #expect(restarted.pausedJobs == ["a"])
        await sim.run(until: utc("2026-06-01T00:15:00Z"))
        await sim.stop()
        #expect(try sim.runs("b").map(\.state) == [.succeeded])
        #expect(try sim.runs("a").map(\.state) == [.skipped])
    }

    @Test func manualTriggerRunsNowOnceAndRefusesAnOverlap() async throws {
        let jobs = try simulationJobs(
            """
            0 3 * * *   m   fake:vm1   overlap=allow
            0 3 * * *   n   fake:vm2
            """)
        let sim = try Simulation(start: utc("2026-06-01T00:10:00Z"))
        let service = await sim.start(jobs)
        let run = try await service.trigger(job: "m")
        #expect(run.trigger == .manual && run.scheduledAt == utc("2026-06-01T00:10:00Z"))
        await #expect(throws: SchedulerError.self) { try await service.trigger(job: "m") }  // same second
        await sim.settle()
        await sim.fake.enqueueCreate(.queuedForever)
        _ = try await service.trigger(job: "n")
        await sim.settle()
        await sim.advance(to: utc("2026-06-01T00:11:00Z"))
        do {
            _ = try await service.trigger(job: "n")
            Issue.record("a second manual run of a busy target was accepted")
        } catch {
            #expect("\(error)".contains("still unfinished (overlap=skip)"))
        }
        await sim.run(until: utc("2026-06-01T03:00:30Z"))
        await sim.stop()
        let m = try sim.runs("m")
        #expect(m.map(\.trigger) == [.manual, .schedule])
        #expect(m.allSatisfy { $0.state == .succeeded })
        // A manual run is not a fire of the schedule: the 03:00 fire still came, and the last fire is 03:00.
        #expect(try sim.store.lastScheduledAt(job: "m") == utc("2026-06-01T03:00:00Z"))
        await #expect(throws: SchedulerError.self) { try await service.trigger(job: "nope") }
    }

    @Test func aTriggerInTheSecondOfAScheduledFireIsRefusedWithTheReason() async throws {
        let jobs = try simulationJobs("0 3 * * *   m   fake:vm1   overlap=allow")
        let sim = try Simulation(start: utc("2026-06-01T02:59:30Z"))
        let service = await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T03:00:00Z").addingTimeInterval(0.5))
        do {
            _ = try await service.trigger(job: "m")
            Issue.record("a second run for the same second was accepted")
        } catch {
            #expect("\(error)".contains("already has a run for 2026-06-01T03:00:00Z (fired or triggered this second)"))
        }
        await sim.run(until: utc("2026-06-01T03:00:01Z").addingTimeInterval(0.5))
        let later = try await service.trigger(job: "m")
        #expect(later.scheduledAt == utc("2026-06-01T03:00:01Z"), "a second later it is accepted")
        await sim.run(until: utc("2026-06-01T03:10:00Z"))
        await sim.stop()
        #expect(try sim.runs("m").map(\.trigger) == [.schedule, .manual])
    }

    // MARK: Clock steps

    @Test func clockStepBackwardsNeverFiresAClaimedFireTwice() async throws {
        let jobs = try simulationJobs("*/5 * * * *   s   fake:vm1")
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"))
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:12:30Z"))
        await sim.step(to: utc("2026-06-01T00:02:00Z"))
        await sim.run(until: utc("2026-06-01T00:31:00Z"))
        await sim.stop()
        let runs = try sim.runs("s")
        #expect(runs.map(\.scheduledAt) == [5, 10, 15, 20, 25, 30].map { utc("2026-06-01T00:00:00Z") + Double($0 * 60) })
        #expect(runs.allSatisfy { $0.state == .succeeded && $0.trigger == .schedule })
        let creates = await sim.fake.calls(of: .create).compactMap(\.name)
        #expect(creates.count == 6 && Set(creates).count == 6)
    }

    /// After the clock was stepped back, an orphaned image dated in the future does not stand in for the newest:
    /// the explicit orphan prune keeps it, and keeps the newest image dated before now (as retention does).
    @Test func pruneOrphanedKeepsTheNewestImageNotDatedInTheFuture() async throws {
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"))
        await sim.start(try simulationJobs("0 * * * *   web   fake:vm1"))
        await sim.run(until: utc("2026-06-01T03:30:00Z"))
        // The job now images another disk: its images of vm1 (01:00, 02:00, 03:00) are orphans.
        await sim.service.apply(jobs: try simulationJobs("0 * * * *   web   fake:vm2"))
        await sim.settle()
        // The clock is stepped back to 02:30: the 03:00 image is dated in the future.
        await sim.step(to: utc("2026-06-01T02:30:00Z"))
        let deleted = try await sim.service.pruneOrphaned(dryRun: false)
        await sim.settle()
        await sim.stop()
        let name = { (hour: Int) in
            SchedulerService.imageName(job: "web", scheduled: utc("2026-06-01T00:00:00Z") + Double(hour * 3600))
        }
        #expect(deleted.map(\.image.name) == [name(1)])
        let kept = try sim.store.images(job: "web").filter { $0.target == "vm1" && $0.state == .active }
        #expect(kept.map(\.name).sorted() == [name(2), name(3)])
    }

    /// A run waiting for its create retry when the daemon stops, started again after the clock was stepped back:
    /// its retry (and its timeout) count from now. They used to keep the times the last process recorded, hours
    /// ahead, and the run held its target until the clock caught up.
    @Test func aRetryResumedAfterABackwardClockStepComesAtOnce() async throws {
        let jobs = try simulationJobs("0 * * * *   flaky   fake:vm1")
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"))
        await sim.fake.failNext(.create, times: 1, transient: true, message: "503 service unavailable")
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T01:00:05Z"))  // the retry is due 11 to 19 s after 01:00
        await sim.stop()
        #expect(try sim.runs("flaky").first?.state == .claimed)
        // Down while the clock is stepped back six hours; started again.
        sim.clock.manual.advance(to: utc("2026-05-31T19:00:00Z"), allowingBackwards: true)
        await sim.start(jobs)
        await sim.run(until: utc("2026-05-31T19:30:00Z"))
        await sim.stop()
        let run = try #require(try sim.runs("flaky").first)
        #expect(run.state == .succeeded)
        #expect(run.attempts == 2)
        #expect((run.finishedAt ?? .distantFuture) < utc("2026-05-31T19:01:00Z"))
    }

    /// A retention pass that the clock's backward step overtakes stops: its plan counted images now dated in the
    /// future, so going on would delete the newest image retention still trusts. It went on, and did.
    @Test func aRetentionPassStopsWhenTheClockIsSteppedBackUnderIt() async throws {
        let sim = try Simulation(start: utc("2026-06-01T00:30:00Z"))
        let stepped = Mutex(false)
        let clock = sim.clock.manual
        await sim.start(try simulationJobs("0 * * * *   web   fake:vm1")) { point in
            // After the pass's first delete, the clock goes back to 02:30: the 03:00 image is dated in the future.
            guard point == "deleted", stepped.withLock({ done in defer { done = true }; return !done }) else { return }
            clock.advance(to: utc("2026-06-01T02:30:00Z"), allowingBackwards: true)
        }
        await sim.run(until: utc("2026-06-01T03:30:00Z"))  // images of 01:00, 02:00, 03:00, all kept
        await sim.service.apply(jobs: try simulationJobs("0 * * * *   web   fake:vm1   keep=1"))
        _ = try await sim.service.pruneNow(job: "web")  // plans to delete 02:00, then 01:00
        await sim.settle()
        await sim.stop()
        let name = { (hour: Int) in
            SchedulerService.imageName(job: "web", scheduled: utc("2026-06-01T00:00:00Z") + Double(hour * 3600))
        }
        let images = try sim.store.images(job: "web", includeDeleted: true)
        #expect(images.filter { $0.state == .deleted }.map(\.name) == [name(2)])
        #expect(images.filter { $0.state == .active }.map(\.name).sorted() == [name(1), name(3)])
    }

    @Test func clockStepForwardRunsTheNewestFireWithinTheDeadline() async throws {
        let jobs = try simulationJobs(
            """
            */5 * * * *   s      fake:vm1
            0 * * * *     tight  fake:vm2   deadline=10m
            """)
        let sim = try Simulation(start: utc("2026-06-01T00:00:00Z"))
        await sim.start(jobs)
        await sim.run(until: utc("2026-06-01T00:12:30Z"))
        await sim.step(to: utc("2026-06-01T01:16:00Z"))
        await sim.run(until: utc("2026-06-01T01:21:00Z"))
        await sim.stop()
        let s = try sim.runs("s")
        // 00:15 ... 01:15 were due at once: the newest runs (1 min late), the 12 older ones are recorded missed.
        #expect(s.count == 2 + 13 + 1)
        #expect(s.filter { $0.state == .succeeded }.map(\.scheduledAt) == [
            utc("2026-06-01T00:05:00Z"), utc("2026-06-01T00:10:00Z"), utc("2026-06-01T01:15:00Z"),
            utc("2026-06-01T01:20:00Z"),
        ])
        #expect(s.filter { $0.state == .missed }.count == 12)
        // tight's 01:00 fire is 16 min late, past deadline=10m.
        #expect(try sim.runs("tight").map(\.state) == [.missed])
    }
}


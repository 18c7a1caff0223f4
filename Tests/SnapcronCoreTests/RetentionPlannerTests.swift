import Foundation
import Testing

@testable import SnapcronCore

private let utc = TimeZone(identifier: "UTC")!
private let now = Date(timeIntervalSince1970: 1_795_000_000)

/// An image `hours` before `now`.
private func image(
    _ id: String, hoursAgo hours: Double, state: String = "active", pinned: Bool = false, ours: Bool = true
) -> RetentionImage {
    RetentionImage(
        id: id, createdAt: now.addingTimeInterval(-hours * 3600), state: state, pinned: pinned, recordedAsOurs: ours)
}

@Suite struct RetentionPlannerTests {
    struct Row: Sendable, CustomTestStringConvertible {
        var name: String
        var images: [RetentionImage]
        var policy: RetentionPolicy
        var kept: Set<String>
        var testDescription: String { name }
    }

    static let five = (1...5).map { image("i\($0)", hoursAgo: Double($0)) }

    @Test(arguments: [
        // keep=N keeps the newest N active images.
        Row(name: "keep=3", images: five, policy: RetentionPolicy(keepLast: 3), kept: ["i1", "i2", "i3"]),
        Row(name: "keep more than exist", images: five, policy: RetentionPolicy(keepLast: 9), kept: ["i1", "i2", "i3", "i4", "i5"]),
        // Hard rule: the newest active image survives even a keep=0 built in code (the parser rejects 0).
        Row(name: "keep=0 still keeps newest", images: five, policy: RetentionPolicy(keepLast: 0), kept: ["i1"]),
        Row(
            name: "keep-within from now", images: five, policy: RetentionPolicy(keepWithin: .seconds(3 * 3600 - 1)),
            kept: ["i1", "i2"]),
        Row(name: "keep-within nothing recent", images: five, policy: RetentionPolicy(keepWithin: .seconds(60)), kept: ["i1"]),
        // No retention option: nothing is deleted.
        Row(name: "no policy", images: five, policy: .keepEverything, kept: ["i1", "i2", "i3", "i4", "i5"]),
        // Not active, pinned and foreign images are never deleted, and do not take keep=N slots (except pinned).
        Row(
            name: "hard rules",
            images: [
                image("saving", hoursAgo: 0.5, state: "saving"),
                image("queued", hoursAgo: 0.6, state: "QUEUED"),
                image("new", hoursAgo: 1),
                image("foreign", hoursAgo: 2, ours: false),
                image("mid", hoursAgo: 3),
                image("pinned", hoursAgo: 4, pinned: true),
                image("failed", hoursAgo: 5, state: "error"),
                image("old", hoursAgo: 6),
            ],
            policy: RetentionPolicy(keepLast: 2),
            kept: ["saving", "queued", "new", "foreign", "mid", "pinned", "failed"]),
        // Newest active means newest of ours: a newer foreign image does not shield ours from the rule.
        Row(
            name: "newest active is ours",
            images: [image("foreign", hoursAgo: 1, ours: false), image("a", hoursAgo: 2), image("b", hoursAgo: 3)],
            policy: RetentionPolicy(keepWithin: .seconds(60)), kept: ["foreign", "a"]),
        // Rules add up: an image kept by any rule stays.
        Row(
            name: "rules add up",
            images: [image("a", hoursAgo: 1), image("b", hoursAgo: 25), image("c", hoursAgo: 49), image("d", hoursAgo: 73)],
            policy: RetentionPolicy(keepLast: 1, keepDaily: 3), kept: ["a", "b", "c"]),
    ])
    func plansTable(_ row: Row) {
        let plan = RetentionPlanner(policy: row.policy, timeZone: utc).plan(for: row.images, now: now)
        #expect(Set(plan.keeps.map(\.id)) == row.kept)
        #expect(plan.decisions.count == row.images.count)
        for deletion in plan.deletions { #expect(deletion.reasons == ["outside every rule"]) }
    }

    @Test func explainsEveryReason() throws {
        let images = [
            image("saving", hoursAgo: 0.5, state: "saving"),
            image("new", hoursAgo: 1, pinned: true),
            image("foreign", hoursAgo: 2, ours: false),
            image("old", hoursAgo: 30),
            image("older", hoursAgo: 60),
        ]
        let policy = RetentionPolicy(keepLast: 1, keepDaily: 2)
        let plan = RetentionPlanner(policy: policy, timeZone: utc).plan(for: images, now: now)
        let byID = Dictionary(uniqueKeysWithValues: plan.decisions.map { ($0.id, $0) })
        let day = { (hours: Double) in
            let formatter = DateFormatter()
            formatter.timeZone = utc
            formatter.dateFormat = "yyyy-MM-dd"
            return formatter.string(from: now.addingTimeInterval(-hours * 3600))
        }
        #expect(byID["saving"]?.description == "keep: not active (saving)")
        #expect(byID["new"]?.description == "keep: newest active, pinned, keep 1/1, keep-daily 1/2 (\(day(1)))")
        #expect(byID["foreign"]?.description == "keep: not created by snapcron")
        #expect(byID["old"]?.description == "keep: keep-daily 2/2 (\(day(30)))")
        #expect(byID["older"]?.description == "delete: outside every rule")
        #expect(plan.decisions.map(\.id) == ["saving", "new", "foreign", "old", "older"])
        #expect(plan.policy == "keep=1 keep-daily=2")
    }

    @Test func planRoundTripsThroughJSON() throws {
        let plan = RetentionPlanner(policy: RetentionPolicy(keepLast: 2), timeZone: utc).plan(for: Self.five, now: now)
        let data = try JSONEncoder().encode(plan)
        #expect(try JSONDecoder().decode(RetentionPlan.self, from: data) == plan)
        #expect(plan.deletions.map(\.id) == ["i3", "i4", "i5"])
    }

    // MARK: A simulated year of hourly images

    /// Hourly images (every 3600 s, so 23 or 25 per local day across DST) from `start` local midnight.
    static func hourlyYear(in zone: TimeZone) -> [RetentionImage] {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let start = calendar.date(from: DateComponents(year: 2025, month: 11, day: 28))!
        return (0..<(365 * 24)).map { hour in
            RetentionImage(id: "img-\(hour)", createdAt: start.addingTimeInterval(Double(hour) * 3600), state: "active")
        }
    }

    static func localStamp(_ date: Date, _ zone: TimeZone) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = zone
        formatter.dateFormat = "yyyy-MM-dd HH:mm"
        return formatter.string(from: date)
    }

    @Test(arguments: ["Asia/Taipei", "America/New_York"])
    func simulatedYearKeepsExactGFSSet(_ zoneID: String) throws {
        let zone = try #require(TimeZone(identifier: zoneID))
        let images = Self.hourlyYear(in: zone)
        let last = try #require(images.last)
        // Across both DST changes in New York the 8760th hour still lands on 23:00 local.
        #expect(Self.localStamp(last.createdAt, zone) == "2026-11-27 23:00")
        let policy = RetentionPolicy(keepDaily: 7, keepWeekly: 4, keepMonthly: 12)
        let plan = RetentionPlanner(policy: policy, timeZone: zone)
            .plan(for: images, now: last.createdAt.addingTimeInterval(1800))

        let daily = (21...27).map { "2026-11-\($0) 23:00" }
        // ISO weeks 48 (Fri 27th is the newest), 47, 46, 45: the newest of each is Sunday 23:00.
        let weekly = ["2026-11-27 23:00", "2026-11-22 23:00", "2026-11-15 23:00", "2026-11-08 23:00"]
        let monthly = [
            "2026-11-27 23:00", "2026-10-31 23:00", "2026-09-30 23:00", "2026-08-31 23:00", "2026-07-31 23:00",
            "2026-06-30 23:00", "2026-05-31 23:00", "2026-04-30 23:00", "2026-03-31 23:00", "2026-02-28 23:00",
            "2026-01-31 23:00", "2025-12-31 23:00",
        ]
        let expected = Set(daily + weekly + monthly)
        #expect(expected.count == 20)
        let kept = plan.keeps.map { Self.localStamp($0.createdAt, zone) }
        #expect(Set(kept) == expected)
        #expect(kept.count == 20)
        #expect(plan.deletions.count == 8760 - 20)

        // Each tier filled exactly its count; the newest image satisfies all three.
        let reasons = plan.keeps.flatMap(\.reasons)
        #expect(reasons.count { $0.hasPrefix("keep-daily ") } == 7)
        #expect(reasons.count { $0.hasPrefix("keep-weekly ") } == 4)
        #expect(reasons.count { $0.hasPrefix("keep-monthly ") } == 12)
        #expect(
            plan.keeps.first?.reasons == [
                "newest active", "keep-daily 1/7 (2026-11-27)", "keep-weekly 1/4 (2026-W48)",
                "keep-monthly 1/12 (2026-11)",
            ])
        #expect(plan.keeps.contains { $0.reasons == ["keep-weekly 4/4 (2026-W45)"] })
        #expect(plan.keeps.contains { $0.reasons == ["keep-monthly 12/12 (2025-12)"] })
    }

    @Test(arguments: ["Asia/Taipei", "America/New_York"])
    func yearlyAndHourlyTiersOverAYear(_ zoneID: String) throws {
        let zone = try #require(TimeZone(identifier: zoneID))
        let images = Self.hourlyYear(in: zone)
        let now = images.last!.createdAt
        let yearly = RetentionPlanner(policy: RetentionPolicy(keepYearly: 5), timeZone: zone).plan(for: images, now: now)
        // Only two calendar years exist: fewer periods than N keeps what exists.
        #expect(yearly.keeps.map { Self.localStamp($0.createdAt, zone) } == ["2026-11-27 23:00", "2025-12-31 23:00"])
        let hourly = RetentionPlanner(policy: RetentionPolicy(keepHourly: 24), timeZone: zone).plan(for: images, now: now)
        #expect(hourly.keeps.count == 24)
        #expect(Set(hourly.keeps.map(\.id)) == Set(images.suffix(24).map(\.id)))
    }

    @Test func fallBackHourIsOnePeriod() throws {
        let zone = try #require(TimeZone(identifier: "America/New_York"))
        // 2026-11-01: 01:00-01:59 happens twice (EDT, then EST). Images every 30 minutes from 00:00 EDT (04:00Z).
        let start = Date(timeIntervalSince1970: 1_793_505_600)
        #expect(Self.localStamp(start, zone) == "2026-11-01 00:00")
        let images = (0..<8).map { RetentionImage(id: "h\($0)", createdAt: start.addingTimeInterval(Double($0) * 1800), state: "active") }
        // Local: 00:00 00:30 01:00 01:30 (EDT) 01:00 01:30 (EST) 02:00 02:30.
        let plan = RetentionPlanner(policy: RetentionPolicy(keepHourly: 3), timeZone: zone)
            .plan(for: images, now: images.last!.createdAt)
        // Newest of 02:00, of the doubled 01:00 (the EST 01:30), and of 00:00.
        #expect(plan.keeps.map(\.id) == ["h7", "h5", "h1"])
        #expect(plan.keeps.map { $0.reasons.last! } == [
            "keep-hourly 1/3 (2026-11-01 02:00)", "keep-hourly 2/3 (2026-11-01 01:00)",
            "keep-hourly 3/3 (2026-11-01 00:00)",
        ])
    }

    @Test func springForwardDayHasTwentyThreeHourlyPeriods() throws {
        let zone = try #require(TimeZone(identifier: "America/New_York"))
        let images = Self.hourlyYear(in: zone)
        let dayImages = images.filter { Self.localStamp($0.createdAt, zone).hasPrefix("2026-03-08") }
        #expect(dayImages.count == 23)
        let plan = RetentionPlanner(policy: RetentionPolicy(keepHourly: 100), timeZone: zone)
            .plan(for: dayImages, now: dayImages.last!.createdAt)
        #expect(plan.keeps.count == 23)
        #expect(!plan.keeps.contains { $0.reasons.contains { $0.contains("02:00") } })
    }
}

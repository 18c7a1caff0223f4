import Foundation
import Testing

@testable import CronExpression

/// The DST rules of docs/cron-syntax.md, zone by zone (D11 gap, D12 overlap), with the marks `next` prints.
@Suite struct DSTTableTests {
    struct Row: CustomTestStringConvertible, Sendable {
        var expression: String
        var zone: String
        var after: String
        var fires: [String]
        /// Expected adjustments per fire: "" none, "gap", "first", "pass1", "pass2".
        var marks: [String]
        var testDescription: String { "'\(expression)' \(zone) after \(after)" }
    }

    static let rows: [Row] = [
        // New York, spring forward 2024-03-10 02:00 -> 03:00.
        Row(expression: "30 2 * * *", zone: "America/New_York", after: "2024-03-09T12:00:00-05:00",
            fires: ["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"], marks: ["gap", ""]),
        Row(expression: "0,30 2 * * *", zone: "America/New_York", after: "2024-03-10T00:00:00-05:00",
            fires: ["2024-03-10T03:00:00-04:00", "2024-03-11T02:00:00-04:00"], marks: ["gap", ""]),
        Row(expression: "30 2,3 * * *", zone: "America/New_York", after: "2024-03-10T00:00:00-05:00",
            fires: ["2024-03-10T03:00:00-04:00", "2024-03-10T03:30:00-04:00"], marks: ["gap", ""]),
        Row(expression: "*/30 * * * *", zone: "America/New_York", after: "2024-03-10T01:00:00-05:00",
            fires: ["2024-03-10T01:30:00-05:00", "2024-03-10T03:00:00-04:00", "2024-03-10T03:30:00-04:00"],
            marks: ["", "", ""]),
        Row(expression: "30 * * * *", zone: "America/New_York", after: "2024-03-10T01:00:00-05:00",
            fires: ["2024-03-10T01:30:00-05:00", "2024-03-10T03:30:00-04:00"], marks: ["", ""]),
        // New York, fall back 2024-11-03 02:00 EDT -> 01:00 EST.
        Row(expression: "30 1 * * *", zone: "America/New_York", after: "2024-11-02T12:00:00-04:00",
            fires: ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"], marks: ["first", ""]),
        Row(expression: "30 1 * * *", zone: "America/New_York", after: "2024-11-03T01:45:00-04:00",
            fires: ["2024-11-04T01:30:00-05:00"], marks: [""]),
        Row(expression: "30 * * * *", zone: "America/New_York", after: "2024-11-03T00:45:00-04:00",
            fires: ["2024-11-03T01:30:00-04:00", "2024-11-03T01:30:00-05:00", "2024-11-03T02:30:00-05:00"],
            marks: ["pass1", "pass2", ""]),
        Row(expression: "@hourly", zone: "America/New_York", after: "2024-11-03T00:30:00-04:00",
            fires: ["2024-11-03T01:00:00-04:00", "2024-11-03T01:00:00-05:00", "2024-11-03T02:00:00-05:00"],
            marks: ["pass1", "pass2", ""]),
        // Berlin, 2024-03-31 02:00 -> 03:00 and 2024-10-27 03:00 -> 02:00.
        Row(expression: "15 2 * * *", zone: "Europe/Berlin", after: "2024-03-30T12:00:00+01:00",
            fires: ["2024-03-31T03:00:00+02:00", "2024-04-01T02:15:00+02:00"], marks: ["gap", ""]),
        Row(expression: "15 2 * * *", zone: "Europe/Berlin", after: "2024-10-26T12:00:00+02:00",
            fires: ["2024-10-27T02:15:00+02:00", "2024-10-28T02:15:00+01:00"], marks: ["first", ""]),
        // Lord Howe: 30-minute shifts. 2024-10-06 02:00 -> 02:30; 2024-04-07 02:00 -> 01:30.
        Row(expression: "15 2 * * *", zone: "Australia/Lord_Howe", after: "2024-10-05T12:00:00+10:30",
            fires: ["2024-10-06T02:30:00+11:00", "2024-10-07T02:15:00+11:00"], marks: ["gap", ""]),
        Row(expression: "*/15 2 * * *", zone: "Australia/Lord_Howe", after: "2024-10-06T00:00:00+10:30",
            fires: ["2024-10-06T02:30:00+11:00", "2024-10-06T02:45:00+11:00"], marks: ["", ""]),
        Row(expression: "45 1 * * *", zone: "Australia/Lord_Howe", after: "2024-04-06T12:00:00+11:00",
            fires: ["2024-04-07T01:45:00+11:00", "2024-04-08T01:45:00+10:30"], marks: ["first", ""]),
        Row(expression: "*/20 1 * * *", zone: "Australia/Lord_Howe", after: "2024-04-07T01:30:00+11:00",
            fires: ["2024-04-07T01:40:00+11:00", "2024-04-07T01:40:00+10:30", "2024-04-08T01:00:00+10:30"],
            marks: ["pass1", "pass2", ""]),
        // Sao Paulo switched at midnight until 2018: 2018-11-04 00:00 -> 01:00.
        Row(expression: "0 0 * * *", zone: "America/Sao_Paulo", after: "2018-11-03T12:00:00-03:00",
            fires: ["2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00"], marks: ["gap", ""]),
        Row(expression: "0 * * * *", zone: "America/Sao_Paulo", after: "2018-11-03T23:30:00-03:00",
            fires: ["2018-11-04T01:00:00-02:00", "2018-11-04T02:00:00-02:00"], marks: ["", ""]),
        // Taipei has no DST: nothing moves.
        Row(expression: "0 1 * * *", zone: "Asia/Taipei", after: "2026-03-08T00:00:00+08:00",
            fires: ["2026-03-08T01:00:00+08:00", "2026-03-09T01:00:00+08:00"], marks: ["", ""]),
        // Leap day across 2100 (not a leap year) and a Sunday Feb 29 under the AND rule.
        Row(expression: "0 0 29 2 *", zone: "UTC", after: "2096-03-01T00:00:00+00:00",
            fires: ["2104-02-29T00:00:00+00:00"], marks: [""]),
        Row(expression: "0 0 29 2 */7", zone: "UTC", after: "2024-03-01T00:00:00+00:00",
            fires: ["2032-02-29T00:00:00+00:00"], marks: [""]),
    ]

    @Test(arguments: rows)
    func firesFollowTheDSTRules(_ row: Row) throws {
        let zone = try #require(CronTimeZone(identifier: row.zone))
        let start = try #require(ISO8601.parse(row.after))
        let fires = Array(try CronExpression(row.expression).fires(after: start, in: zone).prefix(row.fires.count))
        #expect(fires.map { ISO8601.format($0.date, in: zone) } == row.fires)
        #expect(fires.map { Self.mark($0.adjustment) } == row.marks)
    }

    @Test func gapCoalescesSkippedTimes() throws {
        let zone = try #require(CronTimeZone(identifier: "America/New_York"))
        let start = try #require(ISO8601.parse("2024-03-10T00:00:00-05:00"))
        let fire = try #require(try CronExpression("0,15,30,45 2 * * *").nextFire(after: start, in: zone))
        guard case .shiftedFromGap(let nominal, let coalesced) = fire.adjustment else {
            Issue.record("expected a gap shift, got \(fire.adjustment)")
            return
        }
        #expect(nominal.description == "2024-03-10 02:00")
        #expect(coalesced == 4)
    }

    @Test func nextIsStrictlyAfterTheStart() throws {
        let expression = try CronExpression("0 1 * * *")
        let at = try #require(ISO8601.parse("2026-01-01T01:00:00+00:00"))
        #expect(expression.nextDate(after: at) == at.addingTimeInterval(86_400))
        #expect(expression.nextDate(after: at.addingTimeInterval(-0.5)) == at)
    }

    @Test func neverFiringWithinTheHorizonIsNil() throws {
        // Fires only when Feb 29 is a Monday that is also the fifth Monday: 28-year gaps, within 50 years.
        let rare = try CronExpression("0 0 * 2 1#5")
        let start = try #require(ISO8601.parse("2016-03-01T00:00:00+00:00"))
        #expect(rare.nextDate(after: start).map { ISO8601.format($0, in: .utc) } == "2044-02-29T00:00:00+00:00")
        #expect(rare.nextDate(after: try #require(ISO8601.parse("9999-01-01T00:00:00+00:00"))) != nil)
    }

    static func mark(_ adjustment: DSTAdjustment) -> String {
        switch adjustment {
        case .none: ""
        case .shiftedFromGap: "gap"
        case .firstOfRepeatedTime: "first"
        case .repeatedTimeFirstPass: "pass1"
        case .repeatedTimeSecondPass: "pass2"
        }
    }
}

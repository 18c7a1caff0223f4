import Foundation
import Testing

@testable import CronExpression

@Suite struct ParserTests {
    /// `1️⃣` marks the column the error must point at; it is removed before parsing.
    static func assertParseError(
        _ marked: String, _ message: String, hashSeed: String? = nil, sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let marker = "1️⃣"
        guard let range = marked.range(of: marker) else {
            Issue.record("no marker in '\(marked)'", sourceLocation: sourceLocation)
            return
        }
        let column = marked.unicodeScalars.distance(
            from: marked.unicodeScalars.startIndex, to: range.lowerBound.samePosition(in: marked.unicodeScalars)!) + 1
        let text = marked.replacingOccurrences(of: marker, with: "")
        do {
            _ = try CronExpression(text, hashSeed: hashSeed)
            Issue.record("'\(text)' was accepted", sourceLocation: sourceLocation)
        } catch {
            #expect(error.message == message, sourceLocation: sourceLocation)
            #expect(error.column == column, "column of '\(error.message)'", sourceLocation: sourceLocation)
        }
    }

    @Test func errorsPointAtTheOffendingToken() {
        Self.assertParseError("0 3 * * 1️⃣8", "day-of-week: value 8 out of range 0-7")
        Self.assertParseError("1️⃣60 * * * *", "minute: value 60 out of range 0-59")
        Self.assertParseError("0 0 1️⃣nov-feb * *", "day-of-month: names are not allowed in this field ('nov')")
        Self.assertParseError(
            "0 0 * 1️⃣nov-feb *",
            "month: range 'nov-feb' wraps around (11 > 2); wrap-around ranges are not supported, write '11-12,1-2'")
        Self.assertParseError("*/1️⃣0 * * * *", "minute: step must be a positive integer, got '0'")
        Self.assertParseError("1,1️⃣,2 * * * *", "minute: empty list element in '1,,2'")
        Self.assertParseError("0\t0\t*\t*\t1️⃣x", "day-of-week: unknown name 'x' (use 3-letter names sun..sat)")
        Self.assertParseError("0 0 1️⃣15W * *", "day-of-month: '15W' (nearest weekday, 'W') is not supported")
        Self.assertParseError("0 0 * * 1️⃣5#3/2", "day-of-week: '#' must be followed by 1-5 in '5#3/2'")
        Self.assertParseError("1️⃣5#3 * * * *", "minute: '#' is only allowed in day-of-week ('5#3')")
        Self.assertParseError("1️⃣@every 5m", "@every is not supported; write a step such as '*/15 * * * *'")
        Self.assertParseError("1️⃣@fortnightly", "unknown macro '@fortnightly' (use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)")
        Self.assertParseError("1️⃣H * * * *", "minute: 'H' needs a job name to hash (give the job a name, or --job NAME)")
        Self.assertParseError("1️⃣H(5) * * * *", "minute: malformed hash 'H(5)' (use H, H(a-b), H/s or H(a-b)/s)", hashSeed: "a")
        Self.assertParseError("0 0 1️⃣31 4 *", "schedule never fires: day-of-month 31 does not exist in month(s) apr")
        Self.assertParseError("0 0 * * 1️⃣99999999999999999999", "day-of-week: value 99999999999999999999 out of range 0-7")
    }

    @Test func renderingPutsTheCaretUnderTheColumn() throws {
        do {
            _ = try CronExpression("0 3 * * 8")
            Issue.record("accepted")
        } catch {
            #expect(
                error.rendered(source: "etc/schedule", line: 12, lineText: "0 3 * * 8")
                    == "etc/schedule:12:9: error: day-of-week: value 8 out of range 0-7\n12 | 0 3 * * 8\n   |         ^")
        }
    }

    @Test func extensionsMatchTheRightDays() throws {
        let zone = CronTimeZone.utc
        let start = try #require(ISO8601.parse("2026-01-01T00:00:00+00:00"))
        func firstThree(_ text: String) throws -> [String] {
            try CronExpression(text).fires(after: start, in: zone).prefix(3).map {
                String(CronFormat.iso8601($0.date, in: zone).prefix(10))
            }
        }
        #expect(try firstThree("0 0 L * *") == ["2026-01-31", "2026-02-28", "2026-03-31"])
        #expect(try firstThree("0 0 LW * *") == ["2026-01-30", "2026-02-27", "2026-03-31"])
        #expect(try firstThree("0 0 * * 5L") == ["2026-01-30", "2026-02-27", "2026-03-27"])
        #expect(try firstThree("0 0 * * 1#1") == ["2026-01-05", "2026-02-02", "2026-03-02"])
        #expect(try firstThree("0 0 * * mon#5") == ["2026-03-30", "2026-06-29", "2026-08-31"])
        #expect(try firstThree("0 0 13 * fri") == ["2026-01-02", "2026-01-09", "2026-01-13"])
        // `*/10` starts with `*`: days 1, 11, 21, 31 that are also Fridays.
        #expect(try firstThree("0 0 */10 * fri") == ["2026-05-01", "2026-07-31", "2026-08-21"])
    }

    @Test func hashedFieldsAreStablePerJobAndSpread() throws {
        let first = try CronExpression("H H * * *", hashSeed: "web-nightly")
        #expect(try CronExpression("H H * * *", hashSeed: "web-nightly") == first)
        var minutes = Set<UInt64>()
        for index in 0..<200 {
            minutes.insert(try CronExpression("H * * * *", hashSeed: "job-\(index)").minutes)
        }
        #expect(minutes.count > 40, "200 names should spread over most of the 60 minutes")
        let stepped = try CronExpression("H/15 * * * *", hashSeed: "db")
        #expect(stepped.minutes.nonzeroBitCount == 4)
        let ranged = try CronExpression("H(0-5) H(1-5) H * *", hashSeed: "db")
        #expect(ranged.minutes.trailingZeroBitCount <= 5)
        #expect((1...5).contains(ranged.hours.trailingZeroBitCount))
        #expect((1...28).contains(ranged.daysOfMonth.trailingZeroBitCount))
        #expect(!ranged.isWildcardForDST)
    }

    @Test(arguments: [
        ("0 1 * * *", "at 01:00 every day"),
        ("*/15 9-17 * * 1-5", "every 15 minutes past hours 9-17 on Monday through Friday"),
        ("0-45/15 9-17 * * mon-fri", "every 15 minutes past hours 9-17 on Monday through Friday"),
        ("5-50/15 * * * *", "every 15 minutes from 5 through 50 past every hour"),
        ("* * * * *", "every minute"),
        ("0 */2 * * *", "at minute 0 past every 2 hours"),
        ("30 4 1,15 * 5", "at 04:30 on days 1 and 15 of the month or on Friday"),
        ("0 0 */2 * sun", "at 00:00 on every 2nd day of the month if it is also Sunday"),
        ("0 12 * jan,apr,jul,oct mon", "at 12:00 on Monday in January, April, July and October"),
        ("0 0 L * *", "at 00:00 on the last day of the month"),
        ("0 22 * * 5L", "at 22:00 on the last Friday of the month"),
        ("0 8 * * 1#1", "at 08:00 on the first Monday of the month"),
        ("0 0 1 1 *", "at 00:00 on day 1 of the month in January"),
        ("0 6,18 * * sat,sun", "at 06:00 and 18:00 on Saturday and Sunday"),
    ])
    func describesInPlainEnglish(_ text: String, _ expected: String) throws {
        #expect(try CronExpression(text).englishDescription == expected)
    }

    @Test func warnsAboutDebiansSurprisingDayRule() throws {
        let star = try CronExpression.parseWithWarnings("0 0 */2 * sun")
        #expect(star.warnings.map(\.field) == [.dayOfMonth])
        #expect(star.warnings.first?.columns == 5..<8)
        let either = try CronExpression.parseWithWarnings("0 0 1-31 * mon")
        #expect(either.warnings.first?.message.contains("fires every day") == true)
        #expect(try CronExpression.parseWithWarnings("0 0 1 * mon").warnings.isEmpty)
        #expect(try CronExpression.parseWithWarnings("0 0 * * mon").warnings.isEmpty)
    }

    @Test func parsesInstantsForNext() throws {
        let newYork = try #require(CronTimeZone(identifier: "America/New_York"))
        #expect(CronFormat.parseInstant("2024-03-10T02:30", in: newYork).map { CronFormat.iso8601($0, in: newYork) }
            == "2024-03-10T03:00:00-04:00")
        #expect(CronFormat.parseInstant("2024-11-03 01:30", in: newYork).map { CronFormat.iso8601($0, in: newYork) }
            == "2024-11-03T01:30:00-04:00")
        #expect(CronFormat.parseInstant("2024-11-03T06:30:00Z", in: newYork).map { CronFormat.iso8601($0, in: newYork) }
            == "2024-11-03T01:30:00-05:00")
        #expect(CronFormat.parseInstant("2024-02-30T00:00:00Z", in: newYork) == nil)
        #expect(CronFormat.parseInstant("yesterday", in: newYork) == nil)
    }

    @Test func expressionIsSmall() {
        #expect(MemoryLayout<CronExpression>.size <= 40)
    }
}

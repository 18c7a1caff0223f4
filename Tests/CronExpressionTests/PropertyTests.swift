import Foundation
import TestThreads
import Testing

@testable import CronExpression

@Suite(.onCPULane) struct PropertyTests {
    static let zones = ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "America/Sao_Paulo"]

    /// For random valid expressions and random starts: the engine's next fire is after the start, matches, and
    /// no earlier fire exists by a brute-force minute scan under D11/D12.
    @Test(arguments: zones)
    func nextFireIsTheEarliestMatch(zoneName: String) throws {
        let seed = SplitMix64.seedFromEnvironment()
        print("PropertyTests.nextFireIsTheEarliestMatch(\(zoneName)) seed=\(seed) (replay: SNAPCRON_SEED=\(seed))")
        var rng = SplitMix64(seed: seed)
        let zone = try #require(CronTimeZone(identifier: zoneName))
        let foundationZone = try #require(TimeZone(identifier: zoneName))
        for _ in 0..<200 {
            let generated = GeneratedExpression.random(using: &rng)
            let expression = try CronExpression(generated.text)
            #expect(expression.isWildcardForDST == generated.wildcard, "\(generated) seed=\(seed)")
            // Starts in 1995...2035, biased towards DST change days where the rules bite.
            var start = Date(timeIntervalSince1970: Double.random(in: 788_918_400...2_082_758_400, using: &rng))
            if Int.random(in: 0..<4, using: &rng) > 0, let transition = foundationZone.nextDaylightSavingTimeTransition(after: start) {
                start = transition.addingTimeInterval(Double.random(in: -7200...3600, using: &rng).rounded())
            }
            let scanDays = 400
            let expected = BruteForce.nextFire(
                after: start, zone: foundationZone, matches: generated.matches, wildcard: generated.wildcard,
                scanDays: scanDays)
            let actual = expression.nextDate(after: start, in: zone)
            if let expected {
                #expect(actual == expected, "'\(generated)' in \(zoneName) after \(start): seed=\(seed)")
            } else if let actual {
                #expect(
                    actual.timeIntervalSince(start) > Double(scanDays) * 86_400,
                    "'\(generated)' in \(zoneName) after \(start): brute force found nothing; seed=\(seed)")
            }
            if let actual {
                #expect(actual > start)
            }
        }
    }

    /// The normalized form parses to an equal expression and is a fixed point.
    @Test func normalizedFormRoundTrips() throws {
        let seed = SplitMix64.seedFromEnvironment()
        print("PropertyTests.normalizedFormRoundTrips seed=\(seed)")
        var rng = SplitMix64(seed: seed)
        var texts = (0..<500).map { _ in GeneratedExpression.random(using: &rng).text }
        texts += OracleTests.nextFires.map(\.expr)
        for text in texts {
            let expression = try CronExpression(text)
            let normalized = expression.normalized
            let reparsed = try CronExpression(normalized)
            #expect(reparsed == expression, "'\(text)' -> '\(normalized)' seed=\(seed)")
            #expect(reparsed.normalized == normalized, "'\(text)' seed=\(seed)")
        }
    }

    /// The generator's own sets agree with the parser's, so the brute force checks the search, not the parser.
    @Test func parserAgreesWithGeneratedSets() throws {
        var rng = SplitMix64(seed: SplitMix64.seedFromEnvironment())
        for _ in 0..<500 {
            let generated = GeneratedExpression.random(using: &rng)
            let expression = try CronExpression(generated.text)
            #expect(Set(expression.values(expression.minutes, 0...59)) == generated.minutes, "\(generated)")
            #expect(Set(expression.values(UInt64(expression.hours), 0...23)) == generated.hours, "\(generated)")
            #expect(Set(expression.values(UInt64(expression.daysOfMonth), 1...31)) == generated.days, "\(generated)")
            #expect(Set(expression.values(UInt64(expression.months), 1...12)) == generated.months, "\(generated)")
            #expect(Set(expression.values(UInt64(expression.daysOfWeek), 0...6)) == generated.weekdays, "\(generated)")
        }
    }

    @Test func civilCalendarAgreesWithFoundation() throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = try #require(TimeZone(identifier: "UTC"))
        // From 1600 on: before the 1582 reform Foundation counts Julian dates.
        for day in stride(from: -135_000, through: 800_000, by: 997) {
            let date = Date(timeIntervalSince1970: TimeInterval(day) * 86_400)
            let parts = calendar.dateComponents([.year, .month, .day, .weekday], from: date)
            let civil = CivilCalendar.date(fromDayNumber: day)
            #expect(civil.year == parts.year && civil.month == parts.month && civil.day == parts.day)
            #expect(CivilCalendar.weekday(dayNumber: day) == (parts.weekday ?? 0) - 1)
            #expect(CivilCalendar.dayNumber(year: civil.year, month: civil.month, day: civil.day) == day)
        }
    }
}

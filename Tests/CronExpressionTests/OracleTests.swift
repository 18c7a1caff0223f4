import Foundation
import TestThreads
import Testing

@testable import CronExpression

/// Differential tests: every row of the oracle (computed by independent implementations) must pass.
@Suite(.onCPULane) struct OracleTests {
    struct FireRow: Decodable, CustomTestStringConvertible, Sendable {
        var expr: String
        var tz: String
        var start: String
        var next: [String]
        var id: String?
        var category: String?
        var expanded: String?
        var testDescription: String { "\(id ?? expr) [\(category ?? "macro")] '\(expr)' \(tz) after \(start)" }
    }

    struct InvalidRow: Decodable, CustomTestStringConvertible, Sendable {
        var expr: String
        var valid: Bool
        var message: String?
        var testDescription: String { "'\(expr)'" }
    }

    static let nextFires: [FireRow] = Fixtures.jsonLines("next-fires")
    static let macros: [FireRow] = Fixtures.jsonLines("macros")
    static let invalid: [InvalidRow] = Fixtures.jsonLines("invalid")

    @Test func fixturesAreComplete() {
        #expect(Self.nextFires.count == 1049)
        #expect(Self.macros.count == 37)
        #expect(Self.invalid.count == 81)
    }

    @Test(arguments: nextFires)
    func nextFiresMatchOracle(_ row: FireRow) throws {
        try assertFires(row)
    }

    @Test(arguments: macros)
    func macrosMatchOracle(_ row: FireRow) throws {
        try assertFires(row)
        let expanded = try #require(row.expanded)
        #expect(try CronExpression(row.expr) == CronExpression(expanded))
        #expect(try CronExpression(row.expr).normalized == expanded)
    }

    private func assertFires(_ row: FireRow) throws {
        let expression = try CronExpression(row.expr)
        let zone = try #require(CronTimeZone(identifier: row.tz))
        let start = try #require(ISO8601.parse(row.start))
        var fires = expression.fires(after: start, in: zone)
        var got: [String] = []
        for _ in row.next {
            guard let fire = fires.next() else { break }
            got.append(ISO8601.format(fire.date, in: zone))
        }
        #expect(got == row.next)
    }

    /// Rejections carry the oracle's reason; the wording matches exactly except where our fix-it differs.
    @Test(arguments: invalid)
    func validityMatchesOracle(_ row: InvalidRow) {
        do {
            _ = try CronExpression(row.expr)
            #expect(row.valid, "accepted, but the oracle says: \(row.message ?? "")")
        } catch {
            #expect(!row.valid, "rejected with '\(error.message)', but the oracle accepts it")
            guard let expected = row.message else { return }
            if let prefix = Self.rewordedPrefixes[row.expr] {
                #expect(error.message.hasPrefix(prefix), "got '\(error.message)'")
            } else {
                #expect(error.message == expected)
            }
        }
    }

    /// Rows whose message we word differently on purpose: the schedule file sets zones with CRON_TZ= lines.
    static let rewordedPrefixes: [String: String] = [
        "CRON_TZ=UTC 0 0 * * *": "TZ=/CRON_TZ= prefixes are not accepted in the expression"
    ]
}

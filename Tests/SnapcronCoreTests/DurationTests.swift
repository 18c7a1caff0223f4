import BackendTypes
import Testing

@testable import SnapcronCore

@Suite struct DurationTests {
    @Test(arguments: [
        ("30s", 30, "30s"),
        ("15m", 900, "15m"),
        ("2h", 7_200, "2h"),
        ("1d", 86_400, "1d"),
        ("1w", 604_800, "1w"),
        // Combinations, in any order, formatted canonically.
        ("1h30m", 5_400, "1h30m"),
        ("30m1h", 5_400, "1h30m"),
        ("90m", 5_400, "1h30m"),
        ("1w2d3h4m5s", 788_645, "1w2d3h4m5s"),
        ("36h", 129_600, "1d12h"),
        ("0", 0, "0s"),
        ("0s", 0, "0s"),
        ("007m", 420, "7m"),
    ])
    func parsesAndFormats(_ text: String, _ seconds: Int64, _ canonical: String) throws {
        let duration = try Duration(parsingOption: text)
        #expect(duration == .seconds(seconds))
        #expect(duration.optionDescription == canonical)
        // The canonical form is a fixed point.
        #expect(try Duration(parsingOption: canonical).optionDescription == canonical)
    }

    @Test(arguments: [
        ("", "empty duration (e.g. 30s, 15m, 2h, 1d, 1w, 1h30m)", 0..<0),
        ("-5m", "negative duration '-5m' not allowed", 0..<3),
        ("5x", "unknown unit 'x' in '5x' (use s, m, h, d, w)", 1..<2),
        ("5min", "unknown unit 'min' in '5min' (use s, m, h, d, w)", 1..<4),
        ("1h 30m", "unknown unit 'h ' in '1h 30m' (use s, m, h, d, w)", 1..<3),
        ("30", "missing unit after '30' in '30' (use s, m, h, d, w)", 0..<2),
        ("1h30", "missing unit after '30' in '1h30' (use s, m, h, d, w)", 2..<4),
        ("h", "missing number before 'h' in 'h'", 0..<1),
        ("1h2h", "unit 'h' given twice in '1h2h'", 3..<4),
        ("99999999999999999999s", "duration '99999999999999999999s' is too large", 0..<21),
        ("15250284452472w", "duration '15250284452472w' is too large", 0..<15),
        ("1w9223372036854775807s", "duration '1w9223372036854775807s' is too large", 0..<22),
    ])
    func rejects(_ text: String, _ message: String, _ offsets: Range<Int>) {
        #expect {
            _ = try Duration(parsingOption: text)
        } throws: { error in
            let error = error as? DurationParseError
            return error?.description == message && error?.offsets == offsets
        }
    }
}

import Testing

@testable import SnapcronCore

@Suite struct DiagnosticTests {
    let schedule = SourceLine(file: "etc/schedule", number: 12, text: "0 3 * * 8")

    @Test func rendersLikeACompiler() {
        let diagnostic = Diagnostic.error("day-of-week: value 8 out of range 0-7", at: schedule, columns: 9..<10)
        #expect(
            diagnostic.description == """
                etc/schedule:12:9: error: day-of-week: value 8 out of range 0-7
                12 | 0 3 * * 8
                   |         ^
                """)
    }

    struct CaretRow: Sendable, CustomTestStringConvertible {
        var source: String
        var columns: Range<Int>
        var caret: String
        var testDescription: String { "\(source.debugDescription) \(columns)" }
    }

    @Test(arguments: [
        // One column, a range, an empty range still shows one caret.
        CaretRow(source: "0 3 * * 8", columns: 1..<2, caret: "^"),
        CaretRow(source: "0 3 * * 8", columns: 5..<10, caret: "    ^~~~~"),
        CaretRow(source: "0 3 * * 8", columns: 3..<3, caret: "  ^"),
        // TABs of the source are kept in the padding so the caret lines up under any tab width.
        CaretRow(source: "0\t3\t*\t*\t8", columns: 9..<10, caret: " \t \t \t \t^"),
        CaretRow(source: "\t\tkeep=x", columns: 8..<9, caret: "\t\t     ^"),
        // Past the end of the line (a missing value).
        CaretRow(source: "keep=", columns: 6..<7, caret: "     ^"),
    ])
    func caretLine(_ row: CaretRow) {
        #expect(Diagnostic.caretLine(for: row.columns, under: row.source) == row.caret)
    }

    @Test func widensGutterForLongLineNumbers() {
        let line = SourceLine(file: "s", number: 1024, text: "@daily x local:/a kep=1")
        let diagnostic = Diagnostic.error("unknown option 'kep'", at: line, columns: 19..<22, note: "did you mean 'keep'?")
        #expect(
            diagnostic.description == """
                s:1024:19: error: unknown option 'kep'
                1024 | @daily x local:/a kep=1
                     |                   ^~~
                s:1024:19: note: did you mean 'keep'?
                """)
    }

    @Test func rendersFileLevelErrorWithoutLine() {
        let diagnostic = Diagnostic.error(
            "backends.cloud: unknown type 'tw cc' (expected local, exec, twcc)", file: "snapcron.toml")
        #expect(diagnostic.description == "snapcron.toml: error: backends.cloud: unknown type 'tw cc' (expected local, exec, twcc)")
    }

    @Test func listRendersAllWithSummary() {
        var list: DiagnosticList = [
            .error("first", at: schedule, columns: 1..<2),
            .warning("second", at: schedule, columns: 3..<4),
        ]
        list.append(.error("third", file: "snapcron.toml"))
        #expect(list.hasErrors)
        #expect(list.errorCount == 2)
        #expect(list.warningCount == 1)
        #expect(list.summary == "2 errors, 1 warning")
        let lines = list.description.split(separator: "\n")
        #expect(lines.first == "etc/schedule:12:1: error: first")
        #expect(lines.last == "2 errors, 1 warning")
        #expect(lines.count == 3 + 3 + 1 + 1)
    }

    @Test func warningsAloneAreNotErrors() {
        let list: DiagnosticList = [.warning("w", at: schedule, columns: 1..<2)]
        #expect(!list.hasErrors)
        #expect(DiagnosticList().summary == "no errors")
        #expect(list.summary == "1 warning")
    }
}

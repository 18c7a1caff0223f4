import Testing

@testable import SnapcronCore

/// The `key=value` words of `text` with their 1-based columns, as the schedule parser will hand them over.
func optionTokens(in text: String) -> [OptionToken] {
    var tokens: [OptionToken] = []
    var column = 1
    for word in text.split(separator: " ", omittingEmptySubsequences: false) {
        defer { column += word.count + 1 }
        guard let equals = word.firstIndex(of: "=") else { continue }
        tokens.append(
            OptionToken(key: String(word[..<equals]), value: String(word[word.index(after: equals)...]), column: column))
    }
    return tokens
}

func parseOptions(_ text: String, defaults: OptionDefaults = OptionDefaults()) throws(DiagnosticList) -> JobOptions {
    let line = SourceLine(file: "etc/schedule", number: 3, text: text)
    return try JobOptions.parse(optionTokens(in: text), defaults: defaults, in: line)
}

func optionErrors(_ text: String, defaults: OptionDefaults = OptionDefaults()) -> DiagnosticList {
    do {
        _ = try parseOptions(text, defaults: defaults)
        return []
    } catch {
        return error
    }
}

@Suite struct JobOptionsTests {
    @Test func defaultsWithoutOptions() throws {
        let options = try parseOptions("@daily web local:/vm/web.qcow2")
        #expect(options.timeout == .seconds(7_200))
        #expect(options.deadline == .seconds(3_600))
        #expect(options.jitter == .zero)
        #expect(options.overlap == .skip)
        #expect(options.retries == 2)
        #expect(options.paused == false)
        #expect(options.retention.keepsEverything)
        #expect(options.retention.description == "keep everything")
    }

    @Test func readsEveryOption() throws {
        let options = try parseOptions(
            "@daily web twcc:101 keep=7 keep-within=2d keep-hourly=24 keep-daily=14 keep-weekly=8 keep-monthly=12 "
                + "keep-yearly=3 timeout=30m deadline=1h30m jitter=5m overlap=allow retries=0 paused=yes")
        #expect(
            options.retention
                == RetentionPolicy(
                    keepLast: 7, keepWithin: .seconds(172_800), keepHourly: 24, keepDaily: 14, keepWeekly: 8,
                    keepMonthly: 12, keepYearly: 3))
        #expect(options.timeout == .seconds(1_800))
        #expect(options.deadline == .seconds(5_400))
        #expect(options.jitter == .seconds(300))
        #expect(options.overlap == .allow)
        #expect(options.retries == 0)
        #expect(options.paused)
        #expect(
            options.retention.description
                == "keep=7 keep-within=2d keep-hourly=24 keep-daily=14 keep-weekly=8 keep-monthly=12 keep-yearly=3")
    }

    @Test func assignmentsSetDefaultsForLaterJobs() throws {
        var defaults = OptionDefaults()
        let line = SourceLine(file: "etc/schedule", number: 2, text: "KEEP=7")
        try defaults.assign(OptionToken(key: "KEEP", value: "7", column: 1), in: line)
        try defaults.assign(OptionToken(key: "Keep_Daily", value: "14", column: 1), in: line)
        try defaults.assign(OptionToken(key: "TIMEOUT", value: "45m", column: 1), in: line)

        let inherited = try parseOptions("@daily a local:/a", defaults: defaults)
        #expect(inherited.retention == RetentionPolicy(keepLast: 7, keepDaily: 14))
        #expect(inherited.timeout == .seconds(2_700))

        // The job's own value wins; a duplicate of a default is not a duplicate option.
        let overridden = try parseOptions("@daily b local:/b keep=3 timeout=1h", defaults: defaults)
        #expect(overridden.retention == RetentionPolicy(keepLast: 3, keepDaily: 14))
        #expect(overridden.timeout == .seconds(3_600))

        // An empty assignment restores the built-in default.
        try defaults.assign(OptionToken(key: "KEEP", value: "", column: 1), in: line)
        try defaults.assign(OptionToken(key: "TIMEOUT", value: "", column: 1), in: line)
        let reset = try parseOptions("@daily c local:/c", defaults: defaults)
        #expect(reset.retention == RetentionPolicy(keepDaily: 14))
        #expect(reset.timeout == .seconds(7_200))
    }

    @Test func badAssignmentReportsAndLeavesDefaultsUnchanged() {
        var defaults = OptionDefaults()
        let line = SourceLine(file: "etc/schedule", number: 2, text: "KEPP=7")
        #expect {
            try defaults.assign(OptionToken(key: "KEPP", value: "7", column: 1), in: line)
        } throws: { error in
            let diagnostic = (error as? DiagnosticList)?.first
            return diagnostic?.message == "unknown option 'KEPP'" && diagnostic?.note == "did you mean 'KEEP'?"
                && diagnostic?.columns == 1..<5
        }
        let timeout = SourceLine(file: "etc/schedule", number: 2, text: "TIMEOUT=5x")
        #expect(throws: DiagnosticList.self) {
            try defaults.assign(OptionToken(key: "TIMEOUT", value: "5x", column: 1), in: timeout)
        }
        #expect(defaults.base == JobOptions())
    }

    @Test func unknownOptionSuggestsClosestName() {
        let errors = optionErrors("@daily web local:/a keep-dayly=3")
        #expect(errors.count == 1)
        #expect(
            errors.first?.description == """
                etc/schedule:3:21: error: unknown option 'keep-dayly'
                3 | @daily web local:/a keep-dayly=3
                  |                     ^~~~~~~~~~
                etc/schedule:3:21: note: did you mean 'keep-daily'?
                """)
    }

    @Test func unknownOptionWithoutCloseNameListsOptions() {
        let errors = optionErrors("@daily web local:/a frobnicate=1")
        #expect(errors.first?.message == "unknown option 'frobnicate'")
        #expect(errors.first?.note?.hasPrefix("options are keep, keep-within, keep-hourly") == true)
    }

    @Test func duplicateOptionIsAnError() {
        let errors = optionErrors("@daily web local:/a keep=3 keep=4")
        #expect(errors.count == 1)
        #expect(errors.first?.message == "duplicate option 'keep' (first given at column 21)")
        #expect(errors.first?.columns == 28..<32)
    }

    struct BadValue: Sendable, CustomTestStringConvertible {
        var option: String
        var message: String
        var columns: Range<Int>
        var note: String? = nil
        var testDescription: String { option }
    }

    // The job line is "@daily web local:/a " + option, so the option starts at column 21.
    @Test(arguments: [
        BadValue(
            option: "timeout=5x", message: "timeout: unknown unit 'x' in '5x' (use s, m, h, d, w)", columns: 30..<31),
        BadValue(option: "timeout=0", message: "timeout: duration must be longer than 0s", columns: 29..<30),
        BadValue(option: "keep-within=-1d", message: "keep-within: negative duration '-1d' not allowed", columns: 33..<36),
        BadValue(
            option: "keep=0", message: "keep: value 0 out of range (at least 1)", columns: 26..<27,
            note: "the newest active image is always kept; to keep every image, give no retention option"),
        BadValue(
            option: "keep-daily=x", message: "keep-daily: invalid number 'x' (expected a whole number, at least 1)",
            columns: 32..<33),
        BadValue(
            option: "keep=99999999999999999999", message: "keep: value 99999999999999999999 is too large",
            columns: 26..<46,
            note: "the newest active image is always kept; to keep every image, give no retention option"),
        BadValue(option: "retries=11", message: "retries: value 11 out of range 0-10", columns: 29..<31),
        BadValue(
            option: "overlap=skp", message: "overlap: unknown policy 'skp' (expected skip, allow)", columns: 29..<32,
            note: "did you mean 'skip'?"),
        BadValue(option: "paused=maybe", message: "paused: invalid value 'maybe' (expected yes or no)", columns: 28..<33),
        BadValue(option: "keep=", message: "keep: missing value", columns: 26..<27),
    ])
    func rejectsBadValue(_ row: BadValue) {
        let errors = optionErrors("@daily web local:/a \(row.option)")
        #expect(errors.count == 1)
        #expect(errors.first?.message == row.message)
        #expect(errors.first?.columns == row.columns)
        #expect(errors.first?.note == row.note)
    }

    @Test func reportsEveryProblemAtOnce() {
        let errors = optionErrors("@daily web local:/a kep=1 timeout=5x keep=0 overlap=allow")
        #expect(errors.map(\.message) == [
            "unknown option 'kep'",
            "timeout: unknown unit 'x' in '5x' (use s, m, h, d, w)",
            "keep: value 0 out of range (at least 1)",
        ])
        #expect(errors.summary == "3 errors")
    }
}

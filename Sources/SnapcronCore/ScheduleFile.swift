import BackendTypes
import CronExpression
import Foundation

/// An immutable, shared `JobOptions`, compared by value.
final class OptionsBox: Sendable, Hashable {
    let value: JobOptions
    init(_ value: JobOptions) { self.value = value }
    static func == (lhs: OptionsBox, rhs: OptionsBox) -> Bool { lhs === rhs || lhs.value == rhs.value }
    func hash(into hasher: inout Hasher) { hasher.combine(value) }
}

/// One job of the schedule file: when it fires, what it snapshots, and its options.
public struct Job: Sendable, Hashable {
    /// The unique name (`[a-z0-9][a-z0-9-]*`, at most 63 characters); also the seed of `H` fields.
    public var name: String
    /// The cron expression as written (a 5-field expression or a macro).
    public var expressionText: String
    public var expression: CronExpression
    /// The zone of the last `CRON_TZ=` line before the job, or the system zone.
    public var zone: CronTimeZone
    /// The backend name, the part of the target before the first `:`.
    public var backend: String
    /// The backend's ID of the thing to snapshot, the part of the target after the first `:`.
    public var target: String
    /// The job's options. Held in a shared box: they are ~200 bytes, most jobs of a large schedule have the same
    /// ones, and the daemon keeps every job twice (the scheduler and the control socket's catalog).
    public var options: JobOptions {
        get { optionsBox.value }
        set { optionsBox = OptionsBox(newValue) }
    }
    private var optionsBox: OptionsBox

    var sharedOptions: OptionsBox { optionsBox }
    mutating func share(_ box: OptionsBox) { if box.value == optionsBox.value { optionsBox = box } }
    /// Where the job is defined, for diagnostics about it.
    public var location: SourceLine

    public init(
        name: String, expressionText: String, expression: CronExpression, zone: CronTimeZone, backend: String,
        target: String, options: JobOptions = JobOptions(), location: SourceLine
    ) {
        self.name = name
        self.expressionText = expressionText
        self.expression = expression
        self.zone = zone
        self.backend = backend
        self.target = target
        self.optionsBox = OptionsBox(options)
        self.location = location
    }

    /// The target as written in the schedule file: `BACKEND:ID`.
    public var qualifiedTarget: String { "\(backend):\(target)" }
}

/// The jobs of a valid schedule file, with the warnings found while reading it.
public struct Schedule: Sendable, Hashable {
    /// The jobs in file order.
    public var jobs: [Job]
    /// Warnings (Debian's day rule, DST advisories); they do not make the file invalid.
    public var warnings: [Diagnostic]

    public init(jobs: [Job] = [], warnings: [Diagnostic] = []) {
        self.jobs = jobs
        self.warnings = warnings
    }

    /// The job called `name`, if any.
    public func job(named name: String) -> Job? {
        jobs.first { $0.name == name }
    }
}

/// Reads the crontab-style schedule file (`/etc/snapcron/schedule`); see DESIGN.md "Files and formats".
public enum ScheduleFile {
    public static let defaultPath = "/etc/snapcron/schedule"
    /// The longest job name: it goes into image names and journal fields, and 63 fits a DNS label.
    public static let maxNameLength = 63
    /// How far ahead the DST advisory looks.
    public static let advisoryHorizon: TimeInterval = 366 * 86_400

    /// Loads the schedule at `path`, reporting a missing or unreadable file as an error.
    ///
    /// `now` starts the DST advisory window; `systemZone` is the zone of jobs before any `CRON_TZ=` line.
    public static func load(
        path: String, config: SnapcronConfig, now: Date, systemZone: CronTimeZone = .current
    ) throws(DiagnosticList) -> Schedule {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw [.error("cannot read schedule: \(SnapcronConfig.fileErrorDescription(path: path))", file: path)]
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw [.error("cannot read schedule: '\(path)' is not UTF-8 text", file: path)]
        }
        return try parse(text: text, file: path, config: config, now: now, systemZone: systemZone)
    }

    /// Reads schedule `text` shown to users as `file`, reporting every error of the file at once.
    ///
    /// Throws every diagnostic (errors, warnings and notes, in line order) when there is any error; otherwise
    /// returns the jobs with the warnings. Targets are checked against `config.backends`.
    public static func parse(
        text: String, file: String, config: SnapcronConfig, now: Date, systemZone: CronTimeZone = .current
    ) throws(DiagnosticList) -> Schedule {
        var parser = ScheduleParser(file: file, config: config, now: now, systemZone: systemZone)
        var body = Substring(text)
        if body.first == "\u{FEFF}" { body = body.dropFirst() }  // a BOM left by some editors
        parser.nameLocations.reserveCapacity(text.utf8.count / 32)
        // Lines are cut at "\n" bytes (never part of a longer UTF-8 sequence), without a pass over Characters;
        // a "\r" left before it ends a CRLF line.
        var rest = body.utf8[...]
        var number = 0
        while true {
            number += 1
            let end = rest.firstIndex(of: UInt8(ascii: "\n")) ?? rest.endIndex
            var line = String(Substring(rest[..<end]))
            if line.utf8.last == UInt8(ascii: "\r") { line.removeLast() }
            parser.read(SourceLine(file: file, number: number, text: line))
            guard end < rest.endIndex else { break }
            rest = rest[rest.index(after: end)...]
        }
        if parser.diagnostics.hasErrors { throw parser.diagnostics }
        return Schedule(jobs: parser.jobs, warnings: Array(parser.diagnostics))
    }

    /// Whether `name` is a valid job name.
    public static func isValidJobName(_ name: String) -> Bool {
        invalidNameOffset(name) == nil && !name.isEmpty && name.count <= maxNameLength
    }

    /// The offset of the first character that breaks `[a-z0-9][a-z0-9-]*`, if any.
    static func invalidNameOffset(_ name: String) -> Int? {
        // Bytes, not Characters: everything before the first offender is ASCII, so the offsets agree, and
        // Character properties cost a Unicode table lookup each (measured: 5% of loading 100,000 jobs).
        for (offset, byte) in name.utf8.enumerated() {
            let allowed =
                (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || (byte == UInt8(ascii: "-") && offset > 0)
            if !allowed { return offset }
        }
        return nil
    }

    /// The zone named `identifier` when it is an IANA name (not an abbreviation such as `EST` or an offset
    /// such as `GMT+8`, which Foundation also accepts).
    public static func ianaZone(_ identifier: String) -> CronTimeZone? {
        let isIANAName =
            ["UTC", "Etc/UTC"].contains(identifier) || identifier.contains("/")
            || TimeZone.knownTimeZoneIdentifiers.contains(identifier)
        return isIANAName ? CronTimeZone(identifier: identifier) : nil
    }
}

/// A blank-separated word of a line, with its 1-based half-open columns.
struct Word {
    var text: String
    var columns: Range<Int>
}

/// The state of one pass over a schedule file: the current zone and option defaults, and what was found.
struct ScheduleParser {
    let file: String
    let config: SnapcronConfig
    let now: Date
    let systemZone: CronTimeZone
    var zone: CronTimeZone
    var defaults = OptionDefaults()
    var jobs: [Job] = []
    var diagnostics = DiagnosticList()
    /// One box per distinct set of options, shared by the jobs that have it.
    var optionBoxes: [JobOptions: OptionsBox] = [:]
    /// Where each job name was first defined, for the duplicate note.
    var nameLocations: [String: (line: SourceLine, columns: Range<Int>)] = [:]
    /// The bytes of the line being read when each of its characters is one byte.
    private var asciiLine: [UInt8]?

    /// Variables of a crontab that mean nothing to snapcron, which runs no commands.
    static let crontabVariables: Set<String> = ["MAILTO", "MAILFROM", "SHELL", "PATH", "HOME", "LOGNAME", "USER"]

    init(file: String, config: SnapcronConfig, now: Date, systemZone: CronTimeZone) {
        self.file = file
        self.config = config
        self.now = now
        self.systemZone = systemZone
        self.zone = systemZone
    }

    mutating func read(_ line: SourceLine) {
        // Most lines are ASCII: then character i is byte i, and words and texts are cut from the bytes, much
        // faster than from an array of Characters (100,000 jobs are read at start-up).
        let bytes = Array(line.text.utf8)
        asciiLine = bytes.allSatisfy { $0 < 0x80 } ? bytes : nil
        let characters = asciiLine.map { $0.map { Character(Unicode.Scalar($0)) } } ?? Array(line.text)
        let words = Self.words(in: characters, ascii: asciiLine)
        guard let first = words.first, !first.text.hasPrefix("#") else { return }
        if readAssignment(line, characters, startingAt: first.columns.lowerBound - 1) { return }
        readJob(line, characters, words)
    }

    /// The blank-separated words of a line; `ascii` is the line's bytes when each character is one byte.
    static func words(in characters: [Character], ascii: [UInt8]? = nil) -> [Word] {
        if let ascii { return words(inASCII: ascii) }
        var words: [Word] = []
        var start: Int?
        for index in 0...characters.count {
            let isBlank = index == characters.count || characters[index] == " " || characters[index] == "\t"
            if isBlank, let begin = start {
                let text =
                    if let ascii { String(decoding: ascii[begin..<index], as: UTF8.self) } else {
                        String(characters[begin..<index])
                    }
                words.append(Word(text: text, columns: (begin + 1)..<(index + 1)))
                start = nil
            } else if !isBlank, start == nil {
                start = index
            }
        }
        return words
    }

    /// ``words(in:ascii:)`` of a line whose characters are all single bytes.
    static func words(inASCII bytes: [UInt8]) -> [Word] {
        var words: [Word] = []
        var start: Int?
        for index in 0...bytes.count {
            let isBlank = index == bytes.count || bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t")
            if isBlank, let begin = start {
                words.append(Word(text: String(decoding: bytes[begin..<index], as: UTF8.self), columns: (begin + 1)..<(index + 1)))
                start = nil
            } else if !isBlank, start == nil {
                start = index
            }
        }
        return words
    }

    // MARK: Assignments

    /// Reads `KEY=value` if the line is one, returning whether it was.
    mutating func readAssignment(_ line: SourceLine, _ characters: [Character], startingAt start: Int) -> Bool {
        var index = start
        guard characters[index].isASCII, characters[index].isLetter || characters[index] == "_" else { return false }
        while index < characters.count, characters[index].isASCII,
            characters[index].isLetter || characters[index].isNumber || characters[index] == "_"
                || characters[index] == "-"
        {
            index += 1
        }
        let key = String(characters[start..<index])
        let keyColumns = (start + 1)..<(index + 1)
        var equals = index
        while equals < characters.count, characters[equals] == " " || characters[equals] == "\t" { equals += 1 }
        guard equals < characters.count, characters[equals] == "=" else { return false }

        var valueEnd = characters.count
        while valueEnd > equals + 1, characters[valueEnd - 1] == " " || characters[valueEnd - 1] == "\t" {
            valueEnd -= 1
        }
        let value = String(characters[(equals + 1)..<valueEnd])
        if equals != index || value.first == " " || value.first == "\t" {
            diagnostics.append(
                .error(
                    "blank around '=' in the assignment of '\(key)'", at: line, columns: (index + 1)..<(equals + 2),
                    note: "write assignments as KEY=value, e.g. KEEP=7"))
            return true
        }

        if key == "CRON_TZ" {
            assignZone(value, columns: (equals + 2)..<(valueEnd + 1), in: line)
        } else if OptionKey(assignmentName: key) != nil {
            do {
                try defaults.assign(OptionToken(key: key, value: value, column: start + 1), in: line)
            } catch {
                diagnostics.append(contentsOf: error)
            }
        } else {
            diagnostics.append(unknownAssignment(key, columns: keyColumns, in: line))
        }
        return true
    }

    mutating func assignZone(_ name: String, columns: Range<Int>, in line: SourceLine) {
        if name.isEmpty {
            zone = systemZone
            return
        }
        if let named = ScheduleFile.ianaZone(name) {
            zone = named
            return
        }
        let note: String
        if let suggestion = Suggestion.closest(to: name, in: TimeZone.knownTimeZoneIdentifiers) {
            note = "did you mean '\(suggestion)'?"
        } else if CronTimeZone(identifier: name) != nil {
            note = "abbreviations and offsets are ambiguous or ignore DST: use an IANA name such as America/New_York"
        } else {
            note = "use an IANA name such as Asia/Taipei or America/New_York (see timedatectl list-timezones)"
        }
        diagnostics.append(.error("unknown time zone '\(name)'", at: line, columns: columns, note: note))
    }

    func unknownAssignment(_ key: String, columns: Range<Int>, in line: SourceLine) -> Diagnostic {
        let message = "unknown assignment '\(key)'"
        if key == "TZ" {
            return .error(
                message, at: line, columns: columns, note: "the zone of the jobs after it is set with CRON_TZ=")
        }
        if Self.crontabVariables.contains(key) {
            return .error(
                message, at: line, columns: columns,
                note: "snapcron runs no commands, so crontab variables such as \(key) do not apply; remove the line")
        }
        // Suggest in the style the user wrote: `KEEP_DAILY` or `keep-daily`.
        let upper = key.contains(where: \.isUppercase)
        let options = OptionKey.allCases.map {
            upper ? $0.rawValue.uppercased().replacingOccurrences(of: "-", with: "_") : $0.rawValue
        }
        let candidates = ["CRON_TZ"] + options
        let note =
            Suggestion.closest(to: key, in: candidates).map { "did you mean '\($0)'?" }
            ?? "assignments are CRON_TZ and the options \(options.joined(separator: ", "))"
        return .error(message, at: line, columns: columns, note: note)
    }

    // MARK: Job lines

    mutating func readJob(_ line: SourceLine, _ characters: [Character], _ words: [Word]) {
        let errorsBefore = diagnostics.errorCount
        // A target is the first word with a `:` before any `=`: cron fields and names never contain one.
        let targetIndex = words.firstIndex { word in
            guard let colon = word.text.utf8.firstIndex(of: UInt8(ascii: ":")) else { return false }
            return !word.text.utf8[..<colon].contains(UInt8(ascii: "="))
        }
        let isMacro = words[0].text.hasPrefix("@")
        var expressionWords: ArraySlice<Word>
        var nameWord: Word?
        var rest: ArraySlice<Word>
        if let targetIndex {
            let before = words[..<targetIndex]
            rest = words[targetIndex...]
            if before.isEmpty {
                error("missing schedule and job name before the target", at: line, words[targetIndex].columns)
                return
            } else if (isMacro && before.count == 1)
                || (before.count == 5 && (try? CronExpression(text(of: before, in: characters), hashSeed: "-")) != nil)
            {
                error(
                    "missing job name between the schedule and the target", at: line,
                    words[targetIndex].columns.lowerBound..<words[targetIndex].columns.lowerBound + 1,
                    note: "a job line is: schedule, name, BACKEND:ID, options")
                return
            }
            expressionWords = before.dropLast()
            nameWord = before.last
        } else {
            let count = isMacro ? 1 : 5
            expressionWords = words.prefix(count)
            nameWord = words.count > count ? words[count] : nil
            rest = words.dropFirst(count + 1)
        }

        // The expression: a parse error's columns are relative to its text, which starts at `offset`.
        var expression: CronExpression?
        let expressionText = text(of: expressionWords, in: characters)
        if let firstWord = expressionWords.first {
            let offset = firstWord.columns.lowerBound - 1
            do {
                let parsed = try CronExpression.parseWithWarnings(expressionText, hashSeed: nameWord?.text)
                expression = parsed.expression
                for warning in parsed.warnings {
                    diagnostics.append(
                        .warning(warning.message, at: line, columns: Self.shift(warning.columns, by: offset)))
                }
            } catch {
                diagnostics.append(.error(error.message, at: line, columns: Self.shift(error.columns, by: offset)))
            }
        } else if let nameWord {
            error("missing schedule before job name '\(nameWord.text)'", at: line, nameWord.columns)
        }

        guard let nameWord else {
            // A line that is not even a schedule (e.g. a stray word) needs one error, not two.
            guard expression != nil else { return }
            let end = words.last!.columns.upperBound + 1
            error(
                "missing job name and target after the schedule", at: line, end..<end + 1,
                note: "a job line is: schedule, name, BACKEND:ID, options; e.g. '@daily web \(exampleTarget)'")
            return
        }
        let name = nameWord.text
        checkName(nameWord, in: line)

        // The target.
        var backend: BackendConfig?
        var targetID = ""
        if let targetIndex {
            let target = words[targetIndex]
            rest = rest.dropFirst()
            (backend, targetID) = checkTarget(target, in: line)
        } else if let found = rest.first {
            error(
                "expected a target BACKEND:ID after job name '\(name)', found '\(found.text)'", at: line,
                found.columns, note: "configured backends: \(backendList); e.g. \(exampleTarget)")
            rest = rest.dropFirst()
        } else {
            let end = nameWord.columns.upperBound + 1
            error(
                "missing target after job name '\(name)'", at: line, end..<end + 1,
                note: "give BACKEND:ID; configured backends: \(backendList); e.g. \(exampleTarget)")
        }

        // The options; their errors are reported in column order, whichever check found them.
        var tokens: [OptionToken] = []
        var optionErrors: [Diagnostic] = []
        for word in rest {
            if word.text.hasPrefix("#") {
                let end = rest.last!.columns.upperBound
                optionErrors.append(
                    .error(
                        "unexpected comment after the options", at: line, columns: word.columns.lowerBound..<end,
                        note: "a comment must be on a line of its own, starting with '#'"))
                break
            }
            guard let equals = word.text.firstIndex(of: "="), equals != word.text.startIndex else {
                optionErrors.append(
                    .error("expected an option key=value, found '\(word.text)'", at: line, columns: word.columns))
                continue
            }
            tokens.append(
                OptionToken(
                    key: String(word.text[..<equals]), value: String(word.text[word.text.index(after: equals)...]),
                    column: word.columns.lowerBound))
        }
        var options = JobOptions()
        do {
            options = try JobOptions.parse(tokens, defaults: defaults, in: line)
        } catch {
            optionErrors.append(contentsOf: error)
        }
        if let requested = options.hooks?.name {
            if requested == "none" {
                options.hooks = nil
            } else if let set = config.hooks[requested] {
                options.hooks = set
            } else {
                let token = tokens.last { $0.key == OptionKey.hooks.rawValue }
                let known = config.hooks.keys.sorted()
                let message = "unknown hook set '\(requested)'"
                let note =
                    Suggestion.closest(to: requested, in: known).map { "did you mean '\($0)'?" }
                    ?? (known.isEmpty
                        ? "the config has no [hooks.NAME] tables" : "hook sets: \(known.joined(separator: ", ")), or none")
                if let token {
                    optionErrors.append(.error("hooks: \(message)", at: line, columns: token.valueColumns, note: note))
                } else {
                    // Set by a HOOKS= line above: the job line has no column to point at.
                    optionErrors.append(.error("hooks: \(message) (set by a HOOKS= line)", at: line, columns: nameWord.columns, note: note))
                }
            }
        } else if let backend, let name = config.backendHooks[backend.name] {
            options.hooks = config.hooks[name]
        }
        diagnostics.append(
            contentsOf: optionErrors.sorted { ($0.columns?.lowerBound ?? 0) < ($1.columns?.lowerBound ?? 0) })

        guard diagnostics.errorCount == errorsBefore, let expression, let backend else { return }
        var job = Job(
            name: name, expressionText: expressionText, expression: expression, zone: zone, backend: backend.name,
            target: targetID, options: options, location: line)
        // Jobs with equal options share one box.
        if let shared = optionBoxes[options] { job.share(shared) } else { optionBoxes[options] = job.sharedOptions }
        jobs.append(job)
        let columns = expressionWords.first!.columns.lowerBound..<expressionWords.last!.columns.upperBound
        diagnostics.append(contentsOf: DSTAdvisory.warnings(for: job, now: now, columns: columns))
    }

    mutating func checkName(_ word: Word, in line: SourceLine) {
        let name = word.text
        if let offset = ScheduleFile.invalidNameOffset(name) {
            let column = word.columns.lowerBound + offset
            error(
                "invalid job name '\(name)'", at: line, column..<column + 1,
                note: "use lowercase letters, digits and '-', starting with a letter or digit")
        } else if name.utf8.count > ScheduleFile.maxNameLength {
            error(
                "job name is \(name.count) characters long (at most \(ScheduleFile.maxNameLength))", at: line,
                word.columns)
        } else if let first = nameLocations[name] {
            error("duplicate job name '\(name)'", at: line, word.columns)
            diagnostics.append(
                Diagnostic(
                    file: first.line.file, line: first.line.number, columns: first.columns, severity: .note,
                    message: "'\(name)' is first defined here", sourceLine: first.line.text))
        } else {
            nameLocations[name] = (line, word.columns)
        }
    }

    /// Checks `BACKEND:ID` against the config; returns the backend and the ID.
    mutating func checkTarget(_ word: Word, in line: SourceLine) -> (BackendConfig?, String) {
        let colon = word.text.firstIndex(of: ":")!
        let name = String(word.text[..<colon])
        let id = String(word.text[word.text.index(after: colon)...])
        let nameColumns = word.columns.lowerBound..<(word.columns.lowerBound + name.count)
        let idColumns = (nameColumns.upperBound + 1)..<word.columns.upperBound
        if name.isEmpty {
            error(
                "missing backend name before ':' in target '\(word.text)'", at: line,
                nameColumns.lowerBound..<nameColumns.lowerBound + 1,
                note: "configured backends: \(backendList)")
            return (nil, id)
        }
        guard let backend = config.backends[name] else {
            let note =
                Suggestion.closest(to: name, in: config.backends.keys).map { "did you mean '\($0)'?" }
                ?? (config.file == nil
                    ? "without a config file the only backend is the built-in 'local'"
                    : "backends are the [backends.NAME] tables of \(config.file ?? SnapcronConfig.defaultPath)")
            error("unknown backend '\(name)' (configured: \(backendList))", at: line, nameColumns, note: note)
            return (nil, id)
        }
        if id.isEmpty {
            let column = nameColumns.upperBound + 1
            error("missing ID after '\(name):' in target", at: line, column..<column + 1)
            return (nil, id)
        }
        if backend.type.descriptor.targetsAreAbsolutePaths, !id.hasPrefix("/") {
            error(
                "target of \(backend.type.name) backend '\(name)' must be an absolute path, got '\(id)'", at: line,
                idColumns, note: "e.g. \(name):\(backend.type.descriptor.exampleTarget)")
            return (nil, id)
        }
        return (backend, id)
    }

    var backendList: String {
        config.backends.isEmpty ? "none" : config.backends.keys.sorted().joined(separator: ", ")
    }

    var exampleTarget: String {
        guard let backend = config.backends.values.min(by: { $0.name < $1.name }) else {
            return "local:/var/lib/libvirt/images/web.qcow2"
        }
        return "\(backend.name):\(backend.type.descriptor.exampleTarget)"
    }

    mutating func error(_ message: String, at line: SourceLine, _ columns: Range<Int>, note: String? = nil) {
        diagnostics.append(.error(message, at: line, columns: columns, note: note))
    }

    /// The text from the first to the last word, with the blanks between them as written.
    func text(of words: ArraySlice<Word>, in characters: [Character]) -> String {
        guard let first = words.first, let last = words.last else { return "" }
        let range = (first.columns.lowerBound - 1)..<(last.columns.upperBound - 1)
        if let asciiLine { return String(decoding: asciiLine[range], as: UTF8.self) }
        return String(characters[range])
    }

    static func shift(_ columns: Range<Int>, by offset: Int) -> Range<Int> {
        (columns.lowerBound + offset)..<(columns.upperBound + offset)
    }
}

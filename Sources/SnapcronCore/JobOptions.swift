import BackendTypes
import Foundation

/// What to do when a job fires while its previous run of the same target is unfinished.
public struct OverlapPolicy: Sendable, Hashable, CustomStringConvertible {
    /// The name used in the schedule file.
    public let name: String

    private init(name: String) { self.name = name }

    /// Skip the fire and record it as skipped: never two unfinished runs of one target.
    public static let skip = OverlapPolicy(name: "skip")
    /// Start the run anyway.
    public static let allow = OverlapPolicy(name: "allow")
    /// Every policy, in the order shown to users.
    public static let all: [OverlapPolicy] = [.skip, .allow]

    /// The policy named `name` in the schedule file, if any.
    public init?(named name: String) {
        guard let policy = Self.all.first(where: { $0.name == name }) else { return nil }
        self = policy
    }

    public var description: String { name }
}

/// Which ACTIVE images of a job retention keeps; see `RetentionPlanner`.
///
/// A policy with no rule at all (`keepsEverything`) means retention never runs for the job. Rules add up:
/// an image is kept if any rule keeps it.
public struct RetentionPolicy: Sendable, Hashable, CustomStringConvertible {
    /// `keep=N`: the newest N ACTIVE images.
    public var keepLast: Int?
    /// `keep-within=DUR`: every ACTIVE image created within DUR before now.
    public var keepWithin: Duration?
    /// `keep-hourly=N` … `keep-yearly=N`: the newest image of each of the last N periods (GFS).
    public var keepHourly: Int?
    public var keepDaily: Int?
    public var keepWeekly: Int?
    public var keepMonthly: Int?
    public var keepYearly: Int?

    public init(
        keepLast: Int? = nil,
        keepWithin: Duration? = nil,
        keepHourly: Int? = nil,
        keepDaily: Int? = nil,
        keepWeekly: Int? = nil,
        keepMonthly: Int? = nil,
        keepYearly: Int? = nil
    ) {
        self.keepLast = keepLast
        self.keepWithin = keepWithin
        self.keepHourly = keepHourly
        self.keepDaily = keepDaily
        self.keepWeekly = keepWeekly
        self.keepMonthly = keepMonthly
        self.keepYearly = keepYearly
    }

    /// The policy of a job without retention options: keep everything, never prune.
    public static let keepEverything = RetentionPolicy()

    /// Whether no rule is set, so that retention must not delete anything.
    public var keepsEverything: Bool { self == .keepEverything }

    /// The GFS tiers that are set, with their counts, finest first.
    public var tiers: [(period: RetentionPeriod, count: Int)] {
        let counts: [(RetentionPeriod, Int?)] = [
            (.hourly, keepHourly), (.daily, keepDaily), (.weekly, keepWeekly),
            (.monthly, keepMonthly), (.yearly, keepYearly),
        ]
        return counts.compactMap { period, count in count.map { (period, $0) } }
    }

    /// The rules in schedule-file syntax, e.g. `keep=7 keep-daily=14`, or `keep everything`.
    public var description: String {
        var parts: [String] = []
        if let keepLast { parts.append("keep=\(keepLast)") }
        if let keepWithin { parts.append("keep-within=\(keepWithin.optionDescription)") }
        for (period, count) in tiers { parts.append("\(period.optionName)=\(count)") }
        return parts.isEmpty ? "keep everything" : parts.joined(separator: " ")
    }
}

/// The options of one schedule-file job, after defaults and assignments.
public struct JobOptions: Sendable, Hashable {
    public var retention = RetentionPolicy.keepEverything
    /// How long a run may take to reach a final state.
    public var timeout: Duration = .seconds(2 * 3600)
    /// How late a missed or delayed fire may still start.
    public var deadline: Duration = .seconds(3600)
    /// The largest random (but deterministic per job and fire) delay of a fire.
    public var jitter: Duration = .zero
    public var overlap = OverlapPolicy.skip
    /// How often a create that failed transiently is tried again.
    ///
    /// Defaults to 2: network errors, 429 and 5xx are common with cloud APIs, and the backend contract makes
    /// `create` safe to retry for one name, so two retries with back-off cost little and save most runs.
    public var retries = 2
    public var paused = false
    /// The hook commands of the job's runs (`hooks=NAME`: a `[hooks.NAME]` table of the config, or its backend's
    /// `hooks`); `hooks=none` turns the backend's off. Only the name is set while options are parsed; the schedule
    /// parser puts the config's set in.
    public var hooks: HookSet?

    public init() {}

    /// The largest `retries` accepted; with exponential back-off more would outlast most schedules.
    public static let maxRetries = 10
}

/// An option name of the schedule file.
public enum OptionKey: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case keep
    case keepWithin = "keep-within"
    case keepHourly = "keep-hourly"
    case keepDaily = "keep-daily"
    case keepWeekly = "keep-weekly"
    case keepMonthly = "keep-monthly"
    case keepYearly = "keep-yearly"
    case timeout
    case deadline
    case jitter
    case overlap
    case retries
    case paused
    case hooks

    /// The option set by an assignment line: case-insensitive, `_` for `-` (`KEEP_DAILY` is `keep-daily`).
    public init?(assignmentName name: String) {
        self.init(rawValue: name.lowercased().replacingOccurrences(of: "_", with: "-"))
    }

    public var description: String { rawValue }
}

/// One `key=value` option of a job line, with where it stands on the line.
public struct OptionToken: Sendable, Hashable {
    public var key: String
    public var value: String
    /// The columns of the whole `key=value` token, 1-based and half-open.
    public var columns: Range<Int>

    /// A token starting at `column` (1-based) and written as `key=value` without spaces.
    public init(key: String, value: String, column: Int) {
        self.key = key
        self.value = value
        self.columns = column..<(column + key.count + 1 + value.count)
    }

    public var keyColumns: Range<Int> { columns.lowerBound..<(columns.lowerBound + key.count) }
    public var valueColumns: Range<Int> { (keyColumns.upperBound + 1)..<columns.upperBound }
}

/// Option defaults set by assignment lines (`KEEP=7`), applying to the job lines after them.
///
/// A later assignment of the same option replaces the earlier one; an empty value (`KEEP=`) restores the
/// built-in default. Defaults and a job's own options add up; the job's own value wins for the same key.
public struct OptionDefaults: Sendable, Hashable {
    /// The options a job line starts from.
    public private(set) var base = JobOptions()

    public init() {}

    /// Records the assignment `token` (its key as written, e.g. `KEEP_DAILY`) from `line`.
    ///
    /// Throws the diagnostics of an unknown option or a bad value; the defaults are then unchanged.
    public mutating func assign(_ token: OptionToken, in line: SourceLine) throws(DiagnosticList) {
        guard let key = OptionKey(assignmentName: token.key) else {
            let names = OptionKey.allCases.map { $0.rawValue.uppercased().replacingOccurrences(of: "-", with: "_") }
            throw [OptionParser.unknownOption(token, in: line, candidates: names)]
        }
        if token.value.isEmpty {
            base.reset(key)
            return
        }
        if let diagnostic = OptionParser.apply(key, token, to: &base, in: line) { throw [diagnostic] }
    }
}

extension JobOptions {
    /// Reads a job line's options over `defaults`, reporting every problem at once.
    public static func parse(
        _ tokens: [OptionToken], defaults: OptionDefaults = OptionDefaults(), in line: SourceLine
    ) throws(DiagnosticList) -> JobOptions {
        var options = defaults.base
        var diagnostics = DiagnosticList()
        var seen: [OptionKey: OptionToken] = [:]
        for token in tokens {
            guard let key = OptionKey(rawValue: token.key) else {
                diagnostics.append(OptionParser.unknownOption(token, in: line, candidates: OptionKey.allCases.map(\.rawValue)))
                continue
            }
            if let first = seen[key] {
                diagnostics.append(
                    .error(
                        "duplicate option '\(key)' (first given at column \(first.columns.lowerBound))",
                        at: line, columns: token.keyColumns, note: "give each option once"))
                continue
            }
            seen[key] = token
            if let diagnostic = OptionParser.apply(key, token, to: &options, in: line) {
                diagnostics.append(diagnostic)
            }
        }
        if diagnostics.hasErrors { throw diagnostics }
        return options
    }

    /// Puts option `key` back to its built-in default.
    mutating func reset(_ key: OptionKey) {
        let builtIn = JobOptions()
        switch key {
        case .keep: retention.keepLast = nil
        case .keepWithin: retention.keepWithin = nil
        case .keepHourly: retention.keepHourly = nil
        case .keepDaily: retention.keepDaily = nil
        case .keepWeekly: retention.keepWeekly = nil
        case .keepMonthly: retention.keepMonthly = nil
        case .keepYearly: retention.keepYearly = nil
        case .timeout: timeout = builtIn.timeout
        case .deadline: deadline = builtIn.deadline
        case .jitter: jitter = builtIn.jitter
        case .overlap: overlap = builtIn.overlap
        case .retries: retries = builtIn.retries
        case .paused: paused = builtIn.paused
        case .hooks: hooks = builtIn.hooks
        }
    }
}

/// The value rules of each option, shared by job lines and assignments.
enum OptionParser {
    /// A problem with a value: message without the key, offending character offsets in the value, a note.
    struct ValueError: Error {
        var message: String
        var offsets: Range<Int>?
        var note: String?
    }

    static func unknownOption(_ token: OptionToken, in line: SourceLine, candidates: [String]) -> Diagnostic {
        let note =
            Suggestion.closest(to: token.key, in: candidates).map { "did you mean '\($0)'?" }
            ?? "options are \(candidates.joined(separator: ", "))"
        return .error("unknown option '\(token.key)'", at: line, columns: token.keyColumns, note: note)
    }

    /// Sets `key` from `token.value`, or returns the diagnostic that says why not.
    static func apply(_ key: OptionKey, _ token: OptionToken, to options: inout JobOptions, in line: SourceLine)
        -> Diagnostic?
    {
        guard !token.value.isEmpty else {
            let column = token.valueColumns.lowerBound
            return .error("\(key): missing value", at: line, columns: column..<(column + 1))
        }
        do {
            try set(key, token.value, on: &options)
            return nil
        } catch {
            let valueStart = token.valueColumns.lowerBound
            let columns =
                error.offsets.map { (valueStart + $0.lowerBound)..<(valueStart + max($0.upperBound, $0.lowerBound + 1)) }
                ?? token.valueColumns
            return .error("\(key): \(error.message)", at: line, columns: columns, note: error.note)
        }
    }

    static func set(_ key: OptionKey, _ value: String, on options: inout JobOptions) throws(ValueError) {
        switch key {
        case .keep:
            options.retention.keepLast = try count(
                value, note: "the newest active image is always kept; to keep every image, give no retention option")
        case .keepWithin: options.retention.keepWithin = try duration(value, allowZero: false)
        case .keepHourly: options.retention.keepHourly = try count(value)
        case .keepDaily: options.retention.keepDaily = try count(value)
        case .keepWeekly: options.retention.keepWeekly = try count(value)
        case .keepMonthly: options.retention.keepMonthly = try count(value)
        case .keepYearly: options.retention.keepYearly = try count(value)
        case .timeout: options.timeout = try duration(value, allowZero: false)
        case .deadline: options.deadline = try duration(value, allowZero: true)
        case .jitter: options.jitter = try duration(value, allowZero: true)
        case .overlap:
            guard let policy = OverlapPolicy(named: value) else {
                let names = OverlapPolicy.all.map(\.name)
                throw ValueError(
                    message: "unknown policy '\(value)' (expected \(names.joined(separator: ", ")))",
                    note: Suggestion.closest(to: value, in: names).map { "did you mean '\($0)'?" })
            }
            options.overlap = policy
        case .retries:
            options.retries = try integer(value, in: 0...JobOptions.maxRetries)
        case .paused:
            switch value {
            case "yes": options.paused = true
            case "no": options.paused = false
            default: throw ValueError(message: "invalid value '\(value)' (expected yes or no)")
            }
        case .hooks:
            guard let first = value.first, first.isASCII, first.isLowercase || first.isNumber,
                value.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-" || $0 == "_") })
            else {
                throw ValueError(
                    message: "invalid hook set name '\(value)'",
                    note: "a [hooks.NAME] table of the config, or none")
            }
            options.hooks = HookSet(name: value)
        }
    }

    /// A retention count: a whole number of at least 1 (0 would be a rule that keeps nothing).
    static func count(_ value: String, note: String? = nil) throws(ValueError) -> Int {
        do {
            return try integer(value, in: 1...Int.max)
        } catch {
            throw ValueError(message: error.message, offsets: error.offsets, note: error.note ?? note)
        }
    }

    static func integer(_ value: String, in range: ClosedRange<Int>) throws(ValueError) -> Int {
        let rangeText = range.upperBound == .max ? "at least \(range.lowerBound)" : "\(range.lowerBound)-\(range.upperBound)"
        guard value.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw ValueError(message: "invalid number '\(value)' (expected a whole number, \(rangeText))")
        }
        guard let number = Int(value) else { throw ValueError(message: "value \(value) is too large") }
        guard range.contains(number) else {
            let allowed = range.upperBound == .max ? "(\(rangeText))" : rangeText
            throw ValueError(message: "value \(number) out of range \(allowed)")
        }
        return number
    }

    static func duration(_ value: String, allowZero: Bool) throws(ValueError) -> Duration {
        let duration: Duration
        do {
            duration = try Duration(parsingOption: value)
        } catch {
            throw ValueError(message: error.description, offsets: error.offsets)
        }
        if !allowZero, duration == .zero { throw ValueError(message: "duration must be longer than 0s") }
        return duration
    }
}

extension JobOptions {
    /// The retention rules and every option that differs from its default, in schedule-file syntax, e.g.
    /// `keep=5 timeout=30m`.
    public var scheduleText: String {
        let builtIn = JobOptions()
        var parts = [retention.description]
        if timeout != builtIn.timeout { parts.append("timeout=\(timeout.optionDescription)") }
        if deadline != builtIn.deadline { parts.append("deadline=\(deadline.optionDescription)") }
        if jitter != builtIn.jitter { parts.append("jitter=\(jitter.optionDescription)") }
        if overlap != builtIn.overlap { parts.append("overlap=\(overlap)") }
        if retries != builtIn.retries { parts.append("retries=\(retries)") }
        if paused { parts.append("paused=yes") }
        if let hooks { parts.append("hooks=\(hooks.name)") }
        return parts.joined(separator: " ")
    }
}

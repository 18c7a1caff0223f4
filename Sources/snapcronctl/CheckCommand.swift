import ArgumentParser
import CronExpression
import Foundation
import SnapcronConfig
import SnapcronCore

/// `snapcronctl check [FILE]`: validates a schedule file against the config and shows each job. Needs no daemon.
struct CheckCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Validate a schedule file and show each job's next fire times.",
        discussion: """
            Reads the config and the schedule file only: works without a daemon. Checks each target by the rules \
            its backend applies on reload. Prints every error and warning of both files compiler-style on stderr, \
            then, for a valid schedule, each job with its zone, normalized expression, description, target and \
            next fires. Exit status 0 when valid (warnings allowed), 1 when a file has errors, 2 for a usage error.
            """
    )

    @Argument(help: "The schedule file (default: schedule_path of the config, /etc/snapcron/schedule).")
    var file: String?

    @Option(help: "The daemon config (default: \(SnapcronConfig.defaultPath) if it exists, else the built-in default).")
    var config: String?

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    @Option(help: "Compute fires and DST advisories from this instant: ISO 8601 with Z or an offset (default: now).")
    var now: String?

    /// How many fires to show per job.
    static let fireCount = 3

    func validate() throws {
        // Here rather than in run() so that the usage shown is that of `check`.
        if let now, CronFormat.parseInstant(now, in: .current) == nil {
            throw ValidationError("--now: '\(now)' is not an ISO 8601 time (e.g. 2026-03-08T01:30:00-05:00)")
        }
    }

    func run() throws {
        let start = now.flatMap { CronFormat.parseInstant($0, in: .current) } ?? Date()

        let (path, result) = load(now: start)
        let diagnostics: DiagnosticList
        let jobs: [Job]
        switch result {
        case .success(let schedule):
            diagnostics = DiagnosticList(schedule.warnings)
            jobs = schedule.jobs
        case .failure(let errors):
            diagnostics = errors
            jobs = []
        }

        for diagnostic in diagnostics { Output.printError(diagnostic.description) }
        if json {
            printJSON(diagnostics: diagnostics, jobs: jobs, start: start)
        } else {
            printText(jobs: jobs, start: start)
        }
        let summary = "\(path): \(jobs.count) job\(jobs.count == 1 ? "" : "s"), \(diagnostics.summary)"
        if diagnostics.hasErrors {
            Output.printError("\(path): \(diagnostics.summary)")
            throw ExitCodes.invalidInput
        } else if !json {
            print(summary)
        }
    }

    /// Loads the config, then the schedule, and checks its targets; returns the schedule path shown to the user and
    /// the outcome.
    private func load(now: Date) -> (String, Result<Schedule, DiagnosticList>) {
        let settings: SnapcronConfig
        do {
            // A config given on the command line must exist; the default one is optional.
            if let config {
                settings = try SnapcronConfig.load(path: config)
            } else {
                settings = try SnapcronConfig.loadIfPresent()
            }
        } catch {
            return (file ?? ScheduleFile.defaultPath, .failure(error))
        }
        let path = file ?? settings.schedulePath
        // The daemon's loader, with the targets checked by the rules its backends apply, from the config alone.
        return (path, ScheduleLoader(config: settings).load(path: path, now: now))
    }

    private func printText(jobs: [Job], start: Date) {
        for job in jobs {
            let fires = Array(job.expression.fires(after: start, in: job.zone).prefix(Self.fireCount))
            print(job.name)
            print("  expression:  \(job.expressionText)")
            print("  normalized:  \(job.expression.normalized)")
            print("  description: \(job.expression.englishDescription)")
            print("  zone:        \(job.zone.identifier)")
            print("  target:      \(job.qualifiedTarget)")
            print("  options:     \(job.options.scheduleText)")
            if fires.isEmpty {
                print("  next fires:  none within \(CronExpression.horizonYears) years")
            }
            for (index, fire) in fires.enumerated() {
                print("  \(index == 0 ? "next fires: " : "            ") \(Output.fireLine(fire, in: job.zone))")
            }
        }
    }

    private func printJSON(diagnostics: DiagnosticList, jobs: [Job], start: Date) {
        let object: [String: Any] = [
            "valid": !diagnostics.hasErrors,
            "errors": Self.jsonDiagnostics(diagnostics, severity: .error),
            "warnings": Self.jsonDiagnostics(diagnostics, severity: .warning),
            "jobs": jobs.map { job -> [String: Any] in
                let fires = Array(job.expression.fires(after: start, in: job.zone).prefix(Self.fireCount))
                return [
                    "name": job.name,
                    "zone": job.zone.identifier,
                    "expression": job.expressionText,
                    "normalized": job.expression.normalized,
                    "description": job.expression.englishDescription,
                    "backend": job.backend,
                    "target": job.target,
                    "options": Self.optionValues(job.options),
                    "next": fires.map { CronFormat.iso8601($0.date, in: job.zone) },
                    "dst": fires.map { $0.adjustment.note ?? NSNull() as Any },
                    "line": job.location.number,
                ]
            },
        ]
        Output.printJSON(object)
    }

    /// The diagnostics of one severity as `{file, line, column, message}` objects, with their `note` and the
    /// separate notes that follow them (such as where a duplicate name was first defined) under `notes`.
    static func jsonDiagnostics(_ diagnostics: DiagnosticList, severity: Diagnostic.Severity) -> [[String: Any]] {
        func object(_ diagnostic: Diagnostic) -> [String: Any] {
            var object: [String: Any] = [
                "file": diagnostic.file,
                "line": diagnostic.line.map { $0 as Any } ?? NSNull(),
                "column": diagnostic.columns.map { $0.lowerBound as Any } ?? NSNull(),
                "message": diagnostic.message,
            ]
            if let note = diagnostic.note { object["note"] = note }
            return object
        }
        var result: [[String: Any]] = []
        var attachToLast = false
        for diagnostic in diagnostics {
            if diagnostic.severity == .note {
                if attachToLast, !result.isEmpty {
                    result[result.count - 1]["notes", default: [[String: Any]]()] =
                        (result[result.count - 1]["notes"] as? [[String: Any]] ?? []) + [object(diagnostic)]
                }
                continue
            }
            attachToLast = diagnostic.severity == severity
            if attachToLast { result.append(object(diagnostic)) }
        }
        return result
    }

    /// Every option of a job with its effective value; retention counts only when set.
    static func optionValues(_ options: JobOptions) -> [String: Any] {
        let retention = options.retention
        var values: [String: Any] = [
            "timeout": options.timeout.optionDescription,
            "deadline": options.deadline.optionDescription,
            "jitter": options.jitter.optionDescription,
            "overlap": options.overlap.name,
            "retries": options.retries,
            "paused": options.paused,
        ]
        if let keep = retention.keepLast { values["keep"] = keep }
        if let within = retention.keepWithin { values["keep-within"] = within.optionDescription }
        for (period, count) in retention.tiers { values[period.optionName] = count }
        return values
    }
}

import ArgumentParser
import ControlProtocol
import CronExpression
import Foundation
import SnapcronCore

/// `snapcronctl next EXPR`: normalized form, description and the next fires of an expression. Needs no daemon.
struct NextCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "next",
        abstract: "Show the next fire times of a job, or of a cron expression with its normalized form.",
        discussion: """
            A job name (one word such as web-nightly) asks the running daemon for that job's fires. An \
            expression (quoted, with spaces, or a macro such as @daily) needs no daemon. Fires moved or \
            repeated by a daylight-saving change are marked. Exit status 1 when the expression is invalid.
            """
    )

    @Argument(help: "A job name, or a 5-field cron expression or a macro such as @daily (quote it).")
    var expression: String

    @OptionGroup var connection: ConnectionOptions

    @Option(help: "IANA time zone for the fires (default: the system zone).")
    var zone: String?

    @Option(help: "How many fires to show (1-10000).")
    var count: Int = 5

    @Option(help: "Start after this instant: ISO 8601 with Z or an offset, or a wall time in --zone (default: now).")
    var after: String?

    @Option(help: "Job name that seeds the hashed H fields.")
    var job: String?

    @Flag(help: "Print one JSON object instead of text.")
    var json = false

    func validate() throws {
        guard (1...10_000).contains(count) else { throw ValidationError("--count must be between 1 and 10000") }
    }

    /// Whether the argument names a job rather than an expression: one word that is a valid job name.
    var isJobName: Bool {
        !expression.contains(where: \.isWhitespace) && !expression.hasPrefix("@")
            && ScheduleFile.isValidJobName(expression)
    }

    func run() throws {
        if isJobName {
            try runForJob()
            return
        }
        guard let timeZone = zone.map({ CronTimeZone(identifier: $0) }) ?? CronTimeZone.current else {
            throw ValidationError("unknown time zone '\(zone ?? "")' (use an IANA name such as Asia/Taipei)")
        }
        var start = Date()
        if let after {
            guard let parsed = CronFormat.parseInstant(after, in: timeZone) else {
                throw ValidationError("--after: '\(after)' is not an ISO 8601 time (e.g. 2026-03-08T01:30:00-05:00)")
            }
            start = parsed
        }
        let parsed: (expression: CronExpression, warnings: [CronWarning])
        do {
            parsed = try CronExpression.parseWithWarnings(expression, hashSeed: job)
        } catch {
            if json {
                Output.printJSON(["error": ["message": error.message, "column": error.column] as [String: Any]])
            }
            FileHandle.standardError.write(Data((error.rendered(lineText: expression) + "\n").utf8))
            throw ExitCodes.invalidInput
        }
        let fires = Array(parsed.expression.fires(after: start, in: timeZone).prefix(count))
        if json {
            var object: [String: Any] = [
                "expression": expression,
                "normalized": parsed.expression.normalized,
                "description": parsed.expression.englishDescription,
                "zone": timeZone.identifier,
                "fires": fires.map { CronFormat.iso8601($0.date, in: timeZone) },
                "dst": fires.map { $0.adjustment.note ?? NSNull() as Any },
            ]
            if !parsed.warnings.isEmpty { object["warnings"] = parsed.warnings.map(\.message) }
            Output.printJSON(object)
            return
        }
        for warning in parsed.warnings {
            let text = DiagnosticRenderer.render(
                location: "<expression>:1:\(warning.columns.lowerBound)", severity: "warning",
                message: warning.message, line: 1, lineText: expression, columns: warning.columns)
            FileHandle.standardError.write(Data((text + "\n").utf8))
        }
        print("expression:  \(expression)")
        print("normalized:  \(parsed.expression.normalized)")
        print("description: \(parsed.expression.englishDescription)")
        print("zone:        \(timeZone.identifier)\(parsed.expression.isWildcardForDST ? " (wildcard job for DST)" : "")")
        if fires.isEmpty {
            print("fires:       none within \(CronExpression.horizonYears) years")
            return
        }
        print("next \(fires.count) fire\(fires.count == 1 ? "" : "s"):")
        for fire in fires { print("  " + Output.fireLine(fire, in: timeZone)) }
        if fires.count < count { print("  (no more fires within \(CronExpression.horizonYears) years)") }
    }

    /// Asks the daemon for the job's fires, in the job's own zone.
    private func runForJob() throws {
        if zone != nil || after != nil || job != nil {
            throw ValidationError("--zone, --after and --job apply to an expression, not to job '\(expression)'")
        }
        let (result, raw) = try connection.connect(json: json).call(
            .next, NextParams(job: expression, count: min(count, 1000)), as: NextResult.self)
        if json { return Connection.printJSON(raw) }
        let zone = CronTimeZone(identifier: result.zone) ?? .utc
        print("job:         \(expression)")
        print("expression:  \(result.expression)")
        print("normalized:  \(result.normalized)")
        print("description: \(result.description)")
        print("zone:        \(result.zone)")
        print("next \(result.fires.count) fire\(result.fires.count == 1 ? "" : "s"):")
        for fire in result.fires {
            print("  \(CronFormat.iso8601(fire, in: zone))  \(Output.weekdays[zone.localTime(of: fire).weekday])")
        }
    }
}

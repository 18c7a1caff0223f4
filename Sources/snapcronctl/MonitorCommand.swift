import ArgumentParser
import ControlClient
import ControlProtocol
import Foundation
import SnapcronCore

/// `snapcronctl monitor`: a Nagios/Icinga check on the age of each job's newest ACTIVE image.
struct MonitorCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "monitor", abstract: "Check image freshness like a Nagios/Icinga plugin (exit 0/1/2/3).",
        discussion: """
            Prints one status line and exits 0 OK, 1 WARNING, 2 CRITICAL or 3 UNKNOWN (daemon unreachable, bad \
            argument, --warn longer than --crit). A job is WARNING when its newest ACTIVE image is older than \
            --warn and CRITICAL when older than --crit; by default 1.5 and 3 times the job's period (the longest \
            gap between its next fires). A job without an ACTIVE image is CRITICAL, or WARNING if it never fired \
            yet. Paused jobs are not checked.
            """)

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Warning age, e.g. 26h (default: 1.5 x the job's period).") var warn: String?
    @Option(help: "Critical age, e.g. 50h (default: 3 x the job's period).") var crit: String?
    @Option(name: .customLong("job"), help: "Check only this job (repeatable).") var jobs: [String] = []

    /// Usage errors reach `Snapcronctl.main`, which reports them as UNKNOWN (``unknown(_:)``).
    func validate() throws {
        var ages: [String: TimeInterval] = [:]
        for (name, value) in [("--warn", warn), ("--crit", crit)] {
            guard let value else { continue }
            do {
                ages[name] = try Duration(parsingOption: value).timeInterval
            } catch {
                throw ValidationError("\(name): \(error.description)")
            }
        }
        if let warnAge = ages["--warn"], let critAge = ages["--crit"], warnAge > critAge {
            throw ValidationError("--warn \(warn!) is longer than --crit \(crit!); a job must turn WARNING first")
        }
    }

    /// Prints the UNKNOWN line, as one line, and returns exit code 3: how a monitoring plugin reports that it could
    /// not check (a bad argument included; 2 would read as CRITICAL).
    static func unknown(_ reason: String) -> ExitCode {
        let line = reason.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { !$0.isEmpty }.joined(separator: " ")
        print("SNAPCRON UNKNOWN - \(line)")
        return ExitCode(State.unknown.rawValue)
    }

    /// The monitoring-plugin states, in rising severity.
    enum State: Int32, Comparable {
        case ok = 0
        case warning = 1
        case critical = 2
        case unknown = 3
        static func < (a: State, b: State) -> Bool { a.rawValue < b.rawValue }
        var label: String { ["OK", "WARNING", "CRITICAL", "UNKNOWN"][Int(rawValue)] }
    }

    func run() throws {
        let result: FreshnessResult
        do {
            result = try ControlClient(path: connection.socketPath, timeout: 30)
                .call(.freshness, NoParams(), as: FreshnessResult.self)
        } catch {
            throw Self.unknown("\(error)")
        }
        let warnAge = warn.flatMap { try? Duration(parsingOption: $0).timeInterval }
        let critAge = crit.flatMap { try? Duration(parsingOption: $0).timeInterval }
        var entries = result.jobs
        if !jobs.isEmpty {
            let missing = jobs.filter { name in !entries.contains { $0.job == name } }
            if !missing.isEmpty {
                throw Self.unknown("no job named \(missing.map { "'\($0)'" }.joined(separator: ", "))")
            }
            entries = entries.filter { jobs.contains($0.job) }
        }
        var counts: [State: Int] = [:]
        var problems: [(State, String)] = []
        for entry in entries {
            let (state, note) = Self.evaluate(entry, now: result.now, warn: warnAge, crit: critAge)
            counts[state, default: 0] += 1
            if state != .ok { problems.append((state, "\(entry.job): \(note)")) }
        }
        let overall = problems.map(\.0).max() ?? .ok
        problems.sort { $0.0 > $1.0 }
        let summary =
            problems.isEmpty
            ? "\(entries.count) job\(entries.count == 1 ? "" : "s") fresh" : problems.map(\.1).joined(separator: "; ")
        let perfdata =
            "jobs=\(entries.count) ok=\(counts[.ok] ?? 0) warning=\(counts[.warning] ?? 0) critical=\(counts[.critical] ?? 0)"
        print("SNAPCRON \(overall.label) - \(summary) | \(perfdata)")
        if overall != .ok { throw ExitCode(overall.rawValue) }
    }

    /// The state of one job and the words for it.
    static func evaluate(
        _ entry: FreshnessResult.Entry, now: Date, warn: TimeInterval?, crit: TimeInterval?
    ) -> (State, String) {
        if entry.paused { return (.ok, "paused") }
        let period = entry.periodSeconds.map(TimeInterval.init)
        guard let warnAge = warn ?? period.map({ $0 * 1.5 }), let critAge = crit ?? period.map({ $0 * 3 }) else {
            return (.ok, "never fires again")
        }
        guard let newest = entry.newestActive else {
            return entry.lastFire == nil ? (.warning, "no image yet (never fired)") : (.critical, "no ACTIVE image")
        }
        let age = now.timeIntervalSince(newest)
        let text = "newest ACTIVE image \(Human.duration(age)) old"
        if age > critAge { return (.critical, "\(text) (crit \(Human.duration(critAge)))") }
        if age > warnAge { return (.warning, "\(text) (warn \(Human.duration(warnAge)))") }
        return (.ok, text)
    }
}

import Foundation

/// Reads a schedule, parses it against the config and checks every job's target: the one loader of `snapcrond`'s
/// start, of every reload (SIGHUP, `snapcronctl reload`, `edit`), of the control socket's `check` and of
/// `snapcronctl check`, so that all of them report the same diagnostics.
public struct ScheduleLoader: Sendable {
    public let config: SnapcronConfig
    /// Each backend's target check by name: the live backends' `validate(target:)` in the daemon; by default the
    /// rules of their types from the config alone (``SnapcronConfig/targetValidators``), as in `snapcronctl check`.
    public let validators: [String: TargetValidator]

    public init(config: SnapcronConfig, validators: [String: TargetValidator]? = nil) {
        self.config = config
        self.validators = validators ?? config.targetValidators
    }

    /// Reads the schedule file at `path` and checks it; a missing, unreadable or non-UTF-8 file is one error.
    ///
    /// `now` starts the DST advisory window. Returns the schedule with its warnings, or every error at once (with
    /// the warnings).
    public func load(path: String, now: Date) -> Result<Schedule, DiagnosticList> {
        let schedule: Schedule
        do {
            schedule = try ScheduleFile.load(path: path, config: config, now: now)
        } catch {
            return .failure(error)
        }
        return schedule.checkingTargets(with: validators)
    }

    /// Checks schedule `text` shown to users as `file`, as ``load(path:now:)`` checks a file.
    public func check(text: String, file: String, now: Date) -> Result<Schedule, DiagnosticList> {
        let schedule: Schedule
        do {
            schedule = try ScheduleFile.parse(text: text, file: file, config: config, now: now)
        } catch {
            return .failure(error)
        }
        return schedule.checkingTargets(with: validators)
    }
}

import BackendTypes

/// Checks the targets of one backend: a live backend's `validate(target:)` in the daemon, the ``TargetRule`` of its
/// type in `snapcronctl check`. Throws what is wrong, worded for the operator.
public typealias TargetValidator = @Sendable (_ target: String) throws -> Void

extension SnapcronConfig {
    /// Each configured backend's target check by name, from the config alone: the rule its type's descriptor makes
    /// from its settings. The backends the daemon builds from the same settings apply the same rules.
    public var targetValidators: [String: TargetValidator] {
        backends.mapValues { backend in
            let (rule, name) = (backend.targetRule(stateDirectory: stateDirectory), backend.name)
            return { target in try rule.validate(target, backend: name) }
        }
    }
}

extension Schedule {
    /// Checks each job's target with the validator of its backend, as `reload` and `snapcronctl check` both do.
    ///
    /// Returns the schedule when every target passes; otherwise its warnings and one error per refused target,
    /// pointing at the target like a compiler (`schedule:3:18: error: web: local validate failed for ...`).
    public func checkingTargets(with validators: [String: TargetValidator]) -> Result<Schedule, DiagnosticList> {
        var problems = DiagnosticList()
        for job in jobs {
            // The caret's columns only for a refused target: a string search per job costs start-up time.
            guard let validate = validators[job.backend] else {
                problems.append(
                    .error(
                        "backend '\(job.backend)' of job '\(job.name)' is not available in this build",
                        at: job.location, columns: Self.targetColumns(of: job)))
                continue
            }
            do {
                try validate(job.target)
            } catch {
                problems.append(
                    .error("\(job.name): \(error)", at: job.location, columns: Self.targetColumns(of: job)))
            }
        }
        if problems.hasErrors { return .failure(DiagnosticList(warnings + problems)) }
        return .success(self)
    }

    /// The columns of the job's `BACKEND:ID` in its line, for a caret under it.
    static func targetColumns(of job: Job) -> Range<Int> {
        let text = job.location.text
        guard let range = text.range(of: job.qualifiedTarget) else { return 1..<2 }
        let start = text.distance(from: text.startIndex, to: range.lowerBound) + 1
        return start..<(start + job.qualifiedTarget.count)
    }
}

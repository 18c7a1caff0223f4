public import SnapshotBackend

/// The syntax one backend type accepts for a target: a pure check, no I/O.
///
/// Each backend type's descriptor makes the rule from its settings
/// (``BackendDescriptor/targetRule(for:stateDirectory:)``). The backend's `validate(target:)` applies it, and
/// `snapcronctl check` applies the same rule from the config alone, so a schedule that passes `check` passes `reload`
/// without linking the backends (TWCC brings the network stack) or reading their secrets.
public struct TargetRule: Sendable {
    /// What is wrong with a target, lowercase without a final period; nil when it is fine.
    private let problemFinder: @Sendable (String) -> String?

    public init(problem: @escaping @Sendable (String) -> String?) {
        self.problemFinder = problem
    }

    /// What is wrong with `target`, e.g. `target must be an absolute path`; nil when the rule accepts it.
    public func problem(with target: String) -> String? {
        problemFinder(target)
    }

    /// Throws a permanent `validate` error of the backend named `backend` when the rule refuses `target`.
    public func validate(_ target: String, backend: String) throws(SnapshotBackendError) {
        if let problem = problem(with: target) {
            throw .permanent(backend: backend, .validate, target: target, problem)
        }
    }
}

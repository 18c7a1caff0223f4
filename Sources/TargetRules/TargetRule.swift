public import SnapshotBackend

/// The syntax one backend type accepts for a target: a pure check, no I/O.
///
/// Each backend's `validate(target:)` applies its type's rule, and `snapcronctl check` applies the same rule from
/// the config alone, so a schedule that passes `check` passes `reload` without linking the backends (TWCC brings the
/// network stack) or reading their secrets.
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

extension TargetRule {
    /// `local`: an absolute path without `.` or `..` components that is neither inside the image store nor
    /// contains it.
    public static func local(imagesDirectory: String) -> TargetRule {
        var store = imagesDirectory
        while store.count > 1 && store.hasSuffix("/") { store.removeLast() }
        return TargetRule { [store] target in
            guard !target.isEmpty else { return "target is empty; expected an absolute path" }
            guard target.hasPrefix("/") else { return "target must be an absolute path" }
            guard !target.utf8.contains(0), !target.utf8.contains(UInt8(ascii: "\n")) else {
                return "target contains a NUL or newline character"
            }
            let components = target.split(separator: "/", omittingEmptySubsequences: true)
            if components.contains("..") || components.contains(".") {
                return "target must not contain '.' or '..' components"
            }
            let path = "/" + components.joined(separator: "/")
            if path == store || path.hasPrefix(store + "/") { return "target lies inside the image store \(store)" }
            if path == "/" || store.hasPrefix(path + "/") { return "target contains the image store \(store)" }
            return nil
        }
    }

    /// `exec`: a non-empty target without control characters that does not start with `-` (commands get it as an
    /// argument) and, when `pattern` is set, matches that regular expression as a whole.
    public static func exec(pattern: String?) -> TargetRule {
        TargetRule { target in
            guard !target.isEmpty else { return "target is empty" }
            guard !target.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
                return "target contains a control character"
            }
            guard !target.hasPrefix("-") else { return "target must not start with '-'" }
            // The config reader and the backend refuse a pattern that does not compile.
            if let pattern, let regex = try? Regex(pattern), (try? regex.wholeMatch(in: target)) == nil {
                return "target does not match target_pattern \(pattern)"
            }
            return nil
        }
    }

    /// `twcc`: a VCS site id (a positive integer) or site name of at most 128 ASCII letters, digits, `-`, `_`, `.`.
    public static let twcc = TargetRule { target in
        guard !target.isEmpty else { return "empty target (expected a VCS site id or name)" }
        guard target.count <= 128,
            target.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
        else {
            return "'\(target)' is not a VCS site id or name (letters, digits, '-', '_', '.')"
        }
        if target.allSatisfy(\.isNumber), Int(target).map({ $0 <= 0 }) ?? true {
            return "'\(target)' is not a VCS site id"
        }
        return nil
    }
}

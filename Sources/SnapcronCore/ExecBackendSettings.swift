/// The settings of an `exec` backend (`[backends.NAME] type = "exec"`), checked when the config is read.
///
/// The backend itself (target `ExecBackend`) gets these through the daemon's backend factory; the contract of the
/// commands is in `docs/backends-exec.md`.
public struct ExecBackendSettings: Sendable, Hashable {
    /// The create argv template, e.g. `["qemu-img", "snapshot", "-c", "{name}", "{target}"]`.
    public var create: [String]
    /// The status argv template (`{image}`), if any.
    public var status: [String]?
    /// The list argv template (`{target}`), if any.
    public var list: [String]?
    /// The delete argv template (`{image}`), if any.
    public var delete: [String]?
    /// The image id when create prints none (`image_id`, default `{name}`).
    public var imageID: String
    /// The time one command may run (`timeout`, default 10m).
    public var timeout: Duration
    /// Exit statuses that mean "try again later" (`transient_exit_codes`, default `[75]`).
    public var transientExitCodes: [Int]
    /// Variables added to the commands' minimal environment (`environment`).
    public var environment: [String: String]
    /// A regular expression every target must match as a whole (`target_pattern`).
    public var targetPattern: String?

    public static let defaultTimeout: Duration = .seconds(600)
    public static let defaultTransientExitCodes = [75]

    public init(
        create: [String], status: [String]? = nil, list: [String]? = nil, delete: [String]? = nil,
        imageID: String = "{name}", timeout: Duration = defaultTimeout,
        transientExitCodes: [Int] = defaultTransientExitCodes, environment: [String: String] = [:],
        targetPattern: String? = nil
    ) {
        self.create = create
        self.status = status
        self.list = list
        self.delete = delete
        self.imageID = imageID
        self.timeout = timeout
        self.transientExitCodes = transientExitCodes
        self.environment = environment
        self.targetPattern = targetPattern
    }

    /// The placeholders each template key may use.
    static let placeholders: [String: [String]] = [
        "create": ["target", "name", "job", "description"],
        "status": ["image"],
        "list": ["target"],
        "delete": ["image"],
        "image_id": ["target", "name", "job"],
    ]
}

extension ConfigReader {
    static let execKeys = [
        "create", "status", "list", "delete", "image_id", "timeout", "transient_exit_codes", "environment",
        "target_pattern", "requests_per_second", "api_key_credential", "api_key_file",
    ]

    /// Reads the exec keys of `table`, reporting every problem; `nil` when the settings cannot work.
    mutating func readExecSettings(_ table: [String: ConfigValue], at path: String) -> ExecBackendSettings? {
        var valid = true
        func argv(_ key: String) -> [String]? {
            guard let value = table[key] else { return nil }
            guard let strings = value.strings, !strings.isEmpty, !strings[0].isEmpty else {
                error("\(path).\(key)", "expected a non-empty array of strings (an argv), got \(value)")
                valid = false
                return nil
            }
            for argument in strings {
                if let problem = Self.placeholderProblem(in: argument, allowed: ExecBackendSettings.placeholders[key]!)
                {
                    error("\(path).\(key)", problem)
                    valid = false
                }
            }
            if strings[0].contains("{") {
                error("\(path).\(key)", "the command itself (\(strings[0])) must not contain a placeholder")
                valid = false
            }
            return strings
        }
        let create = argv("create")
        if table["create"] == nil {
            error(path, "missing key 'create' (the argv that makes an image)")
            valid = false
        }
        var settings = ExecBackendSettings(create: create ?? [])
        settings.status = argv("status")
        settings.list = argv("list")
        settings.delete = argv("delete")

        if let value = table["image_id"] {
            if let template = value.string, !template.isEmpty {
                if let problem = Self.placeholderProblem(
                    in: template, allowed: ExecBackendSettings.placeholders["image_id"]!)
                {
                    error("\(path).image_id", problem)
                    valid = false
                }
                settings.imageID = template
            } else {
                error("\(path).image_id", "expected a non-empty string such as \"{target}@{name}\", got \(value)")
                valid = false
            }
        }
        if let value = table["timeout"] {
            if let text = value.string, let timeout = try? Duration(parsingOption: text), timeout > .zero {
                settings.timeout = timeout
            } else {
                error("\(path).timeout", "expected a duration greater than 0 such as \"10m\", got \(value)")
                valid = false
            }
        }
        if let value = table["transient_exit_codes"] {
            let codes = value.array?.compactMap(\.integer) ?? []
            if value.array == nil || codes.count != value.array?.count
                || codes.contains(where: { !(1...255).contains($0) })
            {
                error("\(path).transient_exit_codes", "expected an array of exit statuses 1-255, got \(value)")
                valid = false
            } else {
                settings.transientExitCodes = codes
            }
        }
        if let value = table["environment"] {
            if let variables = value.table {
                for (name, variable) in variables.sorted(by: { $0.key < $1.key }) {
                    guard let text = variable.string else {
                        error("\(path).environment.\(name)", "expected a string, got \(variable.typeName)")
                        valid = false
                        continue
                    }
                    guard Self.isEnvironmentName(name) else {
                        error("\(path).environment", "invalid variable name '\(name)' (use A-Z, a-z, 0-9 and '_')")
                        valid = false
                        continue
                    }
                    settings.environment[name] = text
                }
            } else {
                error("\(path).environment", "expected a table of strings, got \(value.typeName)")
                valid = false
            }
        }
        if let pattern = nonEmptyString(table, "target_pattern", at: path) {
            if (try? Regex(pattern)) == nil {
                error("\(path).target_pattern", "invalid regular expression '\(pattern)'")
                valid = false
            }
            settings.targetPattern = pattern
        }
        return valid ? settings : nil
    }

    /// Why `text` is not a valid template with `allowed` placeholders, or `nil` when it is.
    static func placeholderProblem(in text: String, allowed: [String]) -> String? {
        var rest = Substring(text)
        while let brace = rest.firstIndex(where: { $0 == "{" || $0 == "}" }) {
            let after = rest.index(after: brace)
            if after < rest.endIndex, rest[after] == rest[brace] {
                rest = rest[rest.index(after: after)...]
                continue
            }
            guard rest[brace] == "{", let close = rest[after...].firstIndex(of: "}") else {
                return "unbalanced brace in '\(text)' (write '{{' or '}}' for a literal brace)"
            }
            let name = String(rest[after..<close])
            if !allowed.contains(name) {
                let known = ["target", "name", "image", "job", "description"].contains(name)
                let list = allowed.map { "{\($0)}" }.joined(separator: ", ")
                return known
                    ? "placeholder {\(name)} is not available here (available: \(list))"
                    : "unknown placeholder {\(name)} in '\(text)' (available: \(list))"
            }
            rest = rest[rest.index(after: close)...]
        }
        return nil
    }

    static func isEnvironmentName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, !("0"..."9").contains(first) else { return false }
        return name.unicodeScalars.allSatisfy {
            ("A"..."Z").contains($0) || ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_"
        }
    }
}

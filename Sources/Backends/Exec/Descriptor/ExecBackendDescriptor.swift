public import BackendTypes

/// The `exec` backend type: argv templates (never a shell) with a JSON-on-stdout contract. Its backend,
/// `ExecBackend`, builds from these settings (`ExecBackend+Factory.swift`).
public enum ExecBackendDescriptor: BackendDescriptor {
    public static let name = "exec"
    public static let settingKeys = [
        "create", "status", "list", "delete", "image_id", "timeout", "transient_exit_codes", "environment",
        "target_pattern", "requests_per_second", "api_key_credential", "api_key_file",
    ]
    public static let exampleTarget = "tank/vm/web"

    public static func readSettings(_ reader: inout SettingsReader, stateDirectory: String) -> (any BackendSettings)? {
        let settings = readExecSettings(&reader)
        _ = reader.positiveNumber("requests_per_second")
        reader.secret(required: false)
        return settings
    }

    public static func targetRule(for backend: BackendConfig, stateDirectory: String) -> TargetRule {
        .exec(pattern: backend.exec?.targetPattern)
    }
}

/// The settings of an `exec` backend (`[backends.NAME] type = "exec"`), checked when the config is read.
///
/// The backend itself (target `ExecBackend`) gets these through its factory; the contract of the commands is in
/// `docs/backends-exec.md`.
public struct ExecBackendSettings: BackendSettings {
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

extension BackendType {
    /// Runs argv templates (never a shell) with a JSON-on-stdout contract.
    public static let exec = BackendType(ExecBackendDescriptor.self)
}

extension BackendConfig {
    /// The settings of an `exec` backend; nil for other types (or when they could not be read).
    public var exec: ExecBackendSettings? {
        get { typedSettings as? ExecBackendSettings }
        set { typedSettings = newValue }
    }
}

extension ExecBackendDescriptor {
    /// Reads the exec keys of the reader's table, reporting every problem; `nil` when the settings cannot work.
    static func readExecSettings(_ reader: inout SettingsReader) -> ExecBackendSettings? {
        let table = reader.table
        var valid = true
        func argv(_ key: String) -> [String]? {
            guard let value = table[key] else { return nil }
            guard let strings = value.strings, !strings.isEmpty, !strings[0].isEmpty else {
                reader.error(key, "expected a non-empty array of strings (an argv), got \(value)")
                valid = false
                return nil
            }
            for argument in strings {
                if let problem = Self.placeholderProblem(in: argument, allowed: ExecBackendSettings.placeholders[key]!)
                {
                    reader.error(key, problem)
                    valid = false
                }
            }
            if strings[0].contains("{") {
                reader.error(key, "the command itself (\(strings[0])) must not contain a placeholder")
                valid = false
            }
            return strings
        }
        let create = argv("create")
        if table["create"] == nil {
            reader.error(nil, "missing key 'create' (the argv that makes an image)")
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
                    reader.error("image_id", problem)
                    valid = false
                }
                settings.imageID = template
            } else {
                reader.error("image_id", "expected a non-empty string such as \"{target}@{name}\", got \(value)")
                valid = false
            }
        }
        if let value = table["timeout"] {
            if let text = value.string, let timeout = try? Duration(parsingOption: text), timeout > .zero {
                settings.timeout = timeout
            } else {
                reader.error("timeout", "expected a duration greater than 0 such as \"10m\", got \(value)")
                valid = false
            }
        }
        if let value = table["transient_exit_codes"] {
            let codes = value.array?.compactMap(\.integer) ?? []
            if value.array == nil || codes.count != value.array?.count
                || codes.contains(where: { !(1...255).contains($0) })
            {
                reader.error("transient_exit_codes", "expected an array of exit statuses 1-255, got \(value)")
                valid = false
            } else {
                settings.transientExitCodes = codes
            }
        }
        if let value = table["environment"] {
            if let variables = value.table {
                for (name, variable) in variables.sorted(by: { $0.key < $1.key }) {
                    guard let text = variable.string else {
                        reader.error("environment.\(name)", "expected a string, got \(variable.typeName)")
                        valid = false
                        continue
                    }
                    guard Self.isEnvironmentName(name) else {
                        reader.error("environment", "invalid variable name '\(name)' (use A-Z, a-z, 0-9 and '_')")
                        valid = false
                        continue
                    }
                    settings.environment[name] = text
                }
            } else {
                reader.error("environment", "expected a table of strings, got \(value.typeName)")
                valid = false
            }
        }
        if let pattern = reader.nonEmptyString("target_pattern") {
            if (try? Regex(pattern)) == nil {
                reader.error("target_pattern", "invalid regular expression '\(pattern)'")
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

extension TargetRule {
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
}

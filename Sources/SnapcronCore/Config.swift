import Foundation
import TOMLKit

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A TOML value of a backend setting, kept typed so that each backend reads its own keys.
public enum ConfigValue: Sendable, Hashable, CustomStringConvertible {
    case string(String)
    case integer(Int)
    case float(Double)
    case bool(Bool)
    case array([ConfigValue])
    case table([String: ConfigValue])
    /// A TOML date, time or date-time, as written.
    case dateTime(String)

    public var string: String? { if case .string(let value) = self { value } else { nil } }
    public var integer: Int? { if case .integer(let value) = self { value } else { nil } }
    public var bool: Bool? { if case .bool(let value) = self { value } else { nil } }
    public var array: [ConfigValue]? { if case .array(let value) = self { value } else { nil } }
    public var table: [String: ConfigValue]? { if case .table(let value) = self { value } else { nil } }

    /// An integer or a float as a `Double`.
    public var number: Double? {
        switch self {
        case .integer(let value): Double(value)
        case .float(let value): value
        default: nil
        }
    }

    /// An array of strings (e.g. an argv template), or `nil` if anything else.
    public var strings: [String]? {
        guard let array else { return nil }
        let strings = array.compactMap(\.string)
        return strings.count == array.count ? strings : nil
    }

    /// The TOML type name used in messages.
    public var typeName: String {
        switch self {
        case .string: "string"
        case .integer: "integer"
        case .float: "float"
        case .bool: "boolean"
        case .array: "array"
        case .table: "table"
        case .dateTime: "date-time"
        }
    }

    public var description: String {
        switch self {
        case .string(let value): "\"\(value)\""
        case .integer(let value): String(value)
        case .float(let value): String(value)
        case .bool(let value): String(value)
        case .array(let values): "[\(values.map(\.description).joined(separator: ", "))]"
        case .table(let table):
            "{ \(table.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value)" }.joined(separator: ", ")) }"
        case .dateTime(let value): value
        }
    }

    init(_ toml: any TOMLValueConvertible) {
        switch toml.type {
        case .string: self = .string(toml.string ?? "")
        case .int: self = .integer(toml.int ?? 0)
        case .double: self = .float(toml.double ?? 0)
        case .bool: self = .bool(toml.bool ?? false)
        case .array: self = .array(toml.array.map { $0.map { ConfigValue($0) } } ?? [])
        case .table:
            var table: [String: ConfigValue] = [:]
            for (key, value) in toml.table ?? TOMLTable() { table[key] = ConfigValue(value) }
            self = .table(table)
        case .date, .time, .dateTime: self = .dateTime(toml.debugDescription)
        }
    }
}

/// The kind of a backend, from `type = "..."` in `[backends.NAME]`.
public struct BackendType: Sendable, Hashable, CustomStringConvertible {
    public let name: String

    private init(name: String) { self.name = name }

    /// Copies files or directories into the image store under the state dir.
    public static let local = BackendType(name: "local")
    /// Runs argv templates (never a shell) with a JSON-on-stdout contract.
    public static let exec = BackendType(name: "exec")
    /// The TWCC VCS REST API.
    public static let twcc = BackendType(name: "twcc")
    public static let all: [BackendType] = [.local, .exec, .twcc]

    public init?(named name: String) {
        guard let type = Self.all.first(where: { $0.name == name }) else { return nil }
        self = type
    }

    public var description: String { name }
}

/// The settings of a `local` backend.
public struct LocalBackendSettings: Sendable, Hashable {
    /// Where images are stored; defaults to `<state_dir>/images`.
    public var imagesDirectory: String
    /// Clone with a reflink where the filesystem can; false copies the data so images share no extents with
    /// the disk.
    public var reflink: Bool

    public init(imagesDirectory: String, reflink: Bool = true) {
        self.imagesDirectory = imagesDirectory
        self.reflink = reflink
    }
}

/// One `[backends.NAME]` table, checked against its type's keys.
public struct BackendConfig: Sendable, Hashable {
    /// The name targets use: `NAME:ID`.
    public var name: String
    public var type: BackendType
    /// At most this many images created and not yet final at once on this backend (a provider's quota), if set.
    public var maxConcurrent: Int?
    /// At most this many create calls at once on this backend, if set (else the daemon's `max_concurrent_creates`).
    public var maxConcurrentCreates: Int?
    /// The typed settings of a `local` backend; `nil` for other types.
    public var local: LocalBackendSettings?
    /// The typed settings of an `exec` backend; `nil` for other types.
    public var exec: ExecBackendSettings?
    /// Every key of the table except `type`, typed as written, for the backend to read
    /// (e.g. `requests_per_second`, `api_key_credential`, `api_key_file`, `create`).
    public var settings: [String: ConfigValue]

    public init(
        name: String, type: BackendType, maxConcurrent: Int? = nil, local: LocalBackendSettings? = nil,
        settings: [String: ConfigValue] = [:]
    ) {
        self.name = name
        self.type = type
        self.maxConcurrent = maxConcurrent
        self.local = local
        self.settings = settings
    }
}

/// The daemon's configuration, from `snapcron.toml` or the embedded default.
public struct SnapcronConfig: Sendable, Hashable {
    public static let defaultPath = "/etc/snapcron/snapcron.toml"
    public static let defaultStateDirectory = "/var/lib/snapcron"

    /// The file the configuration came from; `nil` for the embedded default.
    public var file: String?
    public var stateDirectory: String
    /// The control socket (`[daemon] socket_path`); see ``controlSocketPath(override:environment:)`` for the
    /// path actually used.
    public var socketPath = SnapcronConfig.defaultSocketPath
    /// Whether the config file names `socket_path` (then it wins over `$RUNTIME_DIRECTORY`).
    public var socketPathIsExplicit = false
    public static let defaultSocketPath = "/run/snapcron/control.sock"
    /// The group that may use changing control methods and owns the socket.
    public var socketGroup = "snapcron"
    /// At most this many create calls at once on each backend (a backend's own `max_concurrent_creates` wins).
    public var maxConcurrentCreates = 4
    /// How long finished runs and deleted images stay in the history.
    public var historyKeep: Duration = .seconds(400 * 86_400)
    public var schedulePath = "/etc/snapcron/schedule"
    /// The backends by name.
    public var backends: [String: BackendConfig]

    /// The embedded default: no config file, one built-in `local` backend storing images under `stateDir`.
    public static func `default`(stateDir: String = defaultStateDirectory) -> SnapcronConfig {
        SnapcronConfig(
            file: nil, stateDirectory: stateDir,
            backends: ["local": builtInLocalBackend(stateDirectory: stateDir)])
    }

    static func builtInLocalBackend(stateDirectory: String) -> BackendConfig {
        BackendConfig(
            name: "local", type: .local,
            local: LocalBackendSettings(imagesDirectory: joinPath(stateDirectory, "images")))
    }

    /// The control socket that snapcrond listens on and snapcronctl connects to, the same on both sides: `--socket`,
    /// else `socket_path` from the config file, else `$RUNTIME_DIRECTORY/control.sock` (under systemd), else the
    /// default. (A shell has no `$RUNTIME_DIRECTORY`; the daemon's unit does: a config path must win over it, or
    /// the two would disagree.)
    public func controlSocketPath(override: String?, environment: [String: String]) -> String {
        if let override { return override }
        if socketPathIsExplicit { return socketPath }
        if let runtime = environment["RUNTIME_DIRECTORY"], !runtime.isEmpty {
            // systemd may list several directories, separated by colons: the first is ours.
            return (runtime.split(separator: ":").first.map(String.init) ?? runtime) + "/control.sock"
        }
        return socketPath
    }

    /// Loads `path`, reporting a missing file as an error.
    public static func load(path: String) throws(DiagnosticList) -> SnapcronConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw [.error("cannot read config: \(fileErrorDescription(path: path))", file: path)]
        }
        return try parse(text, file: path)
    }

    /// Loads `path`, or returns the embedded default when there is no such file.
    public static func loadIfPresent(path: String = defaultPath) throws(DiagnosticList) -> SnapcronConfig {
        guard FileManager.default.fileExists(atPath: path) else { return .default() }
        return try load(path: path)
    }

    /// Reads the TOML text of a config file named `file`, reporting every problem at once.
    ///
    /// A file without any `[backends.*]` table gets the built-in `local` backend; a file with backends has
    /// exactly those. Paths must be absolute. An `api_key_file` is checked on disk here: it must exist and
    /// must not be world-readable.
    public static func parse(_ text: String, file: String) throws(DiagnosticList) -> SnapcronConfig {
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw [syntaxDiagnostic(error, text: text, file: file)]
        } catch {
            throw [.error("cannot parse config: \(error)", file: file)]
        }
        var reader = ConfigReader(file: file)
        let config = reader.read(ConfigValue(root).table ?? [:])
        if reader.diagnostics.hasErrors { throw reader.diagnostics }
        return config
    }

    static func syntaxDiagnostic(_ error: TOMLParseError, text: String, file: String) -> Diagnostic {
        let begin = error.source.begin
        let end = error.source.end
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let sourceLine = begin.line >= 1 && begin.line <= lines.count ? String(lines[begin.line - 1]) : nil
        let endColumn = end.line == begin.line && end.column > begin.column ? end.column : begin.column + 1
        var message = error.description.trimmingCharacters(in: .whitespacesAndNewlines)
        if message.hasSuffix(".") { message.removeLast() }
        if let first = message.first { message = first.lowercased() + message.dropFirst() }
        // toml++ says "Error while parsing value: …"; after "error:" lead with the reason instead.
        if message.hasPrefix("error while "), let colon = message.firstIndex(of: ":") {
            let context = message[message.index(message.startIndex, offsetBy: 6)..<colon]
            let reason = message[message.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if !reason.isEmpty { message = "\(reason) (\(context))" }
        }
        return Diagnostic(
            file: file, line: max(begin.line, 1), columns: max(begin.column, 1)..<max(endColumn, 2),
            severity: .error, message: message, sourceLine: sourceLine?.trimmingCharacters(in: ["\r"]))
    }
}

/// Checks the parsed TOML tree key by key and collects diagnostics with key paths.
struct ConfigReader {
    let file: String
    var diagnostics = DiagnosticList()

    static let daemonKeys = [
        "state_dir", "socket_path", "socket_group", "max_concurrent_creates", "schedule_path", "history_keep",
    ]
    static let commonBackendKeys = ["type", "max_concurrent", "max_concurrent_creates"]
    static let backendKeys: [String: [String]] = [
        "local": ["images_dir", "reflink"],
        "exec": execKeys,
        "twcc": [
            "base_url", "platform", "project_id", "requests_per_second", "max_requests_in_flight",
            "request_timeout_seconds", "api_key_credential", "api_key_file",
        ],
    ]

    mutating func error(_ path: String, _ message: String, note: String? = nil) {
        diagnostics.append(.error("\(path): \(message)", file: file, note: note))
    }

    /// Reports keys of `table` not in `known`, with a suggestion.
    mutating func rejectUnknownKeys(in table: [String: ConfigValue], at path: String, known: [String]) {
        for key in table.keys.sorted() where !known.contains(key) {
            let keyPath = path.isEmpty ? key : "\(path).\(key)"
            if key == "api_key" {
                error(
                    keyPath, "secrets are never inline",
                    note: "use api_key_credential (systemd LoadCredential=) or api_key_file (not world-readable)")
                continue
            }
            let note =
                Suggestion.closest(to: key, in: known).map { "did you mean '\($0)'?" }
                ?? "known keys are \(known.joined(separator: ", "))"
            let message = "unknown key '\(key)'"
            if path.isEmpty {
                diagnostics.append(.error(message, file: file, note: note))
            } else {
                error(path, message, note: note)
            }
        }
    }

    mutating func read(_ root: [String: ConfigValue]) -> SnapcronConfig {
        rejectUnknownKeys(in: root, at: "", known: ["daemon", "backends"])
        var config = SnapcronConfig.default()
        config.file = file

        if let value = root["daemon"] {
            if let daemon = value.table {
                rejectUnknownKeys(in: daemon, at: "daemon", known: Self.daemonKeys)
                if let path = absolutePath(daemon, "state_dir", at: "daemon") { config.stateDirectory = path }
                if let path = absolutePath(daemon, "socket_path", at: "daemon") {
                    config.socketPath = path
                    config.socketPathIsExplicit = true
                }
                if let path = absolutePath(daemon, "schedule_path", at: "daemon") { config.schedulePath = path }
                if let group = nonEmptyString(daemon, "socket_group", at: "daemon") { config.socketGroup = group }
                if let limit = positiveInteger(daemon, "max_concurrent_creates", at: "daemon") {
                    config.maxConcurrentCreates = limit
                }
                if let keep = duration(daemon, "history_keep", at: "daemon", atLeast: .seconds(86_400)) {
                    config.historyKeep = keep
                }
            } else {
                error("daemon", "expected a table, got \(value.typeName)")
            }
        }

        config.backends = ["local": SnapcronConfig.builtInLocalBackend(stateDirectory: config.stateDirectory)]
        if let value = root["backends"] {
            if let backends = value.table {
                config.backends = [:]
                for (name, table) in backends.sorted(by: { $0.key < $1.key }) {
                    if let backend = readBackend(name: name, table, stateDirectory: config.stateDirectory) {
                        config.backends[name] = backend
                    }
                }
            } else {
                error("backends", "expected a table of [backends.NAME] tables, got \(value.typeName)")
            }
        }
        return config
    }

    mutating func readBackend(name: String, _ value: ConfigValue, stateDirectory: String) -> BackendConfig? {
        let path = "backends.\(name)"
        guard let table = value.table else {
            error(path, "expected a table, got \(value.typeName)")
            return nil
        }
        if !Self.isValidBackendName(name) {
            error(path, "invalid backend name '\(name)' (use lowercase letters, digits and '-', starting with a letter or digit)")
        }
        let typeNames = BackendType.all.map(\.name).joined(separator: ", ")
        guard let typeValue = table["type"] else {
            error(path, "missing key 'type' (expected \(typeNames))")
            return nil
        }
        guard let typeName = typeValue.string else {
            error("\(path).type", "expected a string, got \(typeValue.typeName)")
            return nil
        }
        guard let type = BackendType(named: typeName) else {
            let note = Suggestion.closest(to: typeName, in: BackendType.all.map(\.name)).map { "did you mean '\($0)'?" }
            error(path, "unknown type '\(typeName)' (expected \(typeNames))", note: note)
            return nil
        }

        let specific = Self.backendKeys[type.name] ?? []
        rejectUnknownKeys(in: table, at: path, known: Self.commonBackendKeys + specific)
        var backend = BackendConfig(name: name, type: type, settings: table.filter { $0.key != "type" })
        backend.maxConcurrent = positiveInteger(table, "max_concurrent", at: path)
        backend.maxConcurrentCreates = positiveInteger(table, "max_concurrent_creates", at: path)

        switch type {
        case .local:
            let directory =
                absolutePath(table, "images_dir", at: path) ?? SnapcronConfig.joinPath(stateDirectory, "images")
            backend.local = LocalBackendSettings(
                imagesDirectory: directory, reflink: boolean(table, "reflink", at: path) ?? true)
        case .exec:
            backend.exec = readExecSettings(table, at: path)
        case .twcc:
            _ = nonEmptyString(table, "platform", at: path)
            _ = positiveInteger(table, "project_id", at: path)
            if let url = nonEmptyString(table, "base_url", at: path), !(url.hasPrefix("https://") || url.hasPrefix("http://")) {
                error("\(path).base_url", "expected an http(s) URL, got '\(url)'")
            }
        default:
            break
        }
        if let rate = table["requests_per_second"], (rate.number ?? 0) <= 0 {
            error("\(path).requests_per_second", "expected a number greater than 0, got \(rate)")
        }
        readSecret(table, at: path, required: type == .twcc)
        return backend
    }

    /// Checks `api_key_credential` / `api_key_file`: exactly one where required, a plain credential name, a file
    /// that exists and is not world-readable.
    mutating func readSecret(_ table: [String: ConfigValue], at path: String, required: Bool) {
        let credential = nonEmptyString(table, "api_key_credential", at: path)
        let file = absolutePath(table, "api_key_file", at: path)
        if table["api_key_credential"] != nil, table["api_key_file"] != nil {
            error(path, "give api_key_credential or api_key_file, not both")
            return
        } else if required, table["api_key_credential"] == nil, table["api_key_file"] == nil, table["api_key"] == nil {
            error(path, "missing api_key_credential or api_key_file (the API key is never inline)")
        }
        if let credential, credential.contains("/") || credential == "." || credential == ".." {
            error(
                "\(path).api_key_credential", "invalid credential name '\(credential)'",
                note: "give the name of a LoadCredential= entry; it is read from $CREDENTIALS_DIRECTORY")
        }
        if let file {
            var info = stat()
            guard stat(file, &info) == 0 else {
                error("\(path).api_key_file", "cannot read '\(file)': \(String(cString: strerror(errno)).lowercased())")
                return
            }
            let mode = info.st_mode & 0o7777
            if (info.st_mode & S_IFMT) != S_IFREG {
                error("\(path).api_key_file", "'\(file)' is not a regular file")
            } else if mode & 0o004 != 0 {
                error(
                    "\(path).api_key_file",
                    "'\(file)' is readable by everyone (mode \(String(mode, radix: 8).leftPadded(to: 4)))",
                    note: "chmod o-rwx \(file)")
            }
        }
    }

    static func isValidBackendName(_ name: String) -> Bool {
        guard let first = name.first, first.isASCII, first.isLowercase || first.isNumber else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
    }

    mutating func nonEmptyString(_ table: [String: ConfigValue], _ key: String, at path: String) -> String? {
        guard let value = table[key] else { return nil }
        guard let string = value.string, !string.isEmpty else {
            error("\(path).\(key)", "expected a non-empty string, got \(value)")
            return nil
        }
        return string
    }

    mutating func absolutePath(_ table: [String: ConfigValue], _ key: String, at path: String) -> String? {
        guard let string = nonEmptyString(table, key, at: path) else { return nil }
        guard string.hasPrefix("/") else {
            error("\(path).\(key)", "expected an absolute path, got '\(string)'")
            return nil
        }
        return string
    }

    mutating func boolean(_ table: [String: ConfigValue], _ key: String, at path: String) -> Bool? {
        guard let value = table[key] else { return nil }
        guard let bool = value.bool else {
            error("\(path).\(key)", "expected true or false, got \(value)")
            return nil
        }
        return bool
    }

    /// A duration written like a schedule option (`400d`, `12h`), at least `minimum`.
    mutating func duration(
        _ table: [String: ConfigValue], _ key: String, at path: String, atLeast minimum: Duration
    ) -> Duration? {
        guard let value = table[key] else { return nil }
        guard let text = value.string else {
            error("\(path).\(key)", "expected a duration such as \"400d\", got \(value)")
            return nil
        }
        do {
            let duration = try Duration(parsingOption: text)
            guard duration >= minimum else {
                error("\(path).\(key)", "must be at least \(minimum.optionDescription), got '\(text)'")
                return nil
            }
            return duration
        } catch let parseError {
            error("\(path).\(key)", "\(parseError)")
            return nil
        }
    }

    mutating func positiveInteger(_ table: [String: ConfigValue], _ key: String, at path: String) -> Int? {
        guard let value = table[key] else { return nil }
        guard let number = value.integer, number >= 1 else {
            error("\(path).\(key)", "expected an integer of at least 1, got \(value)")
            return nil
        }
        return number
    }
}

extension SnapcronConfig {
    static func joinPath(_ directory: String, _ name: String) -> String {
        directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }

    static func fileErrorDescription(path: String) -> String {
        FileManager.default.fileExists(atPath: path) ? "'\(path)' is not readable" : "no such file '\(path)'"
    }
}

extension String {
    func leftPadded(to width: Int, with pad: Character = "0") -> String {
        String(repeating: pad, count: max(0, width - count)) + self
    }
}

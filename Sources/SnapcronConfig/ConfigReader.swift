import Foundation
import BackendTypes
import LocalDescriptor
import SnapcronCore

/// Checks the parsed TOML tree key by key and collects diagnostics with key paths. `[daemon]` is read here; each
/// `[backends.NAME]` table by the descriptor of its type.
struct ConfigReader {
    let file: String
    var diagnostics = DiagnosticList()

    static let daemonKeys = [
        "state_dir", "socket_path", "socket_group", "max_concurrent_creates", "schedule_path", "history_keep",
        "metrics_listen", "metrics_allow",
    ]
    static let commonBackendKeys = ["type", "max_concurrent", "max_concurrent_creates", "hooks"]
    static let hookKeys = [
        "pre", "post", "on_success", "on_failure", "timeout", "on_pre_failure", "notify_url", "ping_url",
    ]

    mutating func error(_ path: String, _ message: String, note: String? = nil) {
        diagnostics.append(.error("\(path): \(message)", file: file, note: note))
    }

    /// Turns what `reader` found into diagnostics of this file.
    mutating func report(_ reader: SettingsReader) {
        for problem in reader.problems {
            diagnostics.append(.error(problem.message, file: file, note: problem.note))
        }
    }

    /// Reports keys of the reader's table not in `known`, with a suggestion.
    static func rejectUnknownKeys(_ reader: inout SettingsReader, known: [String]) {
        for key in reader.table.keys.sorted() where !known.contains(key) {
            if key == "password" {
                reader.error(
                    key, "secrets are never inline",
                    note: "use password_credential (systemd LoadCredential=) or password_file (not world-readable)")
                continue
            }
            if key == "api_key" {
                reader.error(
                    key, "secrets are never inline",
                    note: "use api_key_credential (systemd LoadCredential=) or api_key_file (not world-readable)")
                continue
            }
            let note =
                Suggestion.closest(to: key, in: known).map { "did you mean '\($0)'?" }
                ?? "known keys are \(known.joined(separator: ", "))"
            reader.error(nil, "unknown key '\(key)'", note: note)
        }
    }

    /// The config of `root`; `stateDirectory` (`--state-dir`) replaces `[daemon] state_dir`.
    mutating func read(_ root: [String: ConfigValue], stateDirectory override: String?) -> SnapcronConfig {
        var top = SettingsReader(table: root, path: "")
        Self.rejectUnknownKeys(&top, known: ["daemon", "backends", "hooks", "store"])
        report(top)
        var config = SnapcronConfig(file: file, stateDirectory: SnapcronConfig.defaultStateDirectory, backends: [:])

        if let value = root["daemon"] {
            if let table = value.table {
                var daemon = SettingsReader(table: table, path: "daemon")
                Self.rejectUnknownKeys(&daemon, known: Self.daemonKeys)
                if let path = daemon.absolutePath("state_dir") { config.stateDirectory = path }
                if let path = daemon.absolutePath("socket_path") {
                    config.socketPath = path
                    config.socketPathIsExplicit = true
                }
                if let path = daemon.absolutePath("schedule_path") { config.schedulePath = path }
                if let group = daemon.nonEmptyString("socket_group") { config.socketGroup = group }
                if let limit = daemon.positiveInteger("max_concurrent_creates") { config.maxConcurrentCreates = limit }
                if let keep = daemon.duration("history_keep", atLeast: .seconds(86_400)) { config.historyKeep = keep }
                readMetrics(&daemon, into: &config)
                report(daemon)
            } else {
                error("daemon", "expected a table, got \(value.typeName)")
            }
        }
        if let override { config.stateDirectory = override }
        if let value = root["store"] {
            if let table = value.table {
                config.store = readStore(table)
            } else {
                error("store", "expected a table, got \(value.typeName)")
            }
        }

        config.backends = ["local": LocalBackendDescriptor.builtIn(stateDirectory: config.stateDirectory)]
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
        if let value = root["hooks"] {
            if let sets = value.table {
                for (name, table) in sets.sorted(by: { $0.key < $1.key }) {
                    if let set = readHookSet(name: name, table) { config.hooks[name] = set }
                }
            } else {
                error("hooks", "expected a table of [hooks.NAME] tables, got \(value.typeName)")
            }
        }
        for (backend, _) in config.backends.sorted(by: { $0.key < $1.key }) {
            guard let value = (root["backends"]?.table?[backend]?.table)?["hooks"] else { continue }
            guard let name = value.string, !name.isEmpty else {
                error("backends.\(backend).hooks", "expected the name of a [hooks.NAME] table, got \(value)")
                continue
            }
            guard config.hooks[name] != nil else {
                let known = config.hooks.keys.sorted()
                error(
                    "backends.\(backend).hooks", "unknown hook set '\(name)'",
                    note: Suggestion.closest(to: name, in: known).map { "did you mean '\($0)'?" }
                        ?? (known.isEmpty ? "the config has no [hooks.NAME] tables" : "hook sets: \(known.joined(separator: ", "))"))
                continue
            }
            config.backendHooks[backend] = name
        }
        return config
    }

    static let storeKeys = ["url", "password_credential", "password_file", "node_name", "lease"]

    /// `[store]`: where the shared PostgreSQL is, its password's source, this node's name and lease.
    mutating func readStore(_ table: [String: ConfigValue]) -> SharedStoreSettings? {
        var store = SettingsReader(table: table, path: "store")
        Self.rejectUnknownKeys(&store, known: Self.storeKeys)
        defer { report(store) }
        store.secret(prefix: "password", what: "the password", required: false)
        let lease = store.duration("lease", atLeast: SharedStoreSettings.minimumLease)
        let nodeName = store.nonEmptyString("node_name")
        if let nodeName, nodeName.count > 63 || !nodeName.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) })
        {
            store.error("node_name", "'\(nodeName)' is not a node name (letters, digits, '-', '_', '.'; at most 63)")
        }
        guard table["url"] != nil else {
            store.error(nil, "missing url (postgresql://USER@HOST[:PORT]/DATABASE)")
            return nil
        }
        guard let url = store.nonEmptyString("url") else { return nil }
        guard url.hasPrefix("postgresql://") || url.hasPrefix("postgres://") else {
            store.error(
                "url", "'\(SharedStoreSettings.redacted(url))' is not a postgresql:// url",
                note: "SQLite needs no [store]: it is the default")
            return nil
        }
        let authority = url.drop { $0 != "/" }.dropFirst(2).prefix { $0 != "/" }
        if let at = authority.lastIndex(of: "@"), authority[..<at].contains(":") {
            store.error(
                "url", "secrets are never inline: the url holds a password",
                note: "use password_credential (systemd LoadCredential=) or password_file (not world-readable)")
            return nil
        }
        var settings = SharedStoreSettings(url: url)
        // Checked by `secret` above.
        settings.passwordCredential = table["password_credential"]?.string
        settings.passwordFile = table["password_file"]?.string
        settings.nodeName = nodeName
        if let lease { settings.lease = lease }
        return settings
    }

    /// `metrics_listen` (HOST:PORT or a socket path) and `metrics_allow` (address blocks that may scrape).
    func readMetrics(_ daemon: inout SettingsReader, into config: inout SnapcronConfig) {
        if let text = daemon.nonEmptyString("metrics_listen") {
            do {
                config.metricsListen = try MetricsListen(parsing: text)
            } catch {
                daemon.error("metrics_listen", error.description)
            }
        }
        guard let value = daemon.table["metrics_allow"] else { return }
        guard let items = value.array, !items.isEmpty else {
            daemon.error(
                "metrics_allow", "expected a non-empty array of addresses or blocks, got \(value)",
                note: "e.g. [\"127.0.0.1\", \"::1\", \"10.0.0.0/8\"]")
            return
        }
        var ranges: [IPAddressRange] = []
        for (index, item) in items.enumerated() {
            guard let text = item.string else {
                daemon.error("metrics_allow[\(index)]", "expected a string, got \(item)")
                continue
            }
            do {
                ranges.append(try IPAddressRange(parsing: text))
            } catch {
                daemon.error("metrics_allow[\(index)]", error.description)
            }
        }
        if ranges.count == items.count { config.metricsAllow = ranges }
        if case .unix? = config.metricsListen {
            daemon.error(
                "metrics_allow", "applies only to a TCP metrics_listen",
                note: "a Unix socket is guarded by its file mode (0666: what any local user could read on loopback)")
        }
    }

    /// One `[hooks.NAME]` table: argv commands, a timeout and what a failed `pre` means.
    mutating func readHookSet(name: String, _ value: ConfigValue) -> HookSet? {
        let path = "hooks.\(name)"
        guard let table = value.table else {
            error(path, "expected a table, got \(value.typeName)")
            return nil
        }
        if name == "none" || !Self.isValidBackendName(name.replacingOccurrences(of: "_", with: "-")) {
            error(path, "invalid hook set name '\(name)' (use lowercase letters, digits, '-' and '_'; 'none' is reserved)")
        }
        var reader = SettingsReader(table: table, path: path)
        Self.rejectUnknownKeys(&reader, known: Self.hookKeys)
        var set = HookSet(name: name)
        func argv(_ key: String) -> [String]? {
            guard let value = table[key] else { return nil }
            guard let strings = value.strings, !strings.isEmpty, !strings[0].isEmpty else {
                reader.error(key, "expected a non-empty array of strings (an argv), got \(value)")
                return nil
            }
            if let problem = HookSet.problem(with: strings) {
                reader.error(key, problem)
                return nil
            }
            return strings
        }
        set.pre = argv("pre")
        set.post = argv("post")
        set.onSuccess = argv("on_success")
        set.onFailure = argv("on_failure")
        if let timeout = reader.duration("timeout", atLeast: .seconds(1)) { set.timeout = timeout }
        if let policy = table["on_pre_failure"] {
            if let text = policy.string, let parsed = HookSet.PreFailurePolicy(rawValue: text) {
                set.onPreFailure = parsed
            } else {
                reader.error("on_pre_failure", "expected \"skip\" or \"continue\", got \(policy)")
            }
        }
        func url(_ key: String) -> String? {
            guard let value = table[key] else { return nil }
            guard let url = value.string else {
                reader.error(key, "expected an http:// or https:// URL, got \(value)")
                return nil
            }
            if let problem = Self.webhookProblem(url) {
                reader.error(key, problem)
                return nil
            }
            return url
        }
        set.notifyURL = url("notify_url")
        set.pingURL = url("ping_url")
        if set.pre == nil, set.post == nil, set.onSuccess == nil, set.onFailure == nil, set.notifyURL == nil,
            set.pingURL == nil, reader.problems.isEmpty
        {
            reader.error(nil, "nothing to run (give pre, post, on_success, on_failure, notify_url or ping_url)")
        }
        let hadProblems = !reader.problems.isEmpty
        report(reader)
        return hadProblems ? nil : set
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

        var reader = SettingsReader(table: table, path: path)
        Self.rejectUnknownKeys(&reader, known: Self.commonBackendKeys + type.descriptor.settingKeys)
        let maxConcurrent = reader.positiveInteger("max_concurrent")
        let maxConcurrentCreates = reader.positiveInteger("max_concurrent_creates")
        let typed = type.descriptor.readSettings(&reader, stateDirectory: stateDirectory)
        report(reader)
        var backend = BackendConfig(
            name: name, type: type, maxConcurrent: maxConcurrent, typedSettings: typed,
            settings: table.filter { $0.key != "type" })
        backend.maxConcurrentCreates = maxConcurrentCreates
        return backend
    }

    /// Why `url` cannot take notifications, or nil: an http(s) URL with a host, no user info, no fragment.
    static func webhookProblem(_ url: String) -> String? {
        guard let parsed = URLComponents(string: url), let scheme = parsed.scheme?.lowercased(),
            scheme == "http" || scheme == "https", let host = parsed.host, !host.isEmpty
        else { return "expected an http:// or https:// URL with a host, got '\(url)'" }
        if parsed.user != nil || parsed.password != nil {
            return "no user or password in the URL (put a token in its path or query)"
        }
        if parsed.fragment != nil { return "no #fragment in the URL" }
        return nil
    }

    static func isValidBackendName(_ name: String) -> Bool {
        guard let first = name.first, first.isASCII, first.isLowercase || first.isNumber else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
    }
}

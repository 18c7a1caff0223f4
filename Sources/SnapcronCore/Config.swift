public import BackendTypes
import Foundation

/// The daemon's configuration: daemon settings and backends, from `snapcron.toml` or the embedded default.
///
/// This is the model; the `SnapcronConfig` module reads it from TOML (so the core does not depend on a TOML
/// library), and each backend type's descriptor reads its `[backends.NAME]` table.
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
    /// How long finished runs and deleted images stay in the history (`history_keep`).
    public var historyKeep: Duration = .seconds(400 * 86_400)
    public var schedulePath = "/etc/snapcron/schedule"
    /// Where `/metrics` is served (`metrics_listen`); nil: not served.
    public var metricsListen: MetricsListen?
    /// Who may scrape a TCP `metrics_listen` (`metrics_allow`); loopback unless set.
    public var metricsAllow: [IPAddressRange] = IPAddressRange.loopback
    /// The backends by name.
    public var backends: [String: BackendConfig]
    /// The hook sets (`[hooks.NAME]`) by name.
    public var hooks: [String: HookSet] = [:]
    /// Each backend's default hook set (`[backends.NAME] hooks = "SET"`), by backend name.
    public var backendHooks: [String: String] = [:]
    /// A store several daemons share (`[store]`, cluster mode); nil: the embedded SQLite in the state directory.
    public var store: SharedStoreSettings?

    /// A configuration from `file` (nil: the embedded default) with these backends and default daemon settings.
    /// The `SnapcronConfig` module reads config files and makes the embedded default (`SnapcronConfig.default`).
    public init(file: String?, stateDirectory: String, backends: [String: BackendConfig]) {
        self.file = file
        self.stateDirectory = stateDirectory
        self.backends = backends
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
}

extension SnapcronConfig {
    /// Why `path` cannot be read, for messages: `no such file '...'` or `'...' is not readable`.
    public static func fileErrorDescription(path: String) -> String {
        FileManager.default.fileExists(atPath: path) ? "'\(path)' is not readable" : "no such file '\(path)'"
    }
}

/// `[store]`: a PostgreSQL that several daemons share (cluster mode).
public struct SharedStoreSettings: Sendable, Hashable {
    /// `postgresql://USER@HOST[:PORT]/DATABASE`, never with a password.
    public var url: String
    /// The password's systemd credential (`LoadCredential=`), read from `$CREDENTIALS_DIRECTORY`.
    public var passwordCredential: String?
    /// A file holding the password, not world-readable.
    public var passwordFile: String?
    /// This daemon's name in the cluster; nil: the host name.
    public var nodeName: String?
    /// A node silent this long loses its unfinished runs to the others.
    public var lease: Duration = .seconds(30)

    public static let minimumLease: Duration = .seconds(5)

    public init(url: String) { self.url = url }

    /// `url` for a message: whatever stands between the scheme and the last `@` (user and password) becomes
    /// `…`, whether the URL parses or not, so a mistyped URL with a password never reaches a log.
    public static func redacted(_ url: String) -> String {
        guard let at = url.lastIndex(of: "@") else { return url }
        let afterScheme = url.range(of: "://").map(\.upperBound) ?? url.firstIndex(of: ":").map { url.index(after: $0) }
        guard let start = afterScheme, start <= at else { return "…" + url[at...] }
        return url[..<start] + "…" + url[at...]
    }
}

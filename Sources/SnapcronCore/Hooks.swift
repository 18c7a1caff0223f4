public import BackendTypes
import Foundation

/// Commands run around a job's creates and after its runs (`[hooks.NAME]` in the config; a job takes a set with
/// `hooks=NAME`, or its backend's `hooks = "NAME"`).
///
/// `pre` runs before each create (e.g. `virsh domfsfreeze`), `post` after it, always once `pre` has started: also
/// when `pre` or the create fails, or the daemon is stopping. `onSuccess` and `onFailure` run after a run ends.
/// Every command is an argv (never a shell) with `{job}`, `{target}`, `{name}`, `{run}`, `{image}`, `{state}` and
/// `{error}` placeholders, and gets the same values as `SNAPCRON_*` environment variables.
public struct HookSet: Sendable, Hashable {
    public var name: String
    public var pre: [String]?
    public var post: [String]?
    public var onSuccess: [String]?
    public var onFailure: [String]?
    /// Each command is stopped (its process group killed) after this long.
    public var timeout: Duration = .seconds(60)
    public var onPreFailure = PreFailurePolicy.skip
    /// Gets an HTTP POST of a ``RunNotification`` (JSON) when a run ends.
    public var notifyURL: String?
    /// Healthchecks-style pings: `GET <url>/start` when a fire starts, `<url>` on success, `<url>/fail` on failure.
    public var pingURL: String?

    public init(name: String) { self.name = name }

    /// What a failed `pre` means for the image.
    public enum PreFailurePolicy: String, Sendable, Hashable, CaseIterable {
        /// No image: the run fails (after `post`).
        case skip
        /// The image is taken anyway and recorded as crash-consistent.
        case `continue`
    }

    /// The placeholders a hook command may use.
    public static let placeholders: [Placeholder] = [.job, .target, .name, .run, .image, .state, .error]

    /// Why `argv` cannot be a hook command, or nil: an empty argv, a placeholder in the command itself, an
    /// unknown placeholder, or an unbalanced brace (`{{` and `}}` are literal braces).
    public static func problem(with argv: [String]) -> String? {
        do {
            _ = try CommandTemplate(argv, allowed: placeholders)
            return nil
        } catch {
            return error.message
        }
    }

    /// `argv` with each placeholder replaced by its value, by placeholder name (a missing value expands to
    /// nothing). An argv that is not a valid template (never read from a config) is returned as it is.
    public static func expand(_ argv: [String], _ values: [String: String]) -> [String] {
        guard let template = try? CommandTemplate(argv, allowed: placeholders) else { return argv }
        return template.expand(Dictionary(uniqueKeysWithValues: values.map { (Placeholder($0.key), $0.value) }))
    }
}

/// When a hook command runs.
public enum HookPhase: String, Sendable, Hashable, Codable {
    case pre, post, success, failure
}

/// How one hook command ended.
public struct HookResult: Sendable, Hashable {
    /// The exit status, or nil when it did not exit on its own (killed, or never started).
    public var exitStatus: Int32?
    /// The signal that ended it, if one did.
    public var signal: Int32?
    public var timedOut = false
    /// Stopped because the daemon is stopping (a `pre` is not waited for).
    public var stopped = false
    /// It could not be started (the command was not found, ...): why.
    public var spawnError: String?
    public var duration: Duration = .zero
    /// The end of its stderr, for the journal.
    public var stderrTail = ""

    public init(exitStatus: Int32? = nil, signal: Int32? = nil) {
        self.exitStatus = exitStatus
        self.signal = signal
    }

    public var succeeded: Bool { exitStatus == 0 && !timedOut && !stopped && spawnError == nil }

    /// `exit 0`, `exit 3`, `timed out`, `stopped: the daemon is stopping`, `killed by signal 9`, `not started: ...`.
    public var summary: String {
        if let spawnError { return "not started: \(spawnError)" }
        if timedOut { return "timed out" }
        if stopped { return "stopped: the daemon is stopping" }
        if let exitStatus { return "exit \(exitStatus)" }
        if let signal { return "killed by signal \(signal)" }
        return "stopped"
    }
}

/// Runs hook commands: each in a process group of its own, without a shell, stopped at `timeout` and when the
/// calling task is cancelled (the daemon is stopping), with exactly `environment` as its environment added to
/// the runner's own base environment.
public protocol HookRunner: Sendable {
    func run(_ argv: [String], environment: [String: String], timeout: Duration) async -> HookResult
}

/// What a job's `notify_url` gets (as JSON) and its `ping_url` is pinged for.
public struct RunNotification: Sendable, Hashable, Codable {
    /// `run.started` (pings only) or `run.finished`.
    public var event: String
    public var job: String
    public var run: Int64
    /// The run's state: `creating` when it starts, then `succeeded`, `failed`, `timed_out`, or `missed` for a fire
    /// the daemon was down for past its deadline.
    public var state: String
    public var backend: String
    public var target: String
    /// The image's name; nil for a missed fire (no image was started).
    public var imageName: String?
    public var image: String?
    public var error: String?
    public var scheduledAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?

    enum CodingKeys: String, CodingKey {
        case event, job, run, state, backend, target, error, image
        case imageName = "image_name", scheduledAt = "scheduled_at", startedAt = "started_at"
        case finishedAt = "finished_at"
    }

    public init(
        event: String, job: String, run: Int64, state: String, backend: String, target: String, imageName: String?,
        image: String? = nil, error: String? = nil, scheduledAt: Date, startedAt: Date? = nil, finishedAt: Date? = nil
    ) {
        self.event = event
        self.job = job
        self.run = run
        self.state = state
        self.backend = backend
        self.target = target
        self.imageName = imageName
        self.image = image
        self.error = error
        self.scheduledAt = scheduledAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
    }

    /// Whether the run ended well (`ping_url` gets `<url>` rather than `<url>/fail`).
    public var succeeded: Bool { state == RunState.succeeded.rawValue }
}

/// Delivers run notifications to a hook set's `notify_url` and `ping_url`, retrying failed deliveries; returns
/// when delivered or given up. Never called on a run's own path: a slow receiver delays no run.
public protocol RunNotifier: Sendable {
    func deliver(_ notification: RunNotification, to hooks: HookSet) async
}

/// One hook command of a run as the store keeps it (`snapcronctl history --verbose`).
public struct HookRecord: Sendable, Hashable, Codable {
    public var runID: Int64
    public var phase: HookPhase
    public var hookSet: String
    /// ``HookResult/summary``: `exit 0`, `timed out`, ...
    public var result: String
    public var exitStatus: Int32?
    public var durationMs: Int
    public var finishedAt: Date

    public init(
        runID: Int64, phase: HookPhase, hookSet: String, result: String, exitStatus: Int32?, durationMs: Int,
        finishedAt: Date
    ) {
        self.runID = runID
        self.phase = phase
        self.hookSet = hookSet
        self.result = result
        self.exitStatus = exitStatus
        self.durationMs = durationMs
        self.finishedAt = finishedAt
    }
}

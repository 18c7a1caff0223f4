import ExecBackend
import Foundation
import LocalBackend
import Logging
import SnapcronCore
import SnapcronStore
import SnapcronSystemd
import SnapshotBackend
import TWCCBackend

/// What `snapcrond` was asked to run with; nil fields take the config's (or the built-in) defaults.
public struct DaemonOptions: Sendable {
    public var configPath: String?
    public var schedulePath: String?
    public var stateDirectory: String?
    /// The control socket (default: `$RUNTIME_DIRECTORY/control.sock`, else `socket_path` of the config).
    public var socketPath: String?
    /// The control socket's file mode (default 0660).
    public var socketMode: mode_t?
    /// Limits of the control socket.
    public var controlLimits = ControlServerLimits()

    public init(
        configPath: String? = nil, schedulePath: String? = nil, stateDirectory: String? = nil,
        socketPath: String? = nil, socketMode: mode_t? = nil
    ) {
        self.configPath = configPath
        self.schedulePath = schedulePath
        self.stateDirectory = stateDirectory
        self.socketPath = socketPath
        self.socketMode = socketMode
    }
}

/// A start-up failure, already worded for the operator.
public struct DaemonStartError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The running daemon: config, backends, store and scheduler wired together, plus reload.
public final class Daemon: Sendable {
    public let config: SnapcronConfig
    public let schedulePath: String
    public let store: SnapcronDatabase
    public let scheduler: SchedulerService
    let backends: [String: any SnapshotBackend]
    let logger: Logger
    /// systemd's notification socket; every call is a no-op outside systemd.
    let notifier = Notifier()
    /// The jobs as the control socket shows them; updated on every successful reload.
    public let catalog = JobCatalog()
    /// Reloads, one at a time: each reads the file and applies it before the next starts.
    let reloads = SerialTaskQueue()
    /// When the daemon started, for `status`.
    public let startedAt: Date
    let clock: SystemClock
    let socketOptions: ControlSocketOptions
    let controlLimits: ControlServerLimits

    /// Loads everything; throws with every problem worded for the operator (diagnostics with file:line:col).
    /// `pausePoint` is called at named points of each run, `copyPoint` on a local copy's thread before each extent
    /// it copies; crash tests freeze the daemon there (both nil in production).
    public init(
        options: DaemonOptions, logger: Logger, pausePoint: (@Sendable (String) async -> Void)? = nil,
        copyPoint: (@Sendable () -> Void)? = nil
    ) throws {
        self.logger = logger
        clock = SystemClock()
        startedAt = clock.now()
        var config: SnapcronConfig
        do {
            if let path = options.configPath {
                config = try SnapcronConfig.load(path: path)
            } else {
                config = try SnapcronConfig.loadIfPresent()
            }
        } catch {
            throw DaemonStartError(error.description)
        }
        if let stateDirectory = options.stateDirectory { config = Self.moving(config, to: stateDirectory) }
        self.config = config
        schedulePath = options.schedulePath ?? config.schedulePath
        socketOptions = ControlSocketOptions(
            path: Self.socketPath(options: options, config: config), mode: options.socketMode ?? 0o660,
            group: config.socketGroup)
        controlLimits = options.controlLimits

        do {
            try FileManager.default.createDirectory(
                atPath: config.stateDirectory, withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o750])
        } catch {
            throw DaemonStartError("cannot create state directory \(config.stateDirectory): \(error.localizedDescription)")
        }
        do {
            store = try SnapcronDatabase(path: config.stateDirectory + "/state.db")
        } catch {
            throw DaemonStartError("cannot open the state database: \(error)")
        }
        backends = try BackendFactory.makeBackends(config, copyPoint: copyPoint)
        let schedule = try Self.loadSchedule(path: schedulePath, config: config, backends: backends)
        Self.log(warnings: schedule.warnings, path: schedulePath, logger: logger)
        catalog.update(schedule.jobs)
        var pacing = RunPacing()
        pacing.historyKeep = config.historyKeep.timeInterval
        scheduler = SchedulerService(
            jobs: schedule.jobs, store: store, backends: backends, clock: clock,
            limits: ConcurrencyLimits(
                createCalls: config.maxConcurrentCreates,
                createCallsPerBackend: config.backends.compactMapValues(\.maxConcurrentCreates),
                unfinishedImagesPerBackend: config.backends.compactMapValues(\.maxConcurrent)),
            pacing: pacing, logger: logger, pausePoint: pausePoint)
        logger.info(
            "Schedule loaded",
            metadata: [
                "event": "schedule.loaded", "jobs": "\(schedule.jobs.count)", "schedule": "\(schedulePath)",
                "state_dir": "\(config.stateDirectory)",
            ])
    }

    /// The first warnings one by one, then a count: a large schedule can have thousands of DST advisories,
    /// which belong in `snapcronctl check`, not in every start's journal.
    static func log(warnings: [Diagnostic], path: String, logger: Logger) {
        let shown = 20
        for warning in warnings.prefix(shown) { logger.warning("\(warning.description)") }
        if warnings.count > shown {
            logger.warning(
                "\(warnings.count - shown) more warnings; run 'snapcronctl check \(path)' to see them all",
                metadata: ["count": "\(warnings.count)"])
        }
    }

    /// The config with its state directory (and the default images directory under it) moved.
    static func moving(_ config: SnapcronConfig, to stateDirectory: String) -> SnapcronConfig {
        var moved = config
        let oldImages = config.stateDirectory + "/images"
        moved.stateDirectory = stateDirectory
        for (name, backend) in config.backends where backend.local?.imagesDirectory == oldImages {
            moved.backends[name]?.local?.imagesDirectory = stateDirectory + "/images"  // other settings stay
        }
        return moved
    }

    /// Parses the schedule and checks each job's target with its backend; all problems at once.
    static func loadSchedule(
        path: String, config: SnapcronConfig, backends: [String: any SnapshotBackend]
    ) throws(DaemonStartError) -> Schedule {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8)
        else {
            throw DaemonStartError(
                DiagnosticList([
                    .error("cannot read schedule: '\(path)' is missing, unreadable or not UTF-8 text", file: path)
                ]).description)
        }
        switch validateSchedule(text: text, file: path, config: config, backends: backends, now: Date()) {
        case .success(let schedule): return schedule
        case .failure(let diagnostics): throw DaemonStartError(diagnostics.description)
        }
    }

    /// Re-reads the schedule and applies it; on any error the running schedule stays and the error is returned.
    public func reload() async -> Result<Int, DaemonStartError> {
        await reloadSchedule().map(\.jobs.count).mapError { DaemonStartError($0.description) }
    }

    /// Runs until SIGTERM or SIGINT; SIGHUP reloads the schedule.
    public func run() async throws {
        let notifier = self.notifier
        // WATCHDOG=1 comes from the scheduler loop itself, so a stuck loop stops the pings and systemd restarts us.
        let heartbeat = notifier.watchdogInterval.map { interval in
            Heartbeat(interval: interval) { notifier.watchdog() }
        }
        let observer = SchedulerObserver(
            started: { [logger] in
                // Start-up temporaries (schedule text, parse results, store reads) are freed by now.
                ProcessMemory.releaseFreedMemory()
                notifier.ready(status: "started")
                logger.info("Ready", metadata: ["event": "daemon.started"])
            },
            status: { notifier.status($0) })
        // READY=1 comes from the loop once it runs, so the control socket must be up first. Under systemd a
        // daemon without its socket would leave `systemctl reload` (snapcronctl reload) unable to work: fail the
        // start instead. Run by hand, it keeps scheduling and says why the socket is missing.
        let control = await startControlServer()
        if control == nil && notifier.isActive {
            throw DaemonStartError("the control socket \(socketOptions.path) could not be opened (see the log)")
        }
        // Above the control socket's requests, so that a flood of them never queues in front of a fire.
        let runner = Task(priority: .high) { [scheduler] in
            try await scheduler.run(heartbeat: heartbeat, observer: observer)
        }
        let signals = SignalWatcher(signals: [SIGTERM, SIGINT, SIGHUP]) { [self] signal in
            if signal == SIGHUP {
                Task { _ = await self.reload() }
            } else {
                notifier.stopping()
                self.logger.notice(
                    "Stopping", metadata: ["event": "daemon.stopping", "signal": "\(signal == SIGTERM ? "TERM" : "INT")"])
                runner.cancel()
            }
        }
        defer { signals.cancel() }
        let outcome = await runner.result
        await control?.stop()
        try outcome.get()
        try? store.checkpoint()
        logger.info("Stopped cleanly")
    }
}

/// Delivers signals on a private queue instead of interrupting the process.
final class SignalWatcher: @unchecked Sendable {  // sources are set once in init
    private let sources: [any DispatchSourceSignal]

    init(signals: [Int32], handler: @escaping @Sendable (Int32) -> Void) {
        let queue = DispatchQueue(label: "snapcron.signals")
        sources = signals.map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { handler(number) }
            source.resume()
            return source
        }
    }

    func cancel() {
        for source in sources { source.cancel() }
    }
}

/// Builds the configured backends.
enum BackendFactory {
    static func makeBackends(
        _ config: SnapcronConfig, copyPoint: (@Sendable () -> Void)? = nil
    ) throws(DaemonStartError) -> [String: any SnapshotBackend] {
        var backends: [String: any SnapshotBackend] = [:]
        for (name, backend) in config.backends {
            switch backend.type {
            case .local:
                // The same settings as the target rule of `snapcronctl check` (SnapcronConfig.targetValidators).
                let settings = config.localSettings(of: backend)
                let directory = settings.imagesDirectory
                do {
                    try FileManager.default.createDirectory(
                        atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
                } catch {
                    throw DaemonStartError("backend \(name): cannot create \(directory): \(error.localizedDescription)")
                }
                var copyHook: LocalBackend.CopyHook?
                if let copyPoint { copyHook = { _ in copyPoint() } }
                backends[name] = LocalBackend(
                    configuration: LocalBackend.Configuration(
                        name: name, imagesDirectory: directory, allowReflink: settings.reflink,
                        copyHook: copyHook))
            case .exec:
                guard let settings = backend.exec else { continue }  // the config reader reported why
                backends[name] = try makeExecBackend(backend, settings: settings)
            case .twcc:
                backends[name] = try makeTWCCBackend(backend)
            default:
                continue  // reported when a job uses it (see Daemon.loadSchedule)
            }
        }
        return backends
    }

    /// A TWCC backend; its API key comes from `$CREDENTIALS_DIRECTORY` (LoadCredential=) or a private file.
    static func makeTWCCBackend(
        _ backend: BackendConfig, environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(DaemonStartError) -> TWCCBackend {
        do {
            let key = try APIKey.load(settings: backend.settings, environment: environment)
            let configuration = try TWCCBackend.Configuration(
                backend: backend.name, settings: backend.settings, apiKey: key)
            return TWCCBackend(name: backend.name, configuration: configuration)
        } catch {
            throw DaemonStartError("backend \(backend.name): \(error)")
        }
    }

    /// An exec backend from its checked settings; its secret, if any, reaches the commands only as a file path in
    /// `SNAPCRON_API_KEY_FILE`, never as a value.
    static func makeExecBackend(
        _ backend: BackendConfig, settings: ExecBackendSettings,
        environment processEnvironment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(DaemonStartError) -> ExecBackend {
        var environment = settings.environment
        if let credential = backend.settings["api_key_credential"]?.string {
            guard let directory = processEnvironment["CREDENTIALS_DIRECTORY"], !directory.isEmpty else {
                throw DaemonStartError(
                    "backend \(backend.name): api_key_credential '\(credential)' needs $CREDENTIALS_DIRECTORY "
                        + "(LoadCredential=\(credential):PATH in the systemd unit)")
            }
            environment["SNAPCRON_API_KEY_FILE"] = directory + "/" + credential
        } else if let file = backend.settings["api_key_file"]?.string {
            environment["SNAPCRON_API_KEY_FILE"] = file
        }
        let configuration = ExecBackend.Configuration(
            name: backend.name, create: settings.create, status: settings.status, list: settings.list,
            delete: settings.delete, imageID: settings.imageID, timeout: settings.timeout,
            transientExitCodes: Set(settings.transientExitCodes.map { Int32($0) }), environment: environment,
            targetPattern: settings.targetPattern)
        do {
            return try ExecBackend(configuration: configuration)
        } catch {
            throw DaemonStartError("backend \(backend.name): \(error)")
        }
    }
}

extension ConfigValue: TWCCSettingValue {}

import BackendTypes
import ControlProtocol
import Foundation
import Logging
import SnapcronConfig
import SnapcronCore
import SnapcronMetrics
import SnapcronPostgres
import SnapcronStore
import SnapcronSystemd
import SnapshotBackend

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
    public let store: any StateStore
    public let scheduler: SchedulerService
    let backends: [String: any SnapshotBackend]
    /// Held from start to exit: no second daemon on the same state directory.
    let stateLock: StateDirectoryLock
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
    /// The Prometheus metrics, when `metrics_listen` is set (nil: nothing is counted).
    public let metrics: DaemonMetrics?

    /// Loads everything; throws with every problem worded for the operator (diagnostics with file:line:col).
    /// `pausePoint` is called at named points of each run, `copyPoint` on a local copy's thread before each extent
    /// it copies; crash tests freeze the daemon there (both nil in production).
    public init(
        options: DaemonOptions, logger: Logger, pausePoint: (@Sendable (String) async -> Void)? = nil,
        copyPoint: (@Sendable () -> Void)? = nil
    ) async throws {
        self.logger = logger
        clock = SystemClock()
        startedAt = clock.now()
        let config: SnapcronConfig
        do {
            if let path = options.configPath {
                config = try SnapcronConfig.load(path: path, stateDirectory: options.stateDirectory)
            } else {
                config = try SnapcronConfig.loadIfPresent(stateDirectory: options.stateDirectory)
            }
        } catch {
            throw DaemonStartError(error.description)
        }
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
        // One daemon per state directory, before anything in it is opened: a second one fails here.
        stateLock = try StateDirectoryLock(directory: config.stateDirectory)
        if let shared = config.store {
            store = try await SharedStoreOpener.open(
                shared, backends: Set(config.backends.keys), environment: ProcessInfo.processInfo.environment,
                logger: logger)
        } else {
            do {
                store = try SnapcronDatabase(path: config.stateDirectory + "/state.db")
            } catch {
                throw DaemonStartError("cannot open the state database: \(error)")
            }
        }
        let metrics = config.metricsListen.map { _ in DaemonMetrics(version: SnapcronVersion.current) }
        self.metrics = metrics
        let liveBackends = try LiveBackends.make(config, copyPoint: copyPoint)
        backends = metrics.map { metrics in liveBackends.mapValues { MeteredBackend($0, metrics: metrics) } } ?? liveBackends
        let schedule: Schedule
        switch ScheduleLoader(config: config, backends: backends).load(path: schedulePath, now: clock.now()) {
        case .success(let loaded): schedule = loaded
        case .failure(let diagnostics): throw DaemonStartError(diagnostics.description)
        }
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
            pacing: pacing, logger: logger, pausePoint: pausePoint, hookRunner: CommandHookRunner(),
            notifier: HTTPRunNotifier(logger: logger), metrics: metrics)
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
        // Signals are watched before anything can announce readiness: once READY=1 is out, `systemctl reload`
        // may send SIGHUP at once, and SIGHUP's default action would end the daemon.
        let stop = StopRequest()
        let signals = SignalWatcher(signals: [SIGTERM, SIGINT, SIGHUP]) { [self] signal in
            if signal == SIGHUP {
                Task { _ = await self.reload() }
            } else {
                notifier.stopping()
                self.logger.notice(
                    "Stopping", metadata: ["event": "daemon.stopping", "signal": "\(signal == SIGTERM ? "TERM" : "INT")"])
                stop.request()
            }
        }
        defer { signals.cancel() }
        // READY=1 comes from the loop once it runs, so the control socket must be up first. Under systemd a
        // daemon without its socket would leave `systemctl reload` (snapcronctl reload) unable to work: fail the
        // start instead. Run by hand, it keeps scheduling and says why the socket is missing.
        let control = await startControlServer()
        if control == nil && notifier.isActive {
            throw DaemonStartError("the control socket \(socketOptions.path) could not be opened (see the log)")
        }
        let metricsService = startMetrics()
        let trimmer = Self.startHeapTrimmer()
        defer { trimmer.cancel() }
        // At the default priority, above the control socket's requests (`.low`), so that a flood of them never
        // queues in front of a fire. Not above the default: libdispatch gives each worker thread the nice value of
        // its QoS (-2 for `.high`), which a daemon without CAP_SYS_NICE may not take (EACCES, logged by libdispatch
        // for every new worker thread); lowering the requests' priority instead (nice 2) is always allowed.
        let jobs = catalog.snapshot.jobs
        let runner = Task { [scheduler, self] in
            // Stopped before it began (SIGTERM during start-up): nothing is resumed only to be cut at once.
            guard !stop.isRequested else { return }
            await compareScheduleWithCluster(jobs)
            try await scheduler.run(heartbeat: heartbeat, observer: observer)
        }
        stop.attach(runner)
        let outcome = await runner.result
        await metricsService?.stop()
        await control?.stop()
        try outcome.get()
        try? await store.checkpoint()
        await (store as? PostgresStateStore)?.close()
        logger.info("Stopped cleanly")
    }
}

extension Daemon {
    /// How often freed heap is handed back to the kernel while the daemon runs.
    static let heapTrimInterval: DispatchTimeInterval = .seconds(300)

    /// Hands freed heap back every few minutes, on a queue of its own: a night of thousands of runs leaves glibc
    /// holding hundreds of MB it no longer uses (10,000 jobs: a trim gave back 174 MB), which the resident set would
    /// show for good. A trim locks one malloc arena at a time, briefly; never on the scheduler's threads.
    static func startHeapTrimmer() -> any DispatchSourceTimer {
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "snapcron.heap-trim", qos: .utility))
        timer.schedule(deadline: .now() + heapTrimInterval, repeating: heapTrimInterval, leeway: .seconds(10))
        timer.setEventHandler { ProcessMemory.releaseFreedMemory() }
        timer.resume()
        return timer
    }
}

/// A stop asked for by a signal, possibly before the task it must cancel exists.
final class StopRequest: @unchecked Sendable {  // guarded by the lock
    private let lock = NSLock()
    private var requested = false
    private var task: Task<Void, any Error>?

    var isRequested: Bool { lock.withLock { requested } }

    func request() {
        let task = lock.withLock {
            requested = true
            return self.task
        }
        task?.cancel()
    }

    /// Cancels `task` at once when a stop was requested before it started.
    func attach(_ task: Task<Void, any Error>) {
        let requested = lock.withLock {
            self.task = task
            return self.requested
        }
        if requested { task.cancel() }
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

/// Builds the configured backends, each by the factory of its type (``BackendType/factory``): every backend module
/// is linked into the daemon and declares its descriptor's factory, so this list is `BackendType.all` itself.
enum LiveBackends {
    static func make(
        _ config: SnapcronConfig, copyPoint: (@Sendable () -> Void)? = nil,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws(DaemonStartError) -> [String: any SnapshotBackend] {
        let context = BackendContext(
            stateDirectory: config.stateDirectory, environment: environment, copyPoint: copyPoint)
        var backends: [String: any SnapshotBackend] = [:]
        for (name, backend) in config.backends {
            // A type without a factory here is reported when a job uses it (ScheduleLoader: "not available").
            guard let factory = backend.type.factory else { continue }
            do {
                backends[name] = try factory.makeBackend(backend, context: context)
            } catch {
                throw DaemonStartError("backend \(name): \(error)")
            }
        }
        return backends
    }
}

extension ScheduleLoader {
    /// The daemon's loader: targets checked by the live backends' `validate(target:)`, which apply the same rules
    /// as `snapcronctl check`.
    public init(config: SnapcronConfig, backends: [String: any SnapshotBackend]) {
        self.init(
            config: config,
            validators: backends.mapValues { backend in { target in try backend.validate(target: target) } })
    }
}

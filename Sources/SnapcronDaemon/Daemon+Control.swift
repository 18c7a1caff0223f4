import ControlProtocol
import Foundation
import Logging
import SnapcronCore
import SnapshotBackend

extension Daemon {
    /// `--socket`, else `$RUNTIME_DIRECTORY/control.sock` (systemd's `RuntimeDirectory=`), else the config's.
    static func socketPath(options: DaemonOptions, config: SnapcronConfig) -> String {
        config.controlSocketPath(override: options.socketPath, environment: ProcessInfo.processInfo.environment)
    }

    /// The control service of this daemon; it reports the schedule's absolute path, for `snapcronctl edit`.
    public func makeControlService() -> ControlService {
        let clock = self.clock
        let environment = ControlEnvironment(
            store: store, scheduler: scheduler, catalog: catalog, config: config, backends: backends,
            schedulePath: URL(fileURLWithPath: schedulePath).standardizedFileURL.path, access: ControlAccess(groupName: config.socketGroup), startedAt: startedAt,
            now: { clock.now() }, reload: { [self] in await self.reloadSchedule() })
        return ControlService(environment: environment, logger: logger)
    }

    /// Starts the control socket; on failure logs why and returns nil: scheduling goes on without it.
    func startControlServer() async -> ControlServer? {
        let server = ControlServer(
            options: socketOptions, limits: controlLimits, service: makeControlService(), logger: logger)
        do {
            try await server.start()
            return server
        } catch {
            logger.error(
                "Control socket unavailable; scheduling continues without it",
                metadata: ["event": "control.failed", "socket": "\(socketOptions.path)", "error": "\(error)"])
            await server.stop()
            return nil
        }
    }

    /// Re-reads the schedule file and applies it; on errors returns every diagnostic and the running schedule
    /// stays.
    public func reloadSchedule() async -> Result<Schedule, DiagnosticList> {
        await reloads.run { [self] in await reloadNow() }
    }

    private func reloadNow() async -> Result<Schedule, DiagnosticList> {
        // systemd 252 has no notify-reload; these still tell it (and `systemctl status`) what is going on.
        notifier.reloading()
        defer { notifier.ready(status: nil) }
        switch ScheduleLoader(config: config, backends: backends).load(path: schedulePath, now: clock.now()) {
        case .success(let schedule):
            Self.log(warnings: schedule.warnings, path: schedulePath, logger: logger)
            await scheduler.apply(jobs: schedule.jobs)
            catalog.update(schedule.jobs)
            await compareScheduleWithCluster(schedule.jobs)
            ProcessMemory.releaseFreedMemory()
            logger.info(
                "Schedule reloaded", metadata: ["event": "schedule.loaded", "jobs": "\(schedule.jobs.count)"])
            return .success(schedule)
        case .failure(let diagnostics):
            logFailedReload(diagnostics)
            return .failure(diagnostics)
        }
    }

    /// In a cluster, records this node's schedule and warns of every other node whose schedule differs: a job
    /// that only some nodes know runs only while one of them is up.
    func compareScheduleWithCluster(_ jobs: [Job]) async {
        guard store.runLease != nil else { return }
        do {
            let fingerprints = Dictionary(jobs.map { ($0.name, $0.clusterFingerprint) }, uniquingKeysWith: { a, _ in a })
            for (node, differing) in try await store.publishSchedule(fingerprints).sorted(by: { $0.key < $1.key }) {
                logger.warning(
                    "Schedule differs from another node's",
                    metadata: [
                        "event": "cluster.schedule_differs", "node": "\(node)", "jobs": "\(differing.count)",
                        "differing_jobs": "\(differing.prefix(20).joined(separator: ", "))",
                    ])
            }
        } catch {
            logger.warning("Cannot compare the schedule with the cluster's", metadata: ["error": "\(error)"])
        }
    }

    private func logFailedReload(_ diagnostics: DiagnosticList) {
        logger.error(
            "Reload failed; the running schedule stays",
            metadata: ["event": "schedule.reload_failed", "error": "\(diagnostics.description)"])
    }
}

extension Daemon {
    /// The metrics listener and its refresher, while the daemon runs.
    final class MetricsService: Sendable {
        let refreshing: Task<Void, Never>
        let listening: Task<Void, Never>
        let server: MetricsServer

        init(refreshing: Task<Void, Never>, listening: Task<Void, Never>, server: MetricsServer) {
            self.refreshing = refreshing
            self.listening = listening
            self.server = server
        }

        func stop() async {
            refreshing.cancel()
            listening.cancel()
            await refreshing.value
            await listening.value
            await server.stop()
        }
    }

    /// The refresher that keeps the figures current (once a second; it renders on a queue of its own), and the
    /// listener. A listener that cannot bind (the port is taken) is logged and tried again every 30 s: images
    /// matter more than their metrics.
    func startMetrics() -> MetricsService? {
        guard let metrics, let listen = config.metricsListen else { return nil }
        let scheduler = self.scheduler
        let clock = self.clock
        let refresher = MetricsRefresher(
            metrics: metrics, store: store, catalog: catalog, paused: { scheduler.pausedJobs }, now: { clock.now() },
            logger: logger)
        let refreshing = Task(priority: .utility) {
            while !Task.isCancelled {
                await refresher.refresh()
                try? await Task.sleep(for: .seconds(1), tolerance: .milliseconds(100))
            }
        }
        let server = MetricsServer(listen: listen, allow: config.metricsAllow, metrics: metrics, logger: logger)
        let logger = self.logger
        let listening = Task(priority: .low) {
            while !Task.isCancelled {
                do {
                    try await server.start()
                    return
                } catch {
                    logger.error(
                        "Metrics unavailable; retrying in 30 s", metadata: ["event": "metrics.failed", "error": "\(error)"])
                }
                try? await Task.sleep(for: .seconds(30))
            }
        }
        return MetricsService(refreshing: refreshing, listening: listening, server: server)
    }
}

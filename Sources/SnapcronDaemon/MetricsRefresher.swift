import CronExpression
import Foundation
import Logging
import SnapcronCore
import SnapcronMetrics
import SnapcronStore
import Synchronization

/// Keeps the per-job figures of ``DaemonMetrics`` current and publishes the exposition, off the scrape path.
///
/// Called once a second, it sets what changed: next fires (recomputed only for a job whose next fire passed, or
/// after a reload), paused flags, and, when an event touched the store (or a minute passed: pins, polls), the image
/// census. Then it publishes a new rendering if any value moved. A scrape never waits for any of this. The store is
/// read from the calling task; the figures are computed and rendered on a queue of its own, because a rendering of
/// 10,000 jobs takes tens of milliseconds, which must not hold one of the cooperative pool's threads (two on two
/// cores) that the scheduler runs on.
final class MetricsRefresher: Sendable {
    let metrics: DaemonMetrics
    let store: any StateStore
    let catalog: JobCatalog
    let paused: @Sendable () -> Set<String>
    let now: @Sendable () -> Date
    let logger: Logger
    /// Store figures are read at least this often even without an event (pins, found images, polls).
    static let storeInterval: TimeInterval = 60
    private let state = Mutex(State())
    private let queue = DispatchQueue(label: "snapcron.metrics", qos: .utility)

    struct State {
        var catalogRevision = -1
        var fires: [String: (next: Date?, period: Int?)] = [:]
        var lastStoreRead: Date?
        var lastSuccessSeeded = false
        var pausedSeen: Set<String> = []
        var lastFires: [String: Date] = [:]
    }

    /// What one refresh read from the store.
    private struct StoreReads: Sendable {
        var lastFires: [String: Date]?
        var census: [ImageCensusRow]?
        var lastSuccess: [String: Date]?
    }

    init(
        metrics: DaemonMetrics, store: any StateStore, catalog: JobCatalog,
        paused: @escaping @Sendable () -> Set<String>, now: @escaping @Sendable () -> Date, logger: Logger
    ) {
        self.metrics = metrics
        self.store = store
        self.catalog = catalog
        self.paused = paused
        self.now = now
        self.logger = logger
    }

    /// One refresh: figures that are due, then a new rendering if anything changed. Not called concurrently.
    func refresh() async {
        let now = self.now()
        let snapshot = catalog.snapshot
        let readStore = metrics.takeStoreDirty()
        let (storeDue, jobsChanged, seedLastSuccess) = state.withLock { state in
            (
                readStore || state.lastStoreRead.map { now.timeIntervalSince($0) >= Self.storeInterval } ?? true,
                state.catalogRevision != snapshot.revision,
                !state.lastSuccessSeeded || state.catalogRevision != snapshot.revision
            )
        }
        var reads = StoreReads()
        if storeDue { reads.lastFires = await readLastFires() }
        if storeDue || jobsChanged {
            (reads.census, reads.lastSuccess) = await readImages(
                now: now, jobs: snapshot.jobs, seedLastSuccess: seedLastSuccess)
        }
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            queue.async { [self, reads] in
                apply(reads, storeDue: storeDue, snapshot: snapshot, now: now)
                done.resume()
            }
        }
    }

    private func apply(_ reads: StoreReads, storeDue: Bool, snapshot: JobCatalog.Snapshot, now: Date) {
        let pausedJobs = paused()
        state.withLock { state in
            let jobsChanged = state.catalogRevision != snapshot.revision
            var firesChanged = jobsChanged
            if jobsChanged {
                state.catalogRevision = snapshot.revision
                state.fires = [:]
            }
            for job in snapshot.jobs {
                if let known = state.fires[job.name], known.next.map({ $0 > now }) ?? true { continue }
                state.fires[job.name] = Self.fires(of: job, after: now)
                firesChanged = true
            }
            if storeDue || firesChanged || pausedJobs != state.pausedSeen {
                if let lastFires = reads.lastFires { state.lastFires = lastFires }
                updateJobs(snapshot.jobs, fires: state.fires, paused: pausedJobs, lastFires: state.lastFires)
                state.pausedSeen = pausedJobs
            }
            if storeDue || jobsChanged {
                if let census = reads.census {
                    metrics.update(census: census, lastSuccess: reads.lastSuccess)
                    state.lastSuccessSeeded = state.lastSuccessSeeded || reads.lastSuccess != nil
                }
                state.lastStoreRead = now
            }
        }
        if metrics.hasUnpublishedChanges { metrics.publish() }
    }

    /// The next fire and the longest gap between the next 8 (like `snapcronctl monitor`'s period).
    static func fires(of job: Job, after now: Date) -> (next: Date?, period: Int?) {
        let fires = job.expression.fires(after: now, in: job.zone).prefix(8).map(\.date)
        let period = fires.count >= 2 ? zip(fires, fires.dropFirst()).map { Int($1.timeIntervalSince($0)) }.max() : nil
        return (fires.first, period)
    }

    /// Each job's last handled fire, from the store; nil when it cannot be read.
    private func readLastFires() async -> [String: Date]? {
        do {
            var lastFires: [String: Date] = [:]
            for record in try await store.allJobStates() {
                if let last = record.lastScheduledAt { lastFires[record.name] = last }
            }
            return lastFires
        } catch {
            logger.warning("Metrics: cannot read the job states", metadata: ["error": "\(error)"])
            return nil
        }
    }

    private func updateJobs(
        _ jobs: [Job], fires: [String: (next: Date?, period: Int?)], paused: Set<String>, lastFires: [String: Date]
    ) {
        metrics.update(
            jobs: jobs.map { job in
                DaemonMetrics.JobFigures(
                    job: job.name, paused: paused.contains(job.name), nextFire: fires[job.name]?.next ?? nil,
                    periodSeconds: fires[job.name]?.period ?? nil, lastFire: lastFires[job.name])
            })
    }

    /// The image census, and each job's last success when it is to be seeded; nils when they cannot be read.
    private func readImages(now: Date, jobs: [Job], seedLastSuccess: Bool) async
        -> ([ImageCensusRow]?, [String: Date]?)
    {
        do {
            let census = try await store.imageCensus(notAfter: now)
            let lastSuccess = seedLastSuccess ? try await store.lastSuccessfulRunEnds(jobs: jobs.map(\.name)) : nil
            return (census, lastSuccess)
        } catch {
            logger.warning("Metrics: cannot read the image census", metadata: ["error": "\(error)"])
            return (nil, nil)
        }
    }
}

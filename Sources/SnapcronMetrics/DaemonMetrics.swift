import CoreMetrics
import Foundation
import NIOCore
import Prometheus
import SnapcronCore
import SnapshotBackend
import Synchronization

/// The daemon's metrics: counters the scheduler and the backends bump as things happen, per-job figures the
/// refresher sets, and the rendered exposition that scrapes are served from.
///
/// Scrapes never render: they take the last published exposition (``exposition``), which ``publish()`` replaces
/// (the refresher calls it at most once a second, and only after a change). With 10,000 jobs a rendering is about
/// 12 MB and tens of milliseconds; serving a published one costs a scrape only the copy to its socket.
public final class DaemonMetrics: SchedulerMetrics, Sendable {
    public let factory: SnapcronMetricsFactory
    /// Bumped by every change of a value; ``publish()`` renders only when it moved.
    private let changes = Atomic<UInt64>(1)
    private let publishedChanges = Atomic<UInt64>(0)
    private let storeDirty = Atomic<Bool>(true)
    private let published: Mutex<Exposition>
    private let renderBuffer = Mutex<[UInt8]>([])
    /// When a scrape last asked for gzip: publications compress only while someone wants it.
    private let gzipWantedAt = Mutex<ContinuousClock.Instant?>(nil)
    static let gzipInterest: Duration = .seconds(600)

    /// One rendering, plain and (when a scraper accepts it) gzip-encoded.
    public struct Exposition: Sendable {
        public var plain: ByteBuffer
        public var gzip: ByteBuffer?
    }
    private let series = Mutex<[String: JobSeries]>([:])
    /// (job, state) pairs with an image count shown, to drop the ones that went to zero.
    private let imageStates = Mutex<Set<ImageSeriesKey>>([])

    struct ImageSeriesKey: Hashable {
        var job: String
        var state: StoredImageState
    }

    /// One job's gauges, made once and set on every refresh.
    final class JobSeries: @unchecked Sendable {  // used only under `series`'s lock
        let paused: CoreMetrics.Gauge
        let period: CoreMetrics.Gauge
        let imageBytes: CoreMetrics.Gauge
        let activeImages: CoreMetrics.Gauge
        var nextFire: CoreMetrics.Gauge?
        var lastFire: CoreMetrics.Gauge?
        var lastSuccess: CoreMetrics.Gauge?
        var newestImage: CoreMetrics.Gauge?
        var periodShown = false

        init(job: String, factory: SnapcronMetricsFactory) {
            let dimensions = [("job", job)]
            // Counters that alerts take increase() of exist from the start, at 0: a series born at 1 shows no
            // increase, and the first failure of a job would go unseen.
            for state in MetricFamily.timedStates {
                Counter(
                    label: MetricFamily.runs.name, dimensions: [("job", job), ("state", state.rawValue)], factory: factory)
                    .increment(by: 0)
            }
            Counter(label: MetricFamily.retentionDeleted.name, dimensions: dimensions, factory: factory).increment(by: 0)
            paused = Gauge(label: MetricFamily.jobPaused.name, dimensions: dimensions, factory: factory)
            period = Gauge(label: MetricFamily.period.name, dimensions: dimensions, factory: factory)
            imageBytes = Gauge(label: MetricFamily.imageBytes.name, dimensions: dimensions, factory: factory)
            activeImages = Gauge(
                label: MetricFamily.images.name, dimensions: [("job", job), ("state", "active")], factory: factory)
        }
    }

    /// The figures of one job that the refresher sets; nil removes the series.
    public struct JobFigures: Sendable {
        public var job: String
        public var paused: Bool
        public var nextFire: Date?
        public var periodSeconds: Int?
        public var lastFire: Date?

        public init(job: String, paused: Bool, nextFire: Date?, periodSeconds: Int?, lastFire: Date?) {
            self.job = job
            self.paused = paused
            self.nextFire = nextFire
            self.periodSeconds = periodSeconds
            self.lastFire = lastFire
        }
    }

    public init(version: String, factory: SnapcronMetricsFactory = SnapcronMetricsFactory()) {
        self.factory = factory
        published = Mutex(Exposition(plain: ByteBuffer(), gzip: nil))
        Gauge(label: MetricFamily.up.name, factory: factory).record(1)
        Gauge(label: MetricFamily.buildInfo.name, dimensions: [("version", version)], factory: factory).record(1)
        // Families that may have no series yet still show their HELP and TYPE.
        publish()
    }

    // MARK: Events (SchedulerMetrics)

    public func runEnded(job: String, state: RunState, startedAt: Date?, endedAt: Date) {
        Counter(label: MetricFamily.runs.name, dimensions: [("job", job), ("state", state.rawValue)], factory: factory)
            .increment()
        if let startedAt, MetricFamily.timedStates.contains(state) {
            CoreMetrics.Timer(label: MetricFamily.runDuration.name, dimensions: [("job", job)], factory: factory)
                .recordSeconds(max(0, endedAt.timeIntervalSince(startedAt)))
        }
        // Whole seconds, as the store keeps them (the value read back after a restart is the same).
        if state == .succeeded { setLastSuccess(job: job, at: Date(timeIntervalSince1970: endedAt.timeIntervalSince1970.rounded(.down))) }
        storeDirty.store(true, ordering: .relaxed)
        changed()
    }

    public func imageDeleted(job: String) {
        Counter(label: MetricFamily.retentionDeleted.name, dimensions: [("job", job)], factory: factory).increment()
        storeDirty.store(true, ordering: .relaxed)
        changed()
    }

    public func storeChanged() { storeDirty.store(true, ordering: .relaxed) }

    /// One call to a backend and how it ended.
    public func backendRequest(backend: String, operation: String, outcome: BackendOutcome) {
        Counter(
            label: MetricFamily.backendRequests.name,
            dimensions: [("backend", backend), ("operation", operation), ("outcome", outcome.rawValue)],
            factory: factory
        ).increment()
        changed()
    }

    public enum BackendOutcome: String, Sendable {
        case ok
        case transientError = "transient_error"
        case permanentError = "permanent_error"

        public init(_ error: any Error) {
            self = (error as? SnapshotBackendError)?.isTransient == false ? .permanentError : .transientError
        }
    }

    // MARK: Figures (set by the refresher)

    /// Whether an event changed the store since the last call (and clears it).
    public func takeStoreDirty() -> Bool { storeDirty.exchange(false, ordering: .relaxed) }

    /// Sets every job's figures; the series of jobs not in `jobs` are removed.
    public func update(jobs: [JobFigures]) {
        Gauge(label: MetricFamily.jobs.name, factory: factory).record(jobs.count)
        let names = Set(jobs.map(\.job))
        let gone: [String] = series.withLock { all in
            for figures in jobs {
                let job = entry(figures.job, in: &all)
                job.paused.record(figures.paused ? 1 : 0)
                set(&job.nextFire, MetricFamily.nextFire, job: figures.job, figures.nextFire?.timeIntervalSince1970)
                set(&job.lastFire, MetricFamily.lastFire, job: figures.job, figures.lastFire?.timeIntervalSince1970)
                if let period = figures.periodSeconds {
                    job.period.record(period)
                    job.periodShown = true
                } else if job.periodShown {
                    job.period.destroy()
                    job.periodShown = false
                }
            }
            let gone = all.keys.filter { !names.contains($0) }
            for name in gone { all.removeValue(forKey: name) }
            return gone
        }
        for job in gone { removeSeries(of: job) }
        changed()
    }

    /// Sets the image counts, sizes and newest image times from a census of the store.
    public func update(census: [ImageCensusRow], lastSuccess: [String: Date]? = nil) {
        var counts: [ImageSeriesKey: Int] = [:]
        var bytes: [String: Int64] = [:]
        var newest: [String: Date] = [:]
        for row in census {
            counts[ImageSeriesKey(job: row.job, state: row.state), default: 0] += row.count
            if row.state == .active {
                bytes[row.job, default: 0] += row.bytes
                if let created = row.newestCreatedAt { newest[row.job] = max(newest[row.job] ?? created, created) }
            }
        }
        let shownStates: Set<StoredImageState> = [.queued, .saving, .deleting, .error]
        series.withLock { all in
            for (name, job) in all {
                job.activeImages.record(counts[ImageSeriesKey(job: name, state: .active)] ?? 0)
                job.imageBytes.record(bytes[name] ?? 0)
                set(&job.newestImage, MetricFamily.newestImage, job: name, newest[name]?.timeIntervalSince1970)
                if let lastSuccess, let date = lastSuccess[name] {
                    set(&job.lastSuccess, MetricFamily.lastSuccess, job: name, date.timeIntervalSince1970)
                }
            }
            let jobs = Set(all.keys)
            let current = Set(counts.filter { shownStates.contains($0.key.state) && jobs.contains($0.key.job) }.keys)
            imageStates.withLock { shown in
                for key in shown.subtracting(current) { imageGauge(key).destroy() }
                for key in current { imageGauge(key).record(counts[key] ?? 0) }
                shown = current
            }
        }
        changed()
    }

    // MARK: Exposition

    /// The last published exposition (Prometheus text format 0.0.4).
    public var exposition: ByteBuffer { published.withLock { $0.plain } }

    /// The last published exposition, gzip-encoded when `acceptsGzip` and one is ready (nil: send it plain).
    /// Asking for gzip makes the following publications compress for the next 10 minutes.
    public func exposition(acceptsGzip: Bool) -> (body: ByteBuffer, gzipped: Bool) {
        if acceptsGzip { gzipWantedAt.withLock { $0 = .now } }
        let current = published.withLock { $0 }
        if acceptsGzip {
            if let gzip = current.gzip { return (gzip, true) }
            changed()  // the next publication (within a second) compresses
        }
        return (current.plain, false)
    }

    /// Whether values changed since the last ``publish()``.
    public var hasUnpublishedChanges: Bool {
        changes.load(ordering: .relaxed) != publishedChanges.load(ordering: .relaxed)
    }

    /// Renders the registry and makes it what scrapes get.
    ///
    /// Renders into one buffer kept between publications (16 MB for 10,000 jobs: a fresh one each second, on
    /// whichever thread, left glibc holding hundreds of MB of freed arenas).
    public func publish() {
        let seen = changes.load(ordering: .relaxed)
        let wanted = gzipWantedAt.withLock { $0.map { ContinuousClock.now - $0 < Self.gzipInterest } ?? false }
        let exposition = renderBuffer.withLock { bytes in
            bytes.removeAll(keepingCapacity: true)
            factory.registry.emit(into: &bytes)
            return Exposition(plain: ByteBuffer(bytes: bytes), gzip: wanted ? Gzip.compress(bytes) : nil)
        }
        published.withLock { $0 = exposition }
        publishedChanges.store(seen, ordering: .relaxed)
    }

    // MARK: Helpers

    private func changed() { changes.add(1, ordering: .relaxed) }

    private func entry(_ job: String, in all: inout [String: JobSeries]) -> JobSeries {
        if let existing = all[job] { return existing }
        let made = JobSeries(job: job, factory: factory)
        all[job] = made
        return made
    }

    private func setLastSuccess(job: String, at date: Date) {
        series.withLock { all in
            let entry = entry(job, in: &all)
            set(&entry.lastSuccess, MetricFamily.lastSuccess, job: job, date.timeIntervalSince1970)
        }
    }

    /// Sets an optional gauge: made on its first value, removed when the value goes away.
    private func set(_ gauge: inout CoreMetrics.Gauge?, _ family: MetricFamily, job: String, _ value: Double?) {
        if let value {
            if gauge == nil { gauge = Gauge(label: family.name, dimensions: [("job", job)], factory: factory) }
            gauge?.record(value)
        } else if let existing = gauge {
            existing.destroy()
            gauge = nil
        }
    }

    private func imageGauge(_ key: ImageSeriesKey) -> CoreMetrics.Gauge {
        Gauge(label: MetricFamily.images.name, dimensions: [("job", key.job), ("state", key.state.rawValue)], factory: factory)
    }

    /// Drops every series of a job that left the schedule.
    private func removeSeries(of job: String) {
        let dimensions = [("job", job)]
        for family in [MetricFamily.jobPaused, .period, .imageBytes, .nextFire, .lastFire, .lastSuccess, .newestImage] {
            Gauge(label: family.name, dimensions: dimensions, factory: factory).destroy()
        }
        for state in StoredImageState.allCases {
            imageGauge(ImageSeriesKey(job: job, state: state)).destroy()
        }
        imageStates.withLock { shown in shown = shown.filter { $0.job != job } }
        for state in RunState.allCases {
            Counter(label: MetricFamily.runs.name, dimensions: [("job", job), ("state", state.rawValue)], factory: factory)
                .destroy()
        }
        CoreMetrics.Timer(label: MetricFamily.runDuration.name, dimensions: dimensions, factory: factory).destroy()
        Counter(label: MetricFamily.retentionDeleted.name, dimensions: dimensions, factory: factory).destroy()
    }
}

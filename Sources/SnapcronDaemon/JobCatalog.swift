import ControlProtocol
import CronExpression
import Foundation
import NIOConcurrencyHelpers
import SnapcronCore

/// The loaded jobs as the control socket shows them, rebuilt only when the schedule changes.
///
/// Read-only methods take it from here instead of asking the scheduler actor, so a flood of `jobs` calls never
/// queues in front of a fire. The daemon updates it on start and after each successful reload.
public final class JobCatalog: Sendable {
    /// One version of the schedule.
    public struct Snapshot: Sendable {
        /// Bumped on every update.
        public var revision: Int
        /// The jobs, sorted by name (without their schedule line's text: the catalog lives as long as the daemon).
        public var jobs: [Job]
        var indexByName: [String: Int]
        let infoCache: InfoCache

        /// `jobs` as shown by `jobs` (without `paused` and `nextFire`, which change at run time). Built on first
        /// use: descriptions of 100,000 jobs cost start-up time and memory that only a `jobs` call needs.
        public var infos: [JobInfo] { infoCache.infos(for: jobs) }

        /// The job named `name`.
        public func job(named name: String) -> Job? { indexByName[name].map { jobs[$0] } }
        /// The static part of the job's `JobInfo`.
        public func info(named name: String) -> JobInfo? { job(named: name).map(JobCatalog.info(for:)) }
    }

    /// The lazily built `infos` of one snapshot.
    final class InfoCache: Sendable {
        private let cached = NIOLockedValueBox<[JobInfo]?>(nil)

        func infos(for jobs: [Job]) -> [JobInfo] {
            cached.withLockedValue { value in
                if let value { return value }
                let built = jobs.map(JobCatalog.info(for:))
                value = built
                return built
            }
        }
    }

    private let state = NIOLockedValueBox(Snapshot(revision: 0, jobs: [], indexByName: [:], infoCache: InfoCache()))

    public init(jobs: [Job] = []) {
        update(jobs)
    }

    /// The current version.
    public var snapshot: Snapshot { state.withLockedValue { $0 } }

    /// Replaces the jobs (after a load or reload).
    public func update(_ jobs: [Job]) {
        let sorted = jobs.map(\.withoutSourceText).sorted { $0.name < $1.name }
        let index = Dictionary(sorted.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        state.withLockedValue { current in
            current = Snapshot(
                revision: current.revision + 1, jobs: sorted, indexByName: index, infoCache: InfoCache())
        }
    }

    static func info(for job: Job) -> JobInfo {
        JobInfo(
            name: job.name, expression: job.expressionText, normalized: job.expression.normalized,
            description: job.expression.englishDescription, zone: job.zone.identifier, backend: job.backend,
            target: job.target, options: job.options.scheduleText, paused: job.options.paused, nextFire: nil,
            line: job.location.number)
    }
}

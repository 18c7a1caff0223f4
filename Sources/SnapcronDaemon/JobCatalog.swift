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
        /// The jobs, sorted by name.
        public var jobs: [Job]
        /// `jobs` as shown by `jobs` (without `paused` and `nextFire`, which change at run time).
        public var infos: [JobInfo]
        var indexByName: [String: Int]

        /// The job named `name`.
        public func job(named name: String) -> Job? { indexByName[name].map { jobs[$0] } }
        /// The static part of the job's `JobInfo`.
        public func info(named name: String) -> JobInfo? { indexByName[name].map { infos[$0] } }
    }

    private let state = NIOLockedValueBox(Snapshot(revision: 0, jobs: [], infos: [], indexByName: [:]))

    public init(jobs: [Job] = []) {
        update(jobs)
    }

    /// The current version.
    public var snapshot: Snapshot { state.withLockedValue { $0 } }

    /// Replaces the jobs (after a load or reload).
    public func update(_ jobs: [Job]) {
        let sorted = jobs.sorted { $0.name < $1.name }
        let infos = sorted.map(Self.info(for:))
        let index = Dictionary(sorted.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
        state.withLockedValue { current in
            current = Snapshot(revision: current.revision + 1, jobs: sorted, infos: infos, indexByName: index)
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

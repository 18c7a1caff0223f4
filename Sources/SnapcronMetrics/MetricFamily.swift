import SnapcronCore

/// Every metric snapcrond exports: one table of names, help texts and histogram buckets (docs/metrics.md).
///
/// Code records through swift-metrics (`Counter`, `Gauge`, `Timer`) with the label `MetricFamily.x.name`;
/// ``SnapcronMetricsFactory`` looks the family up here to register it with its help text and buckets.
public enum MetricFamily: String, CaseIterable, Sendable {
    case up = "snapcron_up"
    case buildInfo = "snapcron_build_info"
    case jobs = "snapcron_jobs"
    case jobPaused = "snapcron_job_paused"
    case nextFire = "snapcron_job_next_fire_timestamp_seconds"
    case lastFire = "snapcron_job_last_fire_timestamp_seconds"
    case lastSuccess = "snapcron_job_last_success_timestamp_seconds"
    case newestImage = "snapcron_job_newest_image_timestamp_seconds"
    case period = "snapcron_job_period_seconds"
    case runs = "snapcron_runs_total"
    case runDuration = "snapcron_run_duration_seconds"
    case images = "snapcron_images"
    case imageBytes = "snapcron_image_bytes"
    case retentionDeleted = "snapcron_retention_deleted_total"
    case backendRequests = "snapcron_backend_requests_total"

    public var name: String { rawValue }

    public var help: String {
        switch self {
        case .up: "1 while snapcrond serves metrics."
        case .buildInfo: "Always 1; the version of snapcrond in a label."
        case .jobs: "Jobs in the loaded schedule."
        case .jobPaused: "1 when the job is paused, else 0."
        case .nextFire: "Unix time of the job's next fire (absent when it never fires again)."
        case .lastFire: "Unix time of the last fire handled (its scheduled time)."
        case .lastSuccess: "Unix time at which the job's last succeeded run ended."
        case .newestImage: "Creation time of the job's newest ACTIVE image."
        case .period: "Longest gap between the job's next 8 fires: how old its newest image may normally get."
        case .runs: "Runs that reached a final state since snapcrond started, by state."
        case .runDuration: "Seconds from a run's first create call to its end (succeeded, failed, timed_out)."
        case .images: "Images snapcron keeps a record of and has not deleted, by state."
        case .imageBytes: "Total size of the job's ACTIVE images, in bytes (as far as the backend reports sizes)."
        case .retentionDeleted: "Images snapcron deleted (retention, or an operator's prune) since it started."
        case .backendRequests: "Calls snapcron made to its backends, by operation and outcome."
        }
    }

    /// Image creation takes seconds (a local reflink) to hours (a cloud's large disk).
    static let runDurationBuckets: [Duration] = [10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400]
        .map { .seconds($0) }

    /// The states whose runs have a duration (they started a create and ended with or without an image); their
    /// `snapcron_runs_total` series exist from the start, at 0.
    static let timedStates: [RunState] = [.succeeded, .failed, .timedOut]
}

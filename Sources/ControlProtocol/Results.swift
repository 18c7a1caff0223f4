import Foundation

/// The version of snapcron, reported by `status`.
public enum SnapcronVersion {
    public static let current = "0.1.0"
}

/// `status`: how the daemon is doing, in one object.
public struct StatusResult: Codable, Sendable, Hashable {
    public var version: String
    public var pid: Int32
    public var startedAt: Date
    public var uptimeSeconds: Int
    public var schedulePath: String
    public var jobs: Int
    public var pausedJobs: [String]
    public var running: [RunningRunInfo]
    public var nextFire: NextFireInfo?
    public var lastFailure: RunInfo?
    public var store: StoreHealthInfo
    /// The daemons sharing the store (cluster mode); absent for a daemon on its own SQLite store.
    public var nodes: [ClusterNodeInfo]?

    public init(
        version: String, pid: Int32, startedAt: Date, uptimeSeconds: Int, schedulePath: String, jobs: Int,
        pausedJobs: [String], running: [RunningRunInfo], nextFire: NextFireInfo?, lastFailure: RunInfo?,
        store: StoreHealthInfo, nodes: [ClusterNodeInfo]? = nil
    ) {
        self.nodes = nodes
        self.version = version
        self.pid = pid
        self.startedAt = startedAt
        self.uptimeSeconds = uptimeSeconds
        self.schedulePath = schedulePath
        self.jobs = jobs
        self.pausedJobs = pausedJobs
        self.running = running
        self.nextFire = nextFire
        self.lastFailure = lastFailure
        self.store = store
    }
}

/// One daemon of a cluster, in `status`.
public struct ClusterNodeInfo: Codable, Sendable, Hashable {
    public var name: String
    public var host: String
    public var pid: Int32
    public var version: String
    public var lastSeen: Date
    /// False once its lease lapsed: the other nodes take its unfinished runs.
    public var leaseLive: Bool
    public var runsHeld: Int
    /// The node that answered.
    public var isSelf: Bool

    public init(
        name: String, host: String, pid: Int32, version: String, lastSeen: Date, leaseLive: Bool, runsHeld: Int,
        isSelf: Bool
    ) {
        self.name = name
        self.host = host
        self.pid = pid
        self.version = version
        self.lastSeen = lastSeen
        self.leaseLive = leaseLive
        self.runsHeld = runsHeld
        self.isSelf = isSelf
    }
}

/// A run the scheduler is driving now.
public struct RunningRunInfo: Codable, Sendable, Hashable {
    public var id: Int64
    public var job: String
    /// queued (waiting for a slot), create-pending, creating, waiting (polling the image).
    public var phase: String
    public var imageId: String?
    public var startedAt: Date?

    public init(id: Int64, job: String, phase: String, imageId: String?, startedAt: Date?) {
        self.id = id
        self.job = job
        self.phase = phase
        self.imageId = imageId
        self.startedAt = startedAt
    }
}

/// The next fire of the whole schedule.
public struct NextFireInfo: Codable, Sendable, Hashable {
    public var job: String
    public var at: Date
    public init(job: String, at: Date) {
        self.job = job
        self.at = at
    }
}

/// The store's `quick_check`.
public struct StoreHealthInfo: Codable, Sendable, Hashable {
    public var ok: Bool
    public var message: String
    public init(ok: Bool, message: String) {
        self.ok = ok
        self.message = message
    }
}

/// One job of the schedule.
public struct JobInfo: Codable, Sendable, Hashable {
    public var name: String
    public var expression: String
    public var normalized: String
    public var description: String
    public var zone: String
    public var backend: String
    public var target: String
    /// Retention rules and options that differ from the defaults, e.g. `keep=7 timeout=30m`.
    public var options: String
    public var paused: Bool
    public var nextFire: Date?
    /// The line of the schedule file that defines the job.
    public var line: Int

    public init(
        name: String, expression: String, normalized: String, description: String, zone: String, backend: String,
        target: String, options: String, paused: Bool, nextFire: Date?, line: Int
    ) {
        self.name = name
        self.expression = expression
        self.normalized = normalized
        self.description = description
        self.zone = zone
        self.backend = backend
        self.target = target
        self.options = options
        self.paused = paused
        self.nextFire = nextFire
        self.line = line
    }
}

/// `jobs`: every job, by name.
public struct JobsResult: Codable, Sendable, Hashable {
    public var jobs: [JobInfo]
    public init(jobs: [JobInfo]) { self.jobs = jobs }
}

/// `job`: one job with its last fire, recent runs and images.
public struct JobDetailResult: Codable, Sendable, Hashable {
    public var job: JobInfo
    public var lastFire: Date?
    public var recentRuns: [RunInfo]
    public var images: Int
    public var newestActive: ImageInfo?

    public init(job: JobInfo, lastFire: Date?, recentRuns: [RunInfo], images: Int, newestActive: ImageInfo?) {
        self.job = job
        self.lastFire = lastFire
        self.recentRuns = recentRuns
        self.images = images
        self.newestActive = newestActive
    }
}

/// `next`: the normalized expression, its description and its next fires.
public struct NextResult: Codable, Sendable, Hashable {
    public var job: String?
    public var expression: String
    public var normalized: String
    public var description: String
    public var zone: String
    public var fires: [Date]

    public init(job: String?, expression: String, normalized: String, description: String, zone: String, fires: [Date])
    {
        self.job = job
        self.expression = expression
        self.normalized = normalized
        self.description = description
        self.zone = zone
        self.fires = fires
    }
}

/// One run (a fire of a job), as recorded in the store.
public struct RunInfo: Codable, Sendable, Hashable {
    public var id: Int64
    public var job: String
    public var scheduledAt: Date
    /// schedule, catch-up or manual.
    public var trigger: String
    /// claimed, creating, waiting, succeeded, failed, timed_out, missed, skipped, cancelled.
    public var state: String
    public var attempts: Int
    public var imageName: String?
    public var imageId: String?
    /// The image's state at the backend as last seen: queued, saving, active, error, gone, deleted.
    public var imageState: String?
    public var target: String?
    public var claimedAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    public var error: String?
    /// The run's hook commands in the order they ended (only with `verbose`).
    public var hooks: [HookInfo]?

    public init(
        id: Int64, job: String, scheduledAt: Date, trigger: String, state: String, attempts: Int, imageName: String?,
        imageId: String?, imageState: String?, target: String?, claimedAt: Date, startedAt: Date?, finishedAt: Date?,
        error: String?
    ) {
        self.id = id
        self.job = job
        self.scheduledAt = scheduledAt
        self.trigger = trigger
        self.state = state
        self.attempts = attempts
        self.imageName = imageName
        self.imageId = imageId
        self.imageState = imageState
        self.target = target
        self.claimedAt = claimedAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.error = error
    }

    /// Whether the run reached a final state.
    public var isFinished: Bool { !["claimed", "creating", "waiting"].contains(state) }
}

/// `history`: runs, newest fire first.
/// One hook command of a run: `pre`, `post`, `success` or `failure`, and how it ended.
public struct HookInfo: Codable, Sendable, Hashable {
    public var phase: String
    public var hookSet: String
    /// `exit 0`, `exit 3`, `timed out`, `stopped: the daemon is stopping`, `killed by signal 9`, `not started: ...`.
    public var result: String
    public var exitStatus: Int32?
    public var durationMs: Int
    public var finishedAt: Date

    public init(phase: String, hookSet: String, result: String, exitStatus: Int32?, durationMs: Int, finishedAt: Date) {
        self.phase = phase
        self.hookSet = hookSet
        self.result = result
        self.exitStatus = exitStatus
        self.durationMs = durationMs
        self.finishedAt = finishedAt
    }
}

public struct HistoryResult: Codable, Sendable, Hashable {
    public var runs: [RunInfo]
    public init(runs: [RunInfo]) { self.runs = runs }
}

/// One image snapcron made, with what the current retention plan says about it.
public struct ImageInfo: Codable, Sendable, Hashable {
    public var id: String
    public var name: String
    public var job: String
    public var backend: String
    public var createdAt: Date
    public var state: String
    public var sizeBytes: Int64?
    public var pinned: Bool
    /// Why retention keeps the image now (e.g. `newest 7 (keep=7)`, `pinned`); nil when it would delete it.
    public var keptBy: String?
    /// Why retention would delete the image at the next pass; nil when it keeps it.
    public var pruneReason: String?

    public init(
        id: String, name: String, job: String, backend: String, createdAt: Date, state: String, sizeBytes: Int64?,
        pinned: Bool, keptBy: String?, pruneReason: String?
    ) {
        self.id = id
        self.name = name
        self.job = job
        self.backend = backend
        self.createdAt = createdAt
        self.state = state
        self.sizeBytes = sizeBytes
        self.pinned = pinned
        self.keptBy = keptBy
        self.pruneReason = pruneReason
    }
}

/// `images`: a job's images, newest first (deleted ones left out).
public struct ImagesResult: Codable, Sendable, Hashable {
    public var job: String
    public var images: [ImageInfo]
    public init(job: String, images: [ImageInfo]) {
        self.job = job
        self.images = images
    }
}

/// `freshness`: per job, the newest ACTIVE image and the schedule's period, for `snapcronctl monitor`.
public struct FreshnessResult: Codable, Sendable, Hashable {
    public struct Entry: Codable, Sendable, Hashable {
        public var job: String
        public var newestActive: Date?
        /// The longest gap between the job's next fires, in seconds; nil when it never fires again.
        public var periodSeconds: Int?
        public var paused: Bool
        /// The latest fire the scheduler handled; nil for a job that never fired.
        public var lastFire: Date?

        public init(job: String, newestActive: Date?, periodSeconds: Int?, paused: Bool, lastFire: Date?) {
            self.job = job
            self.newestActive = newestActive
            self.periodSeconds = periodSeconds
            self.paused = paused
            self.lastFire = lastFire
        }
    }

    public var now: Date
    public var jobs: [Entry]
    public init(now: Date, jobs: [Entry]) {
        self.now = now
        self.jobs = jobs
    }
}

/// `trigger`: the run that was started.
public struct TriggerResult: Codable, Sendable, Hashable {
    public var runId: Int64
    public var job: String
    public var scheduledAt: Date
    public var state: String
    public init(runId: Int64, job: String, scheduledAt: Date, state: String) {
        self.runId = runId
        self.job = job
        self.scheduledAt = scheduledAt
        self.state = state
    }
}

/// `pause` / `resume`: the job's new state (persisted).
public struct PauseResult: Codable, Sendable, Hashable {
    public var job: String
    public var paused: Bool
    public init(job: String, paused: Bool) {
        self.job = job
        self.paused = paused
    }
}

/// A schedule error or warning with its line and column.
public struct DiagnosticInfo: Codable, Sendable, Hashable {
    public var file: String
    public var line: Int?
    public var column: Int?
    /// error, warning or note.
    public var severity: String
    public var message: String
    public var note: String?
    /// The diagnostic as a compiler prints it: header, source line, caret.
    public var rendered: String

    public init(
        file: String, line: Int?, column: Int?, severity: String, message: String, note: String?, rendered: String
    ) {
        self.file = file
        self.line = line
        self.column = column
        self.severity = severity
        self.message = message
        self.note = note
        self.rendered = rendered
    }
}

/// `reload`: the schedule now live (errors come back as an `invalidSchedule` error instead).
public struct ReloadResult: Codable, Sendable, Hashable {
    public var jobs: Int
    public var warnings: [DiagnosticInfo]
    public init(jobs: Int, warnings: [DiagnosticInfo]) {
        self.jobs = jobs
        self.warnings = warnings
    }
}

/// `check`: whether schedule text is valid, with every error and warning.
public struct CheckResult: Codable, Sendable, Hashable {
    public var valid: Bool
    public var jobs: Int
    public var errors: [DiagnosticInfo]
    public var warnings: [DiagnosticInfo]
    public init(valid: Bool, jobs: Int, errors: [DiagnosticInfo], warnings: [DiagnosticInfo]) {
        self.valid = valid
        self.jobs = jobs
        self.errors = errors
        self.warnings = warnings
    }
}

/// `prune`: the retention plan with a reason per image, and what is being deleted.
public struct PruneResult: Codable, Sendable, Hashable {
    public struct Decision: Codable, Sendable, Hashable {
        public var id: String
        public var createdAt: Date
        public var state: String
        /// keep or delete.
        public var action: String
        public var reasons: [String]
        public init(id: String, createdAt: Date, state: String, action: String, reasons: [String]) {
            self.id = id
            self.createdAt = createdAt
            self.state = state
            self.action = action
            self.reasons = reasons
        }
    }

    public var job: String
    public var dryRun: Bool
    /// The retention rules, e.g. `keep=7 keep-daily=14`.
    public var policy: String
    public var decisions: [Decision]
    /// Ids whose deletion was started (empty for a dry run).
    public var deleting: [String]

    public init(job: String, dryRun: Bool, policy: String, decisions: [Decision], deleting: [String]) {
        self.job = job
        self.dryRun = dryRun
        self.policy = policy
        self.decisions = decisions
        self.deleting = deleting
    }
}

/// An image of a (job, backend, target) that no job of the schedule images now: the job was pointed at another
/// target, or left the schedule. Retention leaves it alone; only `prune_orphans` deletes it.
public struct OrphanedImageInfo: Codable, Sendable, Hashable {
    public var job: String
    public var backend: String
    public var target: String
    public var id: String
    public var name: String
    public var createdAt: Date
    public var state: String
    public var pinned: Bool
    /// Why it is an orphan, e.g. `job db now images local:/vm2.img` or `no job db in the schedule`.
    public var reason: String

    public init(
        job: String, backend: String, target: String, id: String, name: String, createdAt: Date, state: String,
        pinned: Bool, reason: String
    ) {
        self.job = job
        self.backend = backend
        self.target = target
        self.id = id
        self.name = name
        self.createdAt = createdAt
        self.state = state
        self.pinned = pinned
        self.reason = reason
    }
}

/// `orphans`: every orphaned image (deleted ones left out).
public struct OrphansResult: Codable, Sendable, Hashable {
    public var images: [OrphanedImageInfo]
    public init(images: [OrphanedImageInfo]) { self.images = images }
}

/// `prune_orphans`: the orphaned images deleted, or with `dry_run` those that would be; never a pinned one, one not
/// active, or the newest active one of each old (job, backend, target).
public struct PruneOrphansResult: Codable, Sendable, Hashable {
    public struct Deletion: Codable, Sendable, Hashable {
        public var job: String
        public var backend: String
        public var target: String
        public var id: String
        public var name: String
        public var createdAt: Date
        /// The image's state in the store after the call: `deleted`, or still `active` for a dry run or a delete
        /// the backend refused (the journal says why).
        public var state: String
        /// Always `delete`, as in `prune`.
        public var action: String
        /// Why the image is an orphan.
        public var reason: String

        public init(
            job: String, backend: String, target: String, id: String, name: String, createdAt: Date, state: String,
            action: String, reason: String
        ) {
            self.job = job
            self.backend = backend
            self.target = target
            self.id = id
            self.name = name
            self.createdAt = createdAt
            self.state = state
            self.action = action
            self.reason = reason
        }
    }

    public var dryRun: Bool
    public var images: [Deletion]
    public init(dryRun: Bool, images: [Deletion]) {
        self.dryRun = dryRun
        self.images = images
    }
}

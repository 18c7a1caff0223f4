import Foundation

/// The lifecycle state of a run (one fire of one job).
///
/// `claimed` → `creating` → `waiting` → `succeeded` | `failed` | `timed_out`; `missed`, `skipped` and
/// `cancelled` are terminal too. ``allowsTransition(to:)`` is the one place that says what may follow what.
public enum RunState: String, Sendable, CaseIterable, Codable {
    /// The fire is claimed and an image name chosen; create not started, or waiting to be retried.
    case claimed
    /// A create request is (or may be) in flight at the backend.
    case creating
    /// The backend returned an image id; the image is polled until it reaches a final state.
    case waiting
    /// The image reached ACTIVE.
    case succeeded
    /// The create failed permanently, or the image ended in error.
    case failed
    /// The image did not reach a final state within the job's timeout.
    case timedOut = "timed_out"
    /// The fire was not run: the daemon was down past the job's deadline.
    case missed
    /// The fire was not run because of the overlap policy.
    case skipped
    /// The run was stopped by an operator.
    case cancelled

    /// The states a resumed daemon must pick up again.
    public static let unfinished: [RunState] = [.claimed, .creating, .waiting]

    /// Whether no further transition is allowed.
    public var isTerminal: Bool { !Self.unfinished.contains(self) }

    /// Whether a run in this state may move to `next`.
    public func allowsTransition(to next: RunState) -> Bool {
        switch self {
        case .claimed:
            // claimed → timed_out: a run waiting for its retry (or for a create slot) when its timeout passes.
            [.creating, .failed, .timedOut, .missed, .skipped, .cancelled].contains(next)
        case .creating:
            // creating → creating: a create resumed after a crash (same image name);
            // creating → claimed: a transient failure waiting for its retry.
            [.creating, .claimed, .waiting, .failed, .timedOut, .cancelled].contains(next)
        case .waiting:
            [.waiting, .succeeded, .failed, .timedOut, .cancelled].contains(next)
        case .succeeded, .failed, .timedOut, .missed, .skipped, .cancelled:
            false
        }
    }
}

/// What caused a run.
public enum RunTrigger: String, Sendable, CaseIterable, Codable {
    /// A regular fire of the job's schedule.
    case schedule
    /// The latest fire missed while the daemon was down, run late within the deadline.
    case catchUp = "catch-up"
    /// An operator's `snapcronctl trigger`; its scheduled time is the trigger instant.
    case manual
}

/// The state of an image as last seen at its backend, or `deleted` once snapcron removed it.
public enum StoredImageState: String, Sendable, CaseIterable, Codable {
    case queued
    case saving
    case active
    case error
    /// The backend no longer knows the image (removed outside snapcron).
    case gone
    /// snapcron is deleting the image at its backend: it cannot be pinned meanwhile, and only a finished delete
    /// (deleted) or a refused one (back to active) moves it on.
    case deleting
    /// snapcron deleted the image (see `deleteReason`).
    case deleted
}

/// One row of `runs`: a claimed, finished or skipped fire of a job.
public struct RunRecord: Sendable, Hashable, Codable {
    public var id: Int64
    public var job: String
    /// The fire time (UTC, whole seconds); the trigger instant for manual runs.
    public var scheduledAt: Date
    public var trigger: RunTrigger
    public var state: RunState
    /// Create attempts started so far.
    public var attempts: Int
    /// The image name chosen at claim time, reused by every create attempt; nil for missed or skipped fires.
    public var imageName: String?
    /// The backend's image id once create returned one.
    public var imageID: String?
    public var backend: String?
    public var target: String?
    /// When the fire was claimed (or recorded as missed or skipped).
    public var claimedAt: Date
    /// When the first create attempt started.
    public var startedAt: Date?
    public var finishedAt: Date?
    /// When to poll the image next (`waiting`) or retry the create (`claimed` after a transient failure).
    public var nextPollAt: Date?
    /// Why the run failed, was skipped or missed, or the last transient error.
    public var error: String?
    /// How many fires this row stands for: consecutive skips of a job for one reason share one row.
    public var repeatCount: Int = 1
    /// The latest fire a shared skipped row stands for (its first is ``scheduledAt``); nil for a single fire.
    public var repeatedUntil: Date?

    public init(
        id: Int64, job: String, scheduledAt: Date, trigger: RunTrigger, state: RunState, attempts: Int, imageName: String?, imageID: String?, backend: String?, target: String?, claimedAt: Date, startedAt: Date?, finishedAt: Date?, nextPollAt: Date?, error: String?, repeatCount: Int = 1, repeatedUntil: Date? = nil
    ) {
        self.id = id
        self.job = job
        self.scheduledAt = scheduledAt
        self.trigger = trigger
        self.state = state
        self.attempts = attempts
        self.imageName = imageName
        self.imageID = imageID
        self.backend = backend
        self.target = target
        self.claimedAt = claimedAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.nextPollAt = nextPollAt
        self.error = error
        self.repeatCount = repeatCount
        self.repeatedUntil = repeatedUntil
    }
}

/// One row of `images`: an image snapcron created, keyed by backend and backend image id.
public struct ImageRecord: Sendable, Hashable, Codable {
    /// The backend's image id.
    public var id: String
    public var backend: String
    public var job: String
    public var target: String
    public var name: String
    public var description: String?
    public var createdAt: Date
    public var state: StoredImageState
    public var sizeBytes: Int64?
    /// Pinned images are never deleted by retention.
    public var pinned: Bool
    public var deletedAt: Date?
    /// The run that created the image.
    public var runID: Int64?
    /// Why the last retention pass kept the image.
    public var keepReason: String?
    /// Why retention deleted (or decided to delete) the image.
    public var deleteReason: String?

    /// The image's key.
    public var key: ImageKey { ImageKey(id: id, backend: backend) }

    /// Why retention may not decide to delete this image (pinned, deleted, being deleted), or nil when it may.
    public var deleteRefusal: String? {
        if pinned { return "it is pinned" }
        switch state {
        case .deleted: return "it is already deleted"
        case .deleting: return "it is being deleted"
        default: return nil
        }
    }

    public init(
        id: String, backend: String, job: String, target: String, name: String, description: String?, createdAt: Date, state: StoredImageState, sizeBytes: Int64?, pinned: Bool, deletedAt: Date?, runID: Int64?, keepReason: String?, deleteReason: String?
    ) {
        self.id = id
        self.backend = backend
        self.job = job
        self.target = target
        self.name = name
        self.description = description
        self.createdAt = createdAt
        self.state = state
        self.sizeBytes = sizeBytes
        self.pinned = pinned
        self.deletedAt = deletedAt
        self.runID = runID
        self.keepReason = keepReason
        self.deleteReason = deleteReason
    }
}

/// Identifies an image: backend image ids are unique only within one backend.
public struct ImageKey: Sendable, Hashable, Codable {
    public var id: String
    public var backend: String

    public init(id: String, backend: String) {
        self.id = id
        self.backend = backend
    }
}

/// An image found at a backend (by its name or snapcron's marker) that the store did not know, such as one
/// whose create reply was lost.
public struct FoundImage: Sendable, Hashable {
    /// The backend's image id.
    public var id: String
    public var backend: String
    public var job: String
    public var target: String
    public var name: String
    public var description: String?
    public var createdAt: Date
    /// As seen at the backend; never `deleted` or `deleting`.
    public var state: StoredImageState
    public var sizeBytes: Int64?

    public init(
        id: String, backend: String, job: String, target: String, name: String, description: String?,
        createdAt: Date, state: StoredImageState, sizeBytes: Int64?
    ) {
        self.id = id
        self.backend = backend
        self.job = job
        self.target = target
        self.name = name
        self.description = description
        self.createdAt = createdAt
        self.state = state
        self.sizeBytes = sizeBytes
    }
}

/// A (job, backend, target) that still has images not deleted, with how many.
public struct ImageTarget: Sendable, Hashable {
    public var job: String
    public var backend: String
    public var target: String
    /// Images of this job at this backend and target that are not deleted.
    public var count: Int

    public init(job: String, backend: String, target: String, count: Int) {
        self.job = job
        self.backend = backend
        self.target = target
        self.count = count
    }
}

/// What ``SnapcronDatabase/pruneHistory(olderThan:)`` removed.
public struct HistoryPruneResult: Sendable, Hashable {
    /// Finished runs removed.
    public var runs: Int
    /// Deleted or gone images removed.
    public var images: Int

    public init(runs: Int, images: Int) {
        self.runs = runs
        self.images = images
    }
}

/// A retention verdict for one image, with the reason shown by `snapcronctl prune --dry-run`.
public enum RetentionDecision: Sendable, Hashable {
    case keep(reason: String)
    case delete(reason: String)
}

/// One row of `jobs`: the per-job state that must survive restarts.
public struct JobStateRecord: Sendable, Hashable, Codable {
    public var name: String
    public var paused: Bool
    /// The latest scheduled or catch-up fire the scheduler has handled (claimed, missed or skipped).
    public var lastScheduledAt: Date?
    public var updatedAt: Date

    public init(
        name: String, paused: Bool, lastScheduledAt: Date?, updatedAt: Date
    ) {
        self.name = name
        self.paused = paused
        self.lastScheduledAt = lastScheduledAt
        self.updatedAt = updatedAt
    }
}

/// The outcome of ``SnapcronDatabase/healthCheck()``.
public struct StoreHealth: Sendable, Hashable {
    /// Whether `PRAGMA quick_check` reported no problem.
    public var isOK: Bool
    /// `ok`, or the problems SQLite found.
    public var message: String

    public init(isOK: Bool, message: String) {
        self.isOK = isOK
        self.message = message
    }
}

/// How many images of one job are in one state, and their size: what the metrics show of the store.
public struct ImageCensusRow: Sendable, Hashable {
    public var job: String
    public var state: StoredImageState
    public var count: Int
    /// The sum of the known sizes.
    public var bytes: Int64
    /// The newest creation time not after the census's `now` (an image made while the clock was ahead does not
    /// make its job look fresh).
    public var newestCreatedAt: Date?

    public init(job: String, state: StoredImageState, count: Int, bytes: Int64, newestCreatedAt: Date?) {
        self.job = job
        self.state = state
        self.count = count
        self.bytes = bytes
        self.newestCreatedAt = newestCreatedAt
    }
}

extension RunState {
    /// The state a run's image takes when the run ends in this state: active after a success, error after a
    /// failure; nil leaves it as last polled (timed_out and cancelled: it may still become active). Both stores
    /// apply it only to an image not gone, being deleted or deleted.
    public var imageStateWhenRunEnds: StoredImageState? {
        switch self {
        case .succeeded: .active
        case .failed: .error
        default: nil
        }
    }
}

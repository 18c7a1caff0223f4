import Foundation
import SnapshotBackend

/// How much backend work may run at once.
///
/// Two different limits: create *calls* are short and hammer an API, so each backend runs only a few at a time;
/// images that are created but not yet final may be many (a cloud bakes them on its own), limited only where the
/// provider has a quota.
public struct ConcurrencyLimits: Sendable, Hashable {
    /// Create calls in flight per backend, unless `createCallsPerBackend` says otherwise.
    public var createCalls: Int
    public var createCallsPerBackend: [String: Int]
    /// Images created and not yet final per backend (a provider's quota); a backend not listed has no limit.
    public var unfinishedImagesPerBackend: [String: Int]

    public init(
        createCalls: Int = 4, createCallsPerBackend: [String: Int] = [:],
        unfinishedImagesPerBackend: [String: Int] = [:]
    ) {
        self.createCalls = max(1, createCalls)
        self.createCallsPerBackend = createCallsPerBackend.mapValues { max(1, $0) }
        self.unfinishedImagesPerBackend = unfinishedImagesPerBackend.mapValues { max(1, $0) }
    }

    func createCalls(for backend: String) -> Int { createCallsPerBackend[backend] ?? createCalls }
    func unfinishedImages(for backend: String) -> Int { unfinishedImagesPerBackend[backend] ?? Int.max }
}

/// Poll, retry and upkeep pacing of the run engine.
public struct RunPacing: Sendable, Hashable {
    /// First status poll after a create that did not say `active`; doubles up to `maxPollInterval`.
    public var firstPollInterval: TimeInterval = 2
    public var maxPollInterval: TimeInterval = 60
    /// A poll pass of a backend also takes the images due within this share of their interval, so images created
    /// close together are answered by one batched call.
    public var pollCoalescing: Double = 0.5
    /// At most one poll pass per backend this often: a large fleet's images, created one after another, would
    /// otherwise each want a pass of their own; a batched pass answers them all at the same cost.
    public var pollPassGap: TimeInterval = 5
    /// Back-off of a retried create: `retryBase * 2^(attempt-1)` with ±25 % jitter, at most `retryMax`.
    public var retryBase: TimeInterval = 15
    public var retryMax: TimeInterval = 900
    /// A fire this much after it was due is recorded as a catch-up rather than an on-time run.
    public var lateness: TimeInterval = 60
    /// After downtime, at most this many older missed fires of one job get a row each.
    public var maxMissedRowsPerJob = 100
    /// A claim the store could not take (down, restarting, failing over) is sent again this long after, until
    /// the fire's deadline passes: no fire is lost to a store outage shorter than its deadline.
    public var claimRetryInterval: TimeInterval = 5
    /// How often images left `queued`/`saving` by a run that gave up are looked at again.
    public var unfinishedImageInterval: TimeInterval = 900
    /// How often each backend is listed for marked images the store does not know (a create whose reply was lost).
    public var sweepInterval: TimeInterval = 6 * 3600
    /// The sweep also lists the targets of runs that ended without an image this far back (their create may
    /// have made one), even when no job uses those targets any more.
    public var sweepLookback: TimeInterval = 3 * 86_400
    /// The first sweep after a start, late enough that start-up stays quick.
    public var firstSweepDelay: TimeInterval = 300
    /// How long finished runs and deleted images stay in the history (`history_keep`).
    public var historyKeep: TimeInterval = 400 * 86_400
    public var historyPruneInterval: TimeInterval = 86_400
    /// Retention passes running at once (all jobs): a fleet whose runs end together queues the rest, so neither
    /// the backends' APIs nor the daemon's memory take a thousand passes at a time.
    public var maxConcurrentRetentions = 8
    /// Backend calls outside a run's timeout (deletes, lists, late polls) are cut after this long.
    public var backendCallTimeout: TimeInterval = 600
    /// A wall clock moving back by more than this is a clock step.
    public var clockStepTolerance: TimeInterval = 60

    public init() {}
}

/// Why a request to the scheduler was refused; `code` maps once to the control protocol's error codes.
public struct SchedulerError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        public var name: String
        private init(_ name: String) { self.name = name }
        /// No job, run or image of that name.
        public static let notFound = Code("not-found")
        /// The request conflicts with the state (a busy target, a fire already run, an image being deleted).
        public static let conflict = Code("conflict")
        /// The store failed.
        public static let storeFailure = Code("store-failure")
        public var description: String { name }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// A run the engine follows.
struct EngineRun {
    var id: Int64
    var job: String
    var backend: String
    var target: String
    var scheduledAt: Date
    var trigger: RunTrigger
    var imageName: String
    var timeout: TimeInterval
    var retries: Int
    /// How late the run may still start (nil: no limit, e.g. a manual run).
    var startBy: Date?
    var attempts: Int
    var phase: Phase
    var startedAt: Date?
    var pollInterval: TimeInterval
    var imageID: String?
    var lastSeen: ImageState?
    /// Counted in the backend's unfinished images (from its first create until its image is final).
    var holdsQuota = false
    /// Resumed after a restart within its timeout: the backend picks the image up before the first poll.
    var resumesAfterRestart = false
    /// The timeout passed: the next poll is the last.
    var finalPoll = false
    /// Taken over from another daemon of a cluster: that one may have made its image already.
    var takenOver = false

    enum Phase: Equatable {
        /// Waiting for the backend's quota or a create slot.
        case queued
        /// A transient create failure; the next attempt is due then.
        case retryDue(Date)
        case creating
        /// Created; the next status poll is due then.
        case waiting(Date)
        case polling

        var name: String {
            switch self {
            case .queued: "queued"
            case .retryDue: "create-pending"
            case .creating: "creating"
            case .waiting, .polling: "waiting"
            }
        }
    }

    var deadline: Date? { startedAt.map { $0.addingTimeInterval(timeout) } }
}

/// What a create came back with, as the executor reports it.
enum CreateOutcome: Sendable {
    /// The image is recorded in the store (the run is `waiting`); `state` when the create already knew it.
    case recorded(imageID: String, state: ImageState?)
    /// The backend made the image but the store could not record it.
    case unrecorded(imageID: String, error: String)
    case failed(error: String, transient: Bool)
}

/// What one image's poll said.
enum PollOutcome: Sendable {
    case state(ImageState, sizeBytes: Int64?)
    case failed(error: String, transient: Bool)
}

/// Something that happened outside the engine, fed to its next tick.
enum EngineEvent: Sendable {
    case claimed([RunClaim], [RunRecord?])
    case claimFailed([RunClaim], error: String)
    case createsNotStarted([Int64], error: String)
    case createFinished(Int64, CreateOutcome)
    case pollFinished(backend: String, [Int64: PollOutcome])
    /// A run's end is written: retention (after a success) and late checks (an image left unfinished) may follow.
    case runRecorded(job: String, state: RunState, hasImage: Bool)
    case retentionFinished(job: String)
    /// Late images became final; `activeJobs` got a new active image.
    case lateImagesChecked(stillOpen: Bool, activeJobs: Set<String>)
    case sweepFinished(recordedJobs: Set<String>)
    /// A run's image turned up by name after the run ended; retention and late checks may have work.
    case imageAdopted(job: String, state: StoredImageState)
    /// The store refused a run write: this daemon's lease on its runs lapsed (cluster). Renew it at once.
    case runWriteFenced
    /// The lease on this daemon's runs had lapsed: other daemons may have taken them over. Forget them all.
    case runLeaseLost
    /// Runs of daemons whose lease lapsed, now this one's to resume.
    case runsTakenOver([RunRecord])
    /// The jobs paused in the store (cluster: another node may have paused or resumed one).
    case storedPausesRead(Set<String>)
}

/// Whom a missed fire is reported to: the job's hook set and where it would have run.
struct MissedFireAlert: Sendable {
    var hooks: HookSet
    var backend: String
    var target: String
}

/// What the executor is asked to do: store writes, backend calls, logs.
enum EngineAction: Sendable {
    /// `retried`: claims sent again after the store failed to answer (it may have committed them).
    case claim([RunClaim], retried: Bool = false)
    /// `alert`: the job's hooks, for the newest missed fire of a catch-up (on_failure, notify_url, ping_url).
    case recordMissed(job: String, scheduled: Date, reason: String, alert: MissedFireAlert?)
    case recordSkipped(job: String, scheduled: Date, trigger: RunTrigger, reason: String)
    case beginCreates([CreateOrder])
    case recordRetry(run: Int64, job: String, error: String, attempt: Int, at: Date)
    case poll(backend: String, [PollOrder])
    case recordPoll(run: Int64, state: StoredImageState, nextPollAt: Date)
    case finish(FinishOrder)
    case retain(RetentionOrder)
    case checkLateImages
    case sweep(targets: [String: Set<String>])
    case pruneHistory(olderThan: Date)
    case clampLastScheduled(notAfter: Date)
    case storePause(job: String, paused: Bool)
    /// Renew this daemon's lease on its runs, and take over the runs of daemons whose lease lapsed (cluster).
    case renewRunLease
    case note(level: NoteLevel, message: String, fields: [String: String])

    enum NoteLevel: Sendable { case info, notice, warning, error }
}

struct CreateOrder: Sendable {
    var run: Int64
    var job: String
    var backend: String
    var target: String
    var imageName: String
    var description: String
    /// No earlier call can have made an image of this name: the backend may skip its lookup by name.
    var nameIsFresh: Bool
    /// The run's timeout: the call is cut there.
    var deadline: Date
    /// Commands run around the create (`pre`, `post`).
    var hooks: HookSet?
    var scheduledAt: Date
    /// The run's first create: its fire starts now (`ping_url` gets `/start`).
    var firstAttempt: Bool
}

struct PollOrder: Sendable {
    var run: Int64
    var imageID: String
    var target: String
    var resumesAfterRestart: Bool
    var deadline: Date
}

struct FinishOrder: Sendable {
    var run: Int64
    var job: String
    var backend: String
    var target: String
    var scheduledAt: Date
    var imageName: String
    var imageID: String?
    var state: RunState
    var error: String?
    var sizeBytes: Int64?
    /// Ask the backend for the image's size first (a run that succeeded without a poll).
    var asksSize: Bool
    /// The run may have made an image it never recorded: look its name up at the backend first.
    var looksUpImage: Bool
    var startedAt: Date?
    /// Commands run after the run is recorded (`on_success`, `on_failure`).
    var hooks: HookSet?
}

struct RetentionOrder: Sendable {
    /// The job whose images of its current (backend, target) retention judges.
    var job: Job
}

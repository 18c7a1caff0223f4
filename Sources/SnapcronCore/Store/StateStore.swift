import Foundation

/// Where the scheduler keeps what must survive a crash: runs (one row per handled fire), images, per-job state.
///
/// The run engine reaches its store only through this protocol (SQLite is the embedded one; a shared database for
/// several daemons is another). Contract, which every implementation keeps:
/// - Each method is one transaction: it happens entirely or not at all.
/// - A fire `(job, scheduledAt)` is claimed at most once while its run is kept (`claimRuns`, `recordMissed`,
///   `recordSkipped`); a second claim of the same fire answers nil and writes nothing. `pruneHistory` forgets old
///   runs, and with them their fires: the job's last handled fire, which pruning keeps, is what keeps the scheduler
///   from reaching a pruned fire again.
/// - Run states move only as ``RunState/allowsTransition(to:)`` says; an illegal move throws and writes nothing.
/// - An image is deleted only through `beginDeleting` (only when active and unpinned) then `markImageDeleted`; a
///   pin of an image being deleted is refused.
/// - Times are stored in whole seconds (UTC).
public protocol StateStore: Sendable {
    // MARK: Start-up

    /// Per-job state (paused, last handled fire) of every job the store knows.
    func allJobStates() async throws -> [JobStateRecord]
    /// Runs a restarted daemon must resume (claimed, creating, waiting), oldest first.
    func unfinishedRuns() async throws -> [RunRecord]
    /// The jobs that have at least one image not deleted.
    func jobsWithImages() async throws -> Set<String>
    /// The latest instant the store recorded (claims, fires, image creations): later than now means the clock
    /// went backwards while the daemon was down.
    func latestRecordedInstant() async throws -> Date?
    /// The (backend, target) pairs of runs that started a create and ended without an image since `since`: a
    /// create whose reply was lost may have made one there, which the sweep must list even when no job and no
    /// recorded image names that target any more.
    func targetsOfRunsEndedWithoutImage(since: Date) async throws -> [(backend: String, target: String)]
    /// Keeps how one hook command of a run ended.
    func recordHookResult(_ record: HookRecord) async throws
    /// A random id made once per store; image markers carry it, so the sweep knows this installation's images.
    func installationID() async throws -> String
    /// Moves every job's last handled fire that lies after `now` back to `now` (after a backward clock step);
    /// returns the names of the jobs moved.
    func clampLastScheduled(notAfter now: Date) async throws -> [String]

    // MARK: Fires

    /// Claims many fires in one transaction; nil where a fire was already claimed. Scheduled and catch-up claims
    /// advance the job's last handled fire.
    func claimRuns(_ claims: [RunClaim], now: Date) async throws -> [RunRecord?]
    /// Records a fire that will not run because it was missed; nil if that fire was already handled.
    func recordMissed(job: String, scheduledAt: Date, now: Date, reason: String) async throws -> RunRecord?
    /// Records a fire that will not run (paused job, busy target); consecutive skips of a job for the same reason
    /// share one row. Nil if that fire was already handled.
    func recordSkipped(job: String, scheduledAt: Date, trigger: RunTrigger, now: Date, reason: String) async throws
        -> RunRecord?
    /// Pauses or resumes a job, for good.
    func setPaused(name: String, _ paused: Bool, now: Date) async throws -> JobStateRecord
    /// The names of the jobs paused in the store (read at each lease renewal in a cluster: only these rows).
    func pausedJobNames() async throws -> Set<String>

    // MARK: Runs

    /// Moves runs to `creating` before their create calls, counting the attempt; nil for a run that may not move.
    func markCreating(runIDs: [Int64], now: Date) async throws -> [RunRecord?]
    /// Records the image a create returned (queued) and moves the run to `waiting`.
    func markWaiting(runID: Int64, imageID: String, description: String?, now: Date, nextPollAt: Date) async throws
        -> RunRecord
    /// Records one poll of a waiting run's image.
    func updatePoll(runID: Int64, imageState: StoredImageState, sizeBytes: Int64?, nextPollAt: Date?, now: Date)
        async throws -> RunRecord
    /// Moves a run to a terminal state; a succeeded run's image becomes active, a failed one's error.
    func finishRun(runID: Int64, state: RunState, error: String?, sizeBytes: Int64?, now: Date) async throws
        -> RunRecord
    /// Records a transient create failure and when to try again (the run goes back to `claimed`).
    func recordRetryableFailure(runID: Int64, error: String, nextAttemptAt: Date) async throws -> RunRecord
    /// Records the image of a run that already ended without one (found later by its name).
    func adoptImage(runID: Int64, imageID: String, description: String?, now: Date) async throws -> RunRecord
    func run(id: Int64) async throws -> RunRecord?
    /// The run of the fire (`job`, `scheduledAt`) this store claimed or recorded, if any.
    func run(job: String, scheduledAt: Date) async throws -> RunRecord?
    /// The fire's run if it is unfinished and this daemon's (in a cluster: under its current epoch): a claim that
    /// committed though its answer was lost, found when the claim is sent again.
    func ownUnfinishedRun(job: String, scheduledAt: Date) async throws -> RunRecord?
    /// History, newest fire first.
    func runs(job: String?, state: RunState?, since: Date?, limit: Int) async throws -> [RunRecord]
    /// The most recently finished failed or timed-out run.
    func lastFailure() async throws -> RunRecord?

    // MARK: Images

    /// The images of `job`, newest first; deleted ones only when `includeDeleted`.
    func images(job: String, includeDeleted: Bool) async throws -> [ImageRecord]
    func image(id: String, backend: String) async throws -> ImageRecord?
    /// Images still queued or saving that no unfinished run follows any more, oldest first.
    func imagesLeftUnfinished(limit: Int) async throws -> [ImageRecord]
    /// Every image id recorded for `backend`, in any state.
    func imageStates(backend: String) async throws -> [String: StoredImageState]
    /// Records an image found at the backend that the store did not know; nil when it is known already.
    func recordFoundImage(_ image: FoundImage, now: Date) async throws -> ImageRecord?
    /// The (job, backend, target) triples that still have images not deleted.
    func imageTargets() async throws -> [ImageTarget]
    func setPinned(id: String, backend: String, _ pinned: Bool) async throws -> ImageRecord
    func updateImageState(id: String, backend: String, state: StoredImageState, sizeBytes: Int64?, now: Date)
        async throws -> ImageRecord
    /// Records a retention pass's verdicts (why each image is kept or to be deleted).
    func recordRetentionDecisions(_ decisions: [(ImageKey, RetentionDecision)]) async throws -> [ImageRecord]
    /// Takes an active, unpinned image into `deleting`; nil when it is not eligible (pinned meanwhile, say).
    func beginDeleting(id: String, backend: String, reason: String, now: Date) async throws -> ImageRecord?
    /// Records that the backend deleted the image.
    func markImageDeleted(id: String, backend: String, now: Date, reason: String) async throws -> ImageRecord
    /// Gives a `deleting` image back to `active` after the backend refused the delete.
    func abortDeleting(id: String, backend: String, error: String, now: Date) async throws -> ImageRecord?
    /// Images whose delete was under way when the daemon stopped.
    func imagesBeingDeleted() async throws -> [ImageRecord]
    /// The creation time of each job's newest active image created no later than `now`.
    func newestActiveImageDates(notAfter now: Date) async throws -> [String: Date]

    // MARK: Upkeep

    /// Deletes finished runs and deleted or gone images older than `cutoff`.
    func pruneHistory(olderThan cutoff: Date) async throws -> HistoryPruneResult
    /// Whether the store is readable and consistent.
    func health() async -> StoreHealth

    // MARK: Reads of the control socket and the metrics

    /// One job's stored state (pause, last handled fire), or nil for a job the store never saw.
    func jobState(name: String) async throws -> JobStateRecord?
    /// The hook results of these runs, each run's in the order they were recorded.
    func hookResults(runIDs: [Int64]) async throws -> [Int64: [HookRecord]]
    /// Images not deleted, counted by job and state, with their known sizes and the newest creation time not after
    /// `now`.
    func imageCensus(notAfter now: Date) async throws -> [ImageCensusRow]
    /// When each of `jobs`' newest succeeded run (by fire) ended; jobs without one are left out.
    func lastSuccessfulRunEnds(jobs: [String]) async throws -> [String: Date]
    /// Folds the write-ahead log into the database where the store keeps one (at a clean stop).
    func checkpoint() async throws

    // MARK: Cluster (several daemons on one store)

    /// How long this daemon's hold on its unfinished runs lasts without a renewal; nil for a store that only one
    /// daemon uses (then every unfinished run is its own, and the rest of this section does nothing).
    var runLease: Duration? { get }
    /// Renews this daemon's lease on its runs (from the scheduler's loop, every third of the lease). False when it
    /// had lapsed: other daemons may take its runs over, and its writes for them are refused with
    /// ``RunFencedError``; the store then holds it again under a new lease, and ``takeOverRuns()`` gives back
    /// whichever runs nobody took.
    func renewRunLease() async throws -> Bool
    /// Runs whose daemon's lease lapsed (it died, hung or lost the network), now this daemon's to resume, oldest
    /// first. Each run goes to one daemon only.
    func takeOverRuns() async throws -> [RunRecord]
    /// The daemons registered in the store, by name (none for a store only one daemon uses).
    func clusterNodes() async throws -> [ClusterNodeRecord]
    /// Takes `job`'s retention pass for this daemon; false while another daemon of the cluster runs one (a pass
    /// of a daemon whose lease lapsed counts as ended). Given back by ``endRetention(job:)``.
    func beginRetention(job: String) async throws -> Bool
    func endRetention(job: String) async throws
    /// Records this daemon's schedule (each job's ``Job/clusterFingerprint``) and returns, for each other live
    /// daemon whose schedule differs, the names of the jobs that differ; empty for a store only one daemon uses.
    func publishSchedule(_ fingerprints: [String: String]) async throws -> [String: [String]]
}

/// One daemon of a cluster, as the store knows it.
public struct ClusterNodeRecord: Sendable, Hashable {
    public var name: String
    public var host: String
    public var pid: Int32
    public var version: String
    public var startedAt: Date
    public var lastSeen: Date
    /// Whether its lease is live now (by the store's clock): a node whose lease lapsed loses its runs.
    public var leaseLive: Bool
    /// Unfinished runs it holds.
    public var runsHeld: Int
    /// Whether this is the daemon asking.
    public var isSelf: Bool

    public init(
        name: String, host: String, pid: Int32, version: String, startedAt: Date, lastSeen: Date, leaseLive: Bool,
        runsHeld: Int, isSelf: Bool
    ) {
        self.name = name
        self.host = host
        self.pid = pid
        self.version = version
        self.startedAt = startedAt
        self.lastSeen = lastSeen
        self.leaseLive = leaseLive
        self.runsHeld = runsHeld
        self.isSelf = isSelf
    }
}

/// A run write refused because the run is not this daemon's any more: its lease on it lapsed, and another daemon
/// of the cluster may be resuming the run. Nothing was written.
public struct RunFencedError: Error, CustomStringConvertible, Sendable {
    public var runID: Int64?
    public var description: String

    public init(runID: Int64?, _ description: String) {
        self.runID = runID
        self.description = description
    }
}

/// One fire to claim.
public struct RunClaim: Sendable, Hashable {
    public var job: String
    public var scheduledAt: Date
    public var trigger: RunTrigger
    public var imageName: String
    public var backend: String
    public var target: String

    public init(
        job: String, scheduledAt: Date, trigger: RunTrigger, imageName: String, backend: String, target: String
    ) {
        self.job = job
        self.scheduledAt = scheduledAt
        self.trigger = trigger
        self.imageName = imageName
        self.backend = backend
        self.target = target
    }
}

/// A kind of event snapcron logs, with the journal `MESSAGE_ID` that identifies it.
///
/// Log one with the metadata key `event`:
/// `logger.info("Run succeeded", metadata: ["event": "\(SnapcronEvent.runSucceeded)", "job": "web"])`.
/// ``JournalLogHandler`` turns it into `MESSAGE_ID=`, which `journalctl -x` explains from
/// `systemd/snapcron.catalog` and `journalctl MESSAGE_ID=...` selects. The ids are stable: never change one.
public struct SnapcronEvent: Hashable, Sendable, CustomStringConvertible {
    /// The dotted name logged as the `event` metadata value, e.g. `run.succeeded`.
    public let name: String
    /// The 128-bit journal `MESSAGE_ID` as 32 lowercase hex digits.
    public let messageID: String

    private init(_ name: String, _ messageID: String) {
        self.name = name
        self.messageID = messageID
    }

    public var description: String { name }

    /// A scheduled fire started a run.
    public static let runFired = SnapcronEvent("run.fired", "bdc98d56a1204fbb808abe689986357c")
    /// A run's image reached ACTIVE.
    public static let runSucceeded = SnapcronEvent("run.succeeded", "434268327ddb45b2b4c795768555a709")
    /// A run ended in a permanent error or ran out of retries.
    public static let runFailed = SnapcronEvent("run.failed", "5f3b69d0fa4f403f9e2d21e4569daf9e")
    /// A run's image did not reach a final state within the job's timeout.
    public static let runTimedOut = SnapcronEvent("run.timed_out", "0dde41428bcb43aa9c39288ac5a8a60c")
    /// A fire was missed (daemon down or late beyond the deadline) and will not run.
    public static let runMissed = SnapcronEvent("run.missed", "5ce75a4ac7c74489989af0164f46c44d")
    /// A fire was skipped by policy (overlap, paused job).
    public static let runSkipped = SnapcronEvent("run.skipped", "0f0b671199904c6bad1934dbdc78576e")
    /// Retention deleted an image.
    public static let imageDeleted = SnapcronEvent("image.deleted", "72123f7b4c5a419d899e60792ffc4c4a")
    /// Retention kept an image, with the reason.
    public static let retentionKept = SnapcronEvent("retention.kept", "8e6fd9e275ca4160b3d9689000c8d70e")
    /// A schedule was loaded (at start-up or on reload).
    public static let scheduleLoaded = SnapcronEvent("schedule.loaded", "6a3ae9fff94149208567aba93eeafff6")
    /// A reload found errors; the previous schedule stays live.
    public static let scheduleReloadFailed = SnapcronEvent(
        "schedule.reload_failed",
        "adfad707db074612b503ba0e046dac44"
    )
    /// A hook command (pre, post, success, failure) of a run ended, with its result.
    public static let hookFinished = SnapcronEvent("hook.finished", "200d2bd3bbbc49cba574a1821a15b683")
    /// The daemon is up and told systemd it is ready.
    public static let daemonStarted = SnapcronEvent("daemon.started", "d0028c8bbfd348dd8490a708f192c299")
    /// The daemon is shutting down.
    public static let daemonStopping = SnapcronEvent("daemon.stopping", "b78d78f83ca2493d947613eb3a702158")

    /// Every event kind, in the order of the catalog.
    public static let all: [SnapcronEvent] = [
        .runFired, .runSucceeded, .runFailed, .runTimedOut, .runMissed, .runSkipped,
        .imageDeleted, .retentionKept, .scheduleLoaded, .scheduleReloadFailed, .hookFinished, .daemonStarted,
        .daemonStopping,
    ]

    private static let byName: [String: SnapcronEvent] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    /// The event with this dotted name, or nil for an unknown one.
    public init?(named name: String) {
        guard let event = Self.byName[name] else { return nil }
        self = event
    }
}

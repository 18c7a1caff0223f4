import Foundation

/// Who counts what the scheduler does (the daemon's Prometheus metrics). Called from the executor right after the
/// store recorded the event; an implementation must return at once (no I/O, no waiting).
public protocol SchedulerMetrics: Sendable {
    /// A run reached a terminal state (`succeeded`, `failed`, `timed_out`, `missed`, `skipped`, `cancelled`).
    /// `startedAt` is its first create call; nil for a run that never started one.
    func runEnded(job: String, state: RunState, startedAt: Date?, endedAt: Date)
    /// snapcron deleted an image at its backend (retention, or an operator's prune).
    func imageDeleted(job: String)
    /// Something the store keeps changed (an image's state or size, a pin, a found image): store-derived figures
    /// are read again.
    func storeChanged()
}

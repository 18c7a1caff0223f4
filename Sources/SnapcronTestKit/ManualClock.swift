import Foundation
import SnapcronCore

/// A wall clock that moves only when a test says so; sleepers wake when `advance` passes their deadline.
///
/// `sleep(until:)` registers the deadline, so a test can ask when the code under test wants to wake up
/// (`nextDeadline`) and jump straight there: a simulated year takes as long as the work in it, not a year.
public final class ManualClock: SchedulerClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date
    private var sleepers: [UInt64: (deadline: Date, continuation: CheckedContinuation<Void, any Error>)] = [:]
    private var nextID: UInt64 = 0

    public init(now: Date) {
        current = now
    }

    public func now() -> Date {
        lock.lock()
        defer { lock.unlock() }
        return current
    }

    /// The earliest deadline of a current sleeper.
    public var nextDeadline: Date? {
        lock.lock()
        defer { lock.unlock() }
        return sleepers.values.map(\.deadline).min()
    }

    public var hasWaitingSleeper: Bool {
        lock.lock()
        defer { lock.unlock() }
        return !sleepers.isEmpty
    }

    public func sleep(until deadline: Date) async throws {
        let id: UInt64 = lock.withLock {
            nextID += 1
            return nextID
        }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                lock.lock()
                if Task.isCancelled {
                    lock.unlock()
                    continuation.resume(throwing: CancellationError())
                } else if deadline <= current {
                    lock.unlock()
                    continuation.resume()
                } else {
                    sleepers[id] = (deadline, continuation)
                    lock.unlock()
                }
            }
        } onCancel: {
            let sleeper = lock.withLock { sleepers.removeValue(forKey: id) }
            sleeper?.continuation.resume(throwing: CancellationError())
        }
    }

    /// Moves the clock to `date` (never backwards unless `allowingBackwards`) and wakes every sleeper due by then.
    public func advance(to date: Date, allowingBackwards: Bool = false) {
        lock.lock()
        if date > current || allowingBackwards { current = date }
        let due = sleepers.filter { $0.value.deadline <= current }
        for id in due.keys { sleepers.removeValue(forKey: id) }
        lock.unlock()
        for sleeper in due.values { sleeper.continuation.resume() }
    }

    public func advance(by interval: TimeInterval) {
        advance(to: now().addingTimeInterval(interval))
    }

    /// A clock step (like `date -s`): moves the clock and wakes every sleeper, as `SystemClock` does on a step.
    public func step(to date: Date) {
        lock.lock()
        current = date
        let all = sleepers
        sleepers.removeAll()
        lock.unlock()
        for sleeper in all.values { sleeper.continuation.resume() }
    }
}

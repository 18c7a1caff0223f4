import CLinuxShims
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// The wall clock as the scheduler sees it. Only `SchedulerService` holds one: `SystemClock` in the daemon,
/// `ManualClock` (SnapcronTestKit) in tests, so that no test sleeps.
public protocol SchedulerClock: Sendable {
    /// The current wall-clock instant.
    func now() -> Date

    /// Suspends until the wall clock reaches `deadline`.
    ///
    /// May return early (the caller then looks at `now()` again): a real clock returns when the system clock is
    /// stepped, so that a jump never leaves the scheduler asleep past its fires. Throws `CancellationError` when
    /// the task is cancelled.
    func sleep(until deadline: Date) async throws

    /// Whether a sleeper is registered and not yet woken. A manual clock answers exactly, so a test can tell
    /// that the scheduler has handled a wake-up and gone back to sleep; a real clock need not track it.
    var hasWaitingSleeper: Bool { get }

    /// Suspends until about `deadline`, for the time limit of a backend call: many may wait at once, so a real
    /// clock may use a cheap monotonic timer here (a clock step moves the limit by the step, which is harmless).
    func sleepForCallLimit(until deadline: Date) async throws
}

extension SchedulerClock {
    public var hasWaitingSleeper: Bool { true }

    public func sleepForCallLimit(until deadline: Date) async throws { try await sleep(until: deadline) }
}

/// The system's wall clock. Sleeps on a `CLOCK_REALTIME` timerfd armed at an absolute deadline with
/// `TFD_TIMER_CANCEL_ON_SET`, so a clock step (NTP, an operator's `date -s`) wakes the sleeper at once instead of
/// leaving it to wait out a stale interval, and an idle daemon wakes only when something is due.
public struct SystemClock: SchedulerClock {
    public init() {}

    public func now() -> Date { Date() }

    public func sleepForCallLimit(until deadline: Date) async throws {
        try await Task.sleep(for: .seconds(max(0, deadline.timeIntervalSinceNow)))
    }

    public func sleep(until deadline: Date) async throws {
        try Task.checkCancellation()
        let waiter = try RealtimeWaiter(deadline: deadline)
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                // A blocking poll(2) on its own thread: the scheduler has exactly one sleeper at a time.
                let thread = Thread {
                    waiter.block()
                    continuation.resume()
                }
                thread.name = "snapcron-clock"
                thread.start()
            }
        } onCancel: {
            waiter.interrupt()
        }
        waiter.close()
        try Task.checkCancellation()
    }
}

/// One armed timerfd plus an eventfd to interrupt it.
private final class RealtimeWaiter: @unchecked Sendable {
    private let timer: Int32
    private let wakeup: Int32

    init(deadline: Date) throws {
        let seconds = max(0, deadline.timeIntervalSince1970)
        let whole = seconds.rounded(.down)
        timer = snapcron_realtime_timer_at(Int64(whole), Int64((seconds - whole) * 1e9))
        guard timer >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        wakeup = snapcron_eventfd()
        guard wakeup >= 0 else {
            let code = errno
            Glibc.close(timer)
            throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
        }
    }

    /// Returns when the deadline passes, the clock is stepped, or `interrupt()` is called.
    func block() {
        _ = snapcron_wait_timer(timer, wakeup)
    }

    func interrupt() {
        snapcron_wake(wakeup)
    }

    func close() {
        Glibc.close(timer)
        Glibc.close(wakeup)
    }
}

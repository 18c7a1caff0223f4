internal import CSystemd
internal import Glibc

/// Tells systemd about the service's state through `sd_notify(3)`.
///
/// Without `$NOTIFY_SOCKET` (not started by systemd, or not `Type=notify`) every call is a no-op that returns
/// `false`, so the daemon calls it unconditionally. Notifications are best effort: a failed send is reported
/// by the return value, never thrown, because nothing the daemon could do about it would help.
///
/// The daemon's scheduler loop calls ``watchdog()`` itself every ``watchdogInterval``: a stuck loop must stop
/// the pings so that systemd restarts the service.
public struct Notifier: Sendable {
    /// Whether `$NOTIFY_SOCKET` was set when this notifier was made, i.e. whether notifications reach systemd.
    public let isActive: Bool

    /// How often to call ``watchdog()``: half of systemd's `WATCHDOG_USEC`, or nil when no watchdog runs for
    /// this process.
    public let watchdogInterval: Duration?

    /// Reads `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` of this process.
    public init() {
        let socket = getenv("NOTIFY_SOCKET").map { String(cString: $0) } ?? ""
        self.isActive = !socket.isEmpty
        var usec: UInt64 = 0
        // > 0: enabled for this PID; 0: disabled; < 0: malformed variables, treated as disabled.
        if sd_watchdog_enabled(0, &usec) > 0, usec > 0 {
            self.watchdogInterval = .microseconds(Int64(clamping: usec / 2))
        } else {
            self.watchdogInterval = nil
        }
    }

    /// Sends `READY=1` (start-up or a reload finished), with a one-line `STATUS=` when given.
    @discardableResult
    public func ready(status: String? = nil) -> Bool {
        send(["READY=1"] + (status.map { ["STATUS=" + Self.oneLine($0)] } ?? []))
    }

    /// Sends `STATUS=`: the one-line summary `systemctl status` shows.
    @discardableResult
    public func status(_ text: String) -> Bool {
        send(["STATUS=" + Self.oneLine(text)])
    }

    /// Sends `WATCHDOG=1`, the keep-alive ping systemd expects at least every `WATCHDOG_USEC`.
    @discardableResult
    public func watchdog() -> Bool {
        send(["WATCHDOG=1"])
    }

    /// Sends `RELOADING=1` with `MONOTONIC_USEC=` (the current `CLOCK_MONOTONIC` time); send ``ready(status:)``
    /// when the reload is done.
    @discardableResult
    public func reloading() -> Bool {
        // systemd 253+ uses MONOTONIC_USEC to order a reload against its own request; older ones ignore it.
        send(["RELOADING=1", "MONOTONIC_USEC=\(Self.monotonicMicroseconds())"])
    }

    /// Sends `STOPPING=1`: the service is shutting down.
    @discardableResult
    public func stopping() -> Bool {
        send(["STOPPING=1"])
    }

    /// Sends `EXTEND_TIMEOUT_USEC=`: the current start, stop or reload needs `duration` more before systemd
    /// gives up on it.
    @discardableResult
    public func extendTimeout(_ duration: Duration) -> Bool {
        send(["EXTEND_TIMEOUT_USEC=\(Self.microseconds(duration))"])
    }

    /// Sends newline-separated assignments in one datagram, so systemd applies them together.
    private func send(_ assignments: [String]) -> Bool {
        guard isActive else { return false }
        return sd_notify(0, assignments.joined(separator: "\n")) > 0
    }

    /// Makes text safe as one assignment: a newline would start a new one.
    static func oneLine(_ text: String) -> String {
        String(text.map { $0.isNewline ? " " : $0 })
    }

    static func microseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        return max(0, seconds &* 1_000_000 &+ attoseconds / 1_000_000_000_000)
    }

    static func monotonicMicroseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
    }
}

internal import Glibc
public import Logging

/// Where snapcron's logs go: the journal under systemd, readable lines on standard error otherwise.
public enum LogDestination: Sendable, Equatable {
    /// Structured entries through ``JournalLogHandler``.
    case journal
    /// One line per record through ``StderrLogHandler``.
    case stderr

    /// Picks the journal when systemd started this process, else standard error.
    ///
    /// systemd sets `$JOURNAL_STREAM` to `DEVICE:INODE` of the stream it connected to the journal, and
    /// `$INVOCATION_ID` for every service. Checking the device and inode (as `sd_journal_stream_fd(3)` advises)
    /// avoids sending to the journal when stderr was redirected elsewhere in a shell started from a service.
    ///
    /// - Parameters:
    ///   - environment: the process environment (`ProcessInfo.processInfo.environment`).
    ///   - stderrIdentity: device and inode of standard error, nil when it cannot be examined.
    public static func detect(
        environment: [String: String],
        stderrIdentity: (device: UInt64, inode: UInt64)? = standardErrorIdentity()
    ) -> LogDestination {
        if let stream = environment["JOURNAL_STREAM"], let stderrIdentity {
            let parts = stream.split(separator: ":")
            if parts.count == 2, UInt64(parts[0]) == stderrIdentity.device, UInt64(parts[1]) == stderrIdentity.inode {
                return .journal
            }
        }
        if let invocation = environment["INVOCATION_ID"], !invocation.isEmpty {
            return .journal
        }
        return .stderr
    }

    /// Device and inode of file descriptor 2, or nil when it is closed.
    public static func standardErrorIdentity() -> (device: UInt64, inode: UInt64)? {
        var info = stat()
        guard fstat(STDERR_FILENO, &info) == 0 else { return nil }
        return (UInt64(info.st_dev), UInt64(info.st_ino))
    }

    /// Bootstraps swift-log with this destination's handler at `logLevel` (once per process, as swift-log requires).
    ///
    /// - Parameter identifier: the journal's `SYSLOG_IDENTIFIER`, e.g. `snapcrond`.
    public func bootstrap(identifier: String, logLevel: Logger.Level = .info) {
        switch self {
        case .journal:
            LoggingSystem.bootstrap { _ in
                var handler = JournalLogHandler(identifier: identifier)
                handler.logLevel = logLevel
                return handler
            }
        case .stderr:
            LoggingSystem.bootstrap { _ in
                var handler = StderrLogHandler()
                handler.logLevel = logLevel
                return handler
            }
        }
    }
}

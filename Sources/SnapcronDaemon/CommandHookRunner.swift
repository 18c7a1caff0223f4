import ExecBackend
import SnapcronCore

/// Runs the jobs' hook commands the way the exec backend runs its commands (no shell, a process group of their
/// own, killed at the timeout or when the daemon stops), with the exec backend's base environment (`PATH`,
/// `LC_ALL`, `TZ`) plus the hook's `SNAPCRON_*` variables.
public struct CommandHookRunner: HookRunner {
    public init() {}

    public func run(_ argv: [String], environment: [String: String], timeout: Duration) async -> HookResult {
        let ran = await runCommand(
            argv, environment: ExecBackend.baseEnvironment.merging(environment) { _, hook in hook }, timeout: timeout)
        var result = HookResult(exitStatus: ran.exitStatus, signal: ran.signal)
        result.timedOut = ran.timedOut
        result.stopped = ran.cancelled
        result.spawnError = ran.spawnError
        result.duration = ran.duration
        result.stderrTail = ran.stderrTail
        return result
    }
}

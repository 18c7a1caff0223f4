import CExecShims
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// How a command ended.
enum Termination: Hashable, Sendable {
    /// `exit(code)`.
    case exited(Int32)
    /// Killed by a signal (by us on timeout or overflow, or by someone else).
    case signaled(Int32)
}

/// What one run of a command produced.
struct CommandOutcome: Sendable {
    var termination: Termination
    /// At most `maxStdoutBytes` bytes of stdout.
    var stdout: [UInt8]
    /// Stdout went past the limit: the process group was killed and the rest discarded.
    var stdoutOverflowed: Bool
    /// The last `maxStderrBytes` bytes of stderr.
    var stderr: [UInt8]
    /// Stderr was longer than the limit; only its end is kept.
    var stderrTruncated: Bool
    /// The timeout expired and the process group was terminated.
    var timedOut: Bool
    /// The calling task was cancelled and the process group was terminated.
    var cancelled: Bool
    var duration: Duration
}

/// The command could not be started at all.
enum SpawnFailure: Error, Hashable, Sendable {
    /// A bare command name was not found in any directory of the search path.
    case notFound(name: String, searchPath: String)
    /// `posix_spawn` (or the pipes before it) failed with an errno.
    case system(call: String, path: String, code: Int32)

    /// Whether the condition may clear by itself (out of processes, descriptors or memory).
    var isTransient: Bool {
        guard case .system(_, _, let code) = self else { return false }
        return [EAGAIN, ENOMEM, EMFILE, ENFILE, EINTR, ETXTBSY].contains(code)
    }
}

/// Runs one argv without a shell, in a session (and process group) of its own, with a timeout and bounded output.
///
/// The child gets stdin from `/dev/null`, stdout and stderr on pipes, exactly `environment` as its environment,
/// default signal dispositions and an empty signal mask, and no other inherited descriptors. On timeout or task
/// cancellation the whole process group gets SIGTERM, then SIGKILL after `killGrace`. When the command exits,
/// anything it left running in its process group is killed, so no command outlives its call.
struct CommandRunner: Sendable {
    var timeout: Duration
    var killGrace: Duration
    var maxStdoutBytes: Int
    var maxStderrBytes: Int
    /// The complete environment of the child (`PATH` also locates bare command names).
    var environment: [String: String]

    /// How long to keep reading pipes after the command exited, for writers that escaped its process group.
    static let drainAfterExit: Duration = .milliseconds(500)

    /// Runs `argv` and returns how it ended; throws ``SpawnFailure`` when it could not be started.
    func run(_ argv: [String]) async throws(SpawnFailure) -> CommandOutcome {
        precondition(!argv.isEmpty, "an argv has at least the command")
        let executable = try resolveExecutable(argv[0])
        let cancellation = CancellationFlag()
        let result = await withTaskCancellationHandler {
            await runOnOwnThread(name: "snapcron-exec") { [self] in
                Result { () throws(SpawnFailure) in try runBlocking(argv, executable: executable, cancel: cancellation)
                }
            }
        } onCancel: {
            cancellation.cancel()
        }
        return try result.get()
    }

    /// The path to execute: `name` itself when it contains a slash, else the first executable regular file named
    /// `name` in the environment's `PATH`.
    func resolveExecutable(_ name: String) throws(SpawnFailure) -> String {
        if name.contains("/") { return name }
        let searchPath = environment["PATH"] ?? ""
        for directory in searchPath.split(separator: ":") where directory.hasPrefix("/") {
            let candidate = directory.hasSuffix("/") ? "\(directory)\(name)" : "\(directory)/\(name)"
            var info = stat()
            if stat(candidate, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 {
                return candidate
            }
        }
        throw .notFound(name: name, searchPath: searchPath)
    }

    private func runBlocking(_ argv: [String], executable: String, cancel: CancellationFlag) throws(SpawnFailure)
        -> CommandOutcome
    {
        var output: [Int32] = [-1, -1]
        var errors: [Int32] = [-1, -1]
        guard snapcron_exec_pipe_cloexec(&output) == 0 else {
            throw .system(call: "pipe2", path: executable, code: errno)
        }
        guard snapcron_exec_pipe_cloexec(&errors) == 0 else {
            let code = errno
            output.forEach { _ = close($0) }
            throw .system(call: "pipe2", path: executable, code: code)
        }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, output[1], 1)
        posix_spawn_file_actions_adddup2(&actions, errors[1], 2)
        snapcron_exec_add_closefrom(&actions, 3)

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        // A new session makes the child the leader of a new process group whose id is its pid.
        posix_spawnattr_setflags(&attributes, snapcron_exec_spawn_flags())
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)

        let arguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        let environmentStrings: [UnsafeMutablePointer<CChar>?] =
            environment.sorted { $0.key < $1.key }.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            arguments.forEach { free($0) }
            environmentStrings.forEach { free($0) }
        }

        let clock = ContinuousClock()
        let started = clock.now
        var pid: pid_t = 0
        var spawned = posix_spawn(&pid, executable, &actions, &attributes, arguments, environmentStrings)
        // ETXTBSY: a process forked elsewhere still holds the file open for writing for an instant (it was just
        // written, e.g. by a package upgrade); it clears by itself.
        for _ in 0..<5 where spawned == ETXTBSY {
            usleep(20_000)
            spawned = posix_spawn(&pid, executable, &actions, &attributes, arguments, environmentStrings)
        }
        _ = close(output[1])
        _ = close(errors[1])
        guard spawned == 0 else {
            _ = close(output[0])
            _ = close(errors[0])
            throw .system(call: "posix_spawn", path: executable, code: spawned)
        }

        var stdout: [UInt8] = []
        var stdoutOverflowed = false
        var stderr: [UInt8] = []
        var stderrTruncated = false
        var open: [Int32] = [output[0], errors[0]]
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        let deadline = started + timeout
        var terminatingSince: ContinuousClock.Instant?
        var killed = false
        var exitedAt: ContinuousClock.Instant?
        var timedOut = false
        var cancelled = false

        func signalGroup(_ signal: Int32) {
            _ = kill(-pid, signal)
        }

        while true {
            let now = clock.now
            if exitedAt == nil, Self.hasExited(pid) {
                exitedAt = now
                // The leader is a zombie until reaped, so the group id cannot be reused yet.
                signalGroup(SIGKILL)
            }
            if let exitedAt {
                if open.isEmpty || now >= exitedAt + Self.drainAfterExit { break }
            } else {
                if terminatingSince == nil, now >= deadline {
                    timedOut = true
                } else if terminatingSince == nil, cancel.isCancelled {
                    cancelled = true
                }
                if terminatingSince == nil, timedOut || cancelled {
                    terminatingSince = now
                    signalGroup(SIGTERM)
                }
                if let since = terminatingSince, !killed, now >= since + killGrace {
                    killed = true
                    signalGroup(SIGKILL)
                }
            }

            guard !open.isEmpty else {
                usleep(5_000)
                continue
            }
            var descriptors = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&descriptors, nfds_t(descriptors.count), 50)
            guard ready > 0 else { continue }
            for descriptor in descriptors where descriptor.revents != 0 {
                let count = read(descriptor.fd, &buffer, buffer.count)
                if count < 0, errno == EINTR || errno == EAGAIN { continue }
                guard count > 0 else {
                    _ = close(descriptor.fd)
                    open.removeAll { $0 == descriptor.fd }
                    continue
                }
                let chunk = buffer[0..<count]
                if descriptor.fd == output[0] {
                    guard !stdoutOverflowed else { continue }
                    if stdout.count + count > maxStdoutBytes {
                        stdout.append(contentsOf: chunk.prefix(maxStdoutBytes - stdout.count))
                        stdoutOverflowed = true
                        killed = true
                        signalGroup(SIGKILL)
                    } else {
                        stdout.append(contentsOf: chunk)
                    }
                } else {
                    stderr.append(contentsOf: chunk)
                    if stderr.count > 2 * maxStderrBytes {
                        stderr.removeFirst(stderr.count - maxStderrBytes)
                        stderrTruncated = true
                    }
                }
            }
        }
        open.forEach { _ = close($0) }

        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        if stderr.count > maxStderrBytes {
            stderr.removeFirst(stderr.count - maxStderrBytes)
            stderrTruncated = true
        }
        let signal = status & 0x7f
        let termination: Termination = signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
        return CommandOutcome(
            termination: termination, stdout: stdout, stdoutOverflowed: stdoutOverflowed, stderr: stderr,
            stderrTruncated: stderrTruncated, timedOut: timedOut, cancelled: cancelled,
            duration: clock.now - started)
    }

    /// Whether `pid` has exited, without reaping it.
    private static func hasExited(_ pid: pid_t) -> Bool {
        var info = siginfo_t()
        guard waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 else { return false }
        return info._sifields._sigchld.si_pid == pid
    }
}

/// A one-way flag set from a task cancellation handler and read by the thread that runs a command.
final class CancellationFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false

    func cancel() {
        lock.withLock { cancelled = true }
    }

    var isCancelled: Bool {
        lock.withLock { cancelled }
    }
}

/// Runs blocking work on a thread of its own, so a long command never holds a thread of the cooperative pool.
func runOnOwnThread<T: Sendable>(name: String, _ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread {
            continuation.resume(returning: body())
        }
        thread.name = name
        thread.start()
    }
}

/// The conventional name of a signal number, e.g. `SIGKILL`.
func signalName(_ signal: Int32) -> String {
    switch signal {
    case SIGHUP: "SIGHUP"
    case SIGINT: "SIGINT"
    case SIGQUIT: "SIGQUIT"
    case SIGABRT: "SIGABRT"
    case SIGKILL: "SIGKILL"
    case SIGSEGV: "SIGSEGV"
    case SIGPIPE: "SIGPIPE"
    case SIGTERM: "SIGTERM"
    case SIGBUS: "SIGBUS"
    default: "signal \(signal)"
    }
}

/// How a command run for the daemon (a hook) ended.
public struct CommandResult: Sendable, Hashable {
    /// The exit status, or nil when it did not exit on its own.
    public var exitStatus: Int32?
    /// The signal that ended it, if one did.
    public var signal: Int32?
    /// Stopped at its timeout.
    public var timedOut: Bool
    /// Stopped because the calling task was cancelled.
    public var cancelled: Bool
    /// Why it could not be started, if it was not.
    public var spawnError: String?
    public var duration: Duration
    /// The last bytes of its stderr (at most 2 KB), as text.
    public var stderrTail: String
}

/// Runs `argv` as the exec backend runs its commands: no shell, a session and process group of its own, stdin
/// from /dev/null, exactly `environment`, stopped (the whole group) at `timeout` or when the calling task is
/// cancelled. The daemon's hooks run through it.
public func runCommand(_ argv: [String], environment: [String: String], timeout: Duration) async -> CommandResult {
    let runner = CommandRunner(
        timeout: timeout, killGrace: .seconds(5), maxStdoutBytes: 64 * 1024, maxStderrBytes: 2048,
        environment: environment)
    do {
        let outcome = try await runner.run(argv)
        var result = CommandResult(
            exitStatus: nil, signal: nil, timedOut: outcome.timedOut, cancelled: outcome.cancelled, spawnError: nil,
            duration: outcome.duration,
            stderrTail: String(decoding: outcome.stderr, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))
        switch outcome.termination {
        case .exited(let status): result.exitStatus = status
        case .signaled(let signal): result.signal = signal
        }
        return result
    } catch {
        let message =
            switch error {
            case .notFound(let name, let searchPath): "command '\(name)' not found in PATH \(searchPath)"
            case .system(let call, let path, let code): "\(call) of \(path) failed: \(String(cString: strerror(code)))"
            }
        return CommandResult(
            exitStatus: nil, signal: nil, timedOut: false, cancelled: false, spawnError: message, duration: .zero,
            stderrTail: "")
    }
}

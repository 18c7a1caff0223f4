import ArgumentParser
import Foundation
import Logging
import SnapcronCore
import SnapcronDaemon
import SnapcronSystemd

/// `snapcrond`: the snapcron daemon. Runs in the foreground; systemd (or a terminal) supervises it.
@main
struct Snapcrond: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapcrond",
        abstract: "Take VM images on cron schedules, follow them to ACTIVE and apply retention.",
        discussion: """
            Runs in the foreground until SIGTERM or SIGINT; SIGHUP reloads the schedule (a schedule with errors \
            is refused and the running one stays). Without a config file, one built-in 'local' backend keeps \
            images under the state directory.
            """
    )

    @Option(help: "The schedule file (default: schedule_path of the config, /etc/snapcron/schedule).")
    var schedule: String?

    @Option(help: "The config file (default: /etc/snapcron/snapcron.toml if it exists, else built-in defaults).")
    var config: String?

    @Option(
        name: .customLong("state-dir"), help: "Where the database and local images live (default: /var/lib/snapcron).")
    var stateDirectory: String?

    @Option(
        help:
            "The control socket (default: $RUNTIME_DIRECTORY/control.sock, else socket_path of the config, /run/snapcron/control.sock)."
    )
    var socket: String?

    @Option(
        name: .customLong("socket-mode"),
        help:
            "File mode of the control socket in octal: 660 (default) lets root and the socket's group connect; 666 lets every local user read (changes still need root, snapcrond's user or the group)."
    )
    var socketMode: String?

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func validate() throws {
        if let socketMode, UInt16(socketMode, radix: 8).map({ $0 <= 0o777 }) != true {
            throw ValidationError("--socket-mode: '\(socketMode)' is not an octal file mode such as 660")
        }
    }

    mutating func run() async throws {
        ProcessMemory.returnLargeBuffersWhenFreed()
        // The journal with structured fields under systemd, readable lines on stderr otherwise.
        LogDestination.detect(environment: ProcessInfo.processInfo.environment)
            .bootstrap(identifier: "snapcrond", logLevel: logLevel)
        let logger = Logger(label: "snapcrond")
        let daemon: Daemon
        do {
            daemon = try await Daemon(
                options: DaemonOptions(
                    configPath: config, schedulePath: schedule, stateDirectory: stateDirectory, socketPath: socket,
                    socketMode: socketMode.flatMap { mode_t($0, radix: 8) }),
                logger: logger, pausePoint: TestPausePoint.fromEnvironment(),
                copyPoint: TestPausePoint.copyPointFromEnvironment())
        } catch {
            FileHandle.standardError.write(Data("snapcrond: \(error)\n".utf8))
            throw ExitCode(1)
        }
        try await daemon.run()
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

/// Crash tests freeze the daemon at a named point (`SNAPCRON_TEST_PAUSE=create`, with `SNAPCRON_TEST_PAUSE_FILE`
/// to announce it) and SIGKILL it there. Inert unless both variables are set.
enum TestPausePoint {
    /// The point to freeze at and the file that announces it, when both are set.
    private static var configured: (point: String, marker: String)? {
        let environment = ProcessInfo.processInfo.environment
        guard let point = environment["SNAPCRON_TEST_PAUSE"], let marker = environment["SNAPCRON_TEST_PAUSE_FILE"]
        else { return nil }
        return (point, marker)
    }

    static func fromEnvironment() -> (@Sendable (String) async -> Void)? {
        guard let (point, marker) = configured else { return nil }
        return { reached in
            guard reached == point else { return }
            _ = FileManager.default.createFile(atPath: marker, contents: Data(reached.utf8))
            while true { try? await Task.sleep(for: .seconds(3600)) }
        }
    }

    /// `SNAPCRON_TEST_PAUSE=copy`: freezes a local copy's thread at its first extent.
    static func copyPointFromEnvironment() -> (@Sendable () -> Void)? {
        guard let (point, marker) = configured, point == "copy" else { return nil }
        return {
            _ = FileManager.default.createFile(atPath: marker, contents: Data("copy".utf8))
            while true { Thread.sleep(forTimeInterval: 3600) }
        }
    }
}

import ArgumentParser
import Foundation

/// `snapcronctl`: the operator's command for snapcron.
@main
struct Snapcronctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapcronctl",
        abstract: "Query and drive snapcron, and explain cron schedules.",
        discussion: """
            --socket PATH may also come before the subcommand (snapcronctl --socket PATH status); given both \
            before and after it, the two must agree.
            """,
        subcommands: [
            StatusCommand.self, JobsCommand.self, NextCommand.self, HistoryCommand.self, ImagesCommand.self,
            TriggerCommand.self, PauseCommand.self, ResumeCommand.self, PinCommand.self, UnpinCommand.self,
            ReloadCommand.self, CheckCommand.self, PruneCommand.self, EditCommand.self, MonitorCommand.self,
            BenchCommand.self, StoreCommand.self,
        ]
    )

    /// Runs a subcommand like ArgumentParser does, but exits with `ExitCodes.usage` for usage errors (`monitor`:
    /// a `SNAPCRON UNKNOWN` line and 3), and takes `--socket` before the subcommand too.
    static func main() {
        var arguments = Array(CommandLine.arguments.dropFirst())
        do {
            let leading = try LeadingOptions.take(from: &arguments)
            var command = try parseAsRoot(arguments)
            try leading.pass(to: &command)
            try command.run()
        } catch {
            // ArgumentParser reports bad flags and `ValidationError` as EX_USAGE (64); ours is 2, like most tools.
            guard exitCode(for: error) == .validationFailure else { exit(withError: error) }
            if arguments.first(where: { !$0.hasPrefix("-") }) == MonitorCommand.configuration.commandName {
                exit(withError: MonitorCommand.unknown(message(for: error)))
            }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            exit(withError: ExitCodes.usage)
        }
    }
}

/// Exit codes shared by the subcommands (documented in README.md). `monitor` uses the monitoring-plugin codes
/// 0-3 instead.
enum ExitCodes {
    /// The input (an expression, a schedule file) is invalid.
    static let invalidInput = ExitCode(1)
    /// The daemon refused or failed the request, or a waited-for run failed.
    static let failure = ExitCode(1)
    /// The command line is wrong: unknown flag, missing argument, malformed value.
    static let usage = ExitCode(2)
    /// The daemon is not running, or the connection broke.
    static let notRunning = ExitCode(3)
    /// The socket or the method is not permitted to this user.
    static let notPermitted = ExitCode(4)
    /// No such job, run or image.
    static let notFound = ExitCode(5)
}

import ArgumentParser
import Foundation

/// `snapcronctl`: the operator's command for snapcron.
@main
struct Snapcronctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapcronctl",
        abstract: "Query and drive snapcron, and explain cron schedules.",
        subcommands: [CheckCommand.self, NextCommand.self]
    )

    /// Runs a subcommand like ArgumentParser does, but exits with `ExitCodes.usage` for usage errors.
    static func main() {
        do {
            var command = try parseAsRoot()
            try command.run()
        } catch {
            // ArgumentParser reports bad flags and `ValidationError` as EX_USAGE (64); ours is 2, like most tools.
            guard exitCode(for: error) == .validationFailure else { exit(withError: error) }
            FileHandle.standardError.write(Data((fullMessage(for: error) + "\n").utf8))
            exit(withError: ExitCodes.usage)
        }
    }
}

/// Exit codes shared by the subcommands (documented in README.md).
enum ExitCodes {
    /// The input (an expression, a schedule file) is invalid.
    static let invalidInput = ExitCode(1)
    /// The command line is wrong: unknown flag, missing argument, malformed value.
    static let usage = ExitCode(2)
}

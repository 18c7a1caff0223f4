import ArgumentParser

/// `snapcronctl`: the operator's command for snapcron.
@main
struct Snapcronctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapcronctl",
        abstract: "Query and drive snapcron, and explain cron schedules.",
        subcommands: [NextCommand.self]
    )
}

/// Exit codes shared by the subcommands (documented in README.md).
enum ExitCodes {
    /// The input (an expression, a schedule file) is invalid.
    static let invalidInput = ExitCode(1)
}

import ArgumentParser
import ControlProtocol
import CronExpression
import Foundation
import SnapcronCore

/// `snapcronctl status`: version, uptime, jobs, running runs, next fire, last failure, store health.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Show what the daemon is doing.")

    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "Print the daemon's JSON result instead of text.") var json = false

    func run() throws {
        let (status, raw) = try connection.connect(json: json).call(.status, NoParams(), as: StatusResult.self)
        if json { return Connection.printJSON(raw) }
        print(
            "snapcrond \(status.version), pid \(status.pid), up \(Human.duration(TimeInterval(status.uptimeSeconds)))")
        print(
            "schedule:     \(status.schedulePath): \(status.jobs) job\(status.jobs == 1 ? "" : "s")"
                + (status.pausedJobs.isEmpty ? "" : ", paused: \(status.pausedJobs.joined(separator: ", "))"))
        if let next = status.nextFire {
            print("next fire:    \(next.job) at \(Human.time(next.at))")
        } else {
            print("next fire:    none")
        }
        print("running:      \(status.running.isEmpty ? "none" : "")")
        for run in status.running {
            print("  run \(run.id) \(run.job): \(run.phase)\(run.imageId.map { " image \($0)" } ?? "")")
        }
        if let failure = status.lastFailure {
            print(
                "last failure: run \(failure.id) \(failure.job) \(failure.state) at \(Human.time(failure.finishedAt)): \(failure.error ?? "")"
            )
        } else {
            print("last failure: none")
        }
        print("store:        \(status.store.ok ? "ok" : "PROBLEM: \(status.store.message)")")
        if let nodes = status.nodes {
            print("cluster:      \(nodes.count) node\(nodes.count == 1 ? "" : "s"), \(nodes.filter(\.leaseLive).count) live")
            for node in nodes {
                print(
                    "  \(node.name)\(node.isSelf ? " (this node)" : ""): \(node.leaseLive ? "live" : "LEASE LAPSED"), "
                        + "\(node.host) pid \(node.pid), v\(node.version), seen \(Human.time(node.lastSeen)), "
                        + "holds \(node.runsHeld) run\(node.runsHeld == 1 ? "" : "s")")
            }
        }
    }
}

/// `snapcronctl jobs`: every job with its next fire.
struct JobsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "jobs", abstract: "List the jobs and their next fires.")

    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "Print the daemon's JSON result instead of a table.") var json = false

    func run() throws {
        let (result, raw) = try connection.connect(json: json).call(.jobs, NoParams(), as: JobsResult.self)
        if json { return Connection.printJSON(raw) }
        var table = Table("JOB", "SCHEDULE", "ZONE", "TARGET", "NEXT FIRE", "STATE", "RETENTION")
        for job in result.jobs {
            table.add(
                job.name, job.expression, job.zone, "\(job.backend):\(job.target)", Human.time(job.nextFire),
                job.paused ? "paused" : "active", job.options)
        }
        print(table.render())
    }
}

/// `snapcronctl history`: runs, newest first.
struct HistoryCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "history", abstract: "Show past and current runs.")

    @OptionGroup var connection: ConnectionOptions
    @Option(help: "Only this job.") var job: String?
    @Option(help: "Only runs in this state (succeeded, failed, timed_out, missed, skipped, waiting, ...).") var state:
        String?
    @Option(help: "Only fires at or after this instant (ISO 8601 with Z or an offset).") var since: String?
    @Option(help: "At most this many runs (1-10000).") var limit = 20
    @Flag(help: "Also show each run's hook commands (pre, post, success, failure) and how they ended.") var verbose =
        false
    @Flag(help: "Print the daemon's JSON result instead of a table.") var json = false

    func validate() throws {
        if let since, CronFormat.parseInstant(since, in: .current) == nil {
            throw ValidationError("--since: '\(since)' is not an ISO 8601 time (e.g. 2026-01-31T00:00:00Z)")
        }
    }

    func run() throws {
        let params = HistoryParams(
            job: job, state: state, since: since.flatMap { CronFormat.parseInstant($0, in: .current) }, limit: limit,
            verbose: verbose ? true : nil)
        let (result, raw) = try connection.connect(json: json).call(.history, params, as: HistoryResult.self)
        if json { return Connection.printJSON(raw) }
        var table = Table("RUN", "JOB", "SCHEDULED", "TRIGGER", "STATE", "IMAGE", "DURATION", "ERROR")
        for run in result.runs {
            let duration = run.startedAt.flatMap { start in
                run.finishedAt.map { Human.duration($0.timeIntervalSince(start)) }
            }
            table.add(
                String(run.id), run.job, Human.time(run.scheduledAt), run.trigger, run.state, run.imageId ?? "-",
                duration ?? "-", run.error ?? "")
        }
        print(table.render())
        guard verbose else { return }
        var hooks = Table("RUN", "HOOK", "SET", "RESULT", "DURATION", "ENDED")
        guard result.runs.contains(where: { !($0.hooks ?? []).isEmpty }) else {
            return print("\nNo hook commands ran for these runs.")
        }
        for run in result.runs {
            for hook in run.hooks ?? [] {
                hooks.add(
                    String(run.id), hook.phase, hook.hookSet, hook.result,
                    Human.duration(Double(hook.durationMs) / 1000), Human.time(hook.finishedAt))
            }
        }
        print("\n" + hooks.render())
    }
}

/// `snapcronctl images JOB` / `images --orphaned`: a job's images and why retention keeps each, or the images of
/// targets no job images now.
struct ImagesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "images", abstract: "List a job's images with the retention rule that keeps each.",
        discussion: """
            With --orphaned instead of JOB, lists the images of targets no job images now (a job pointed at \
            another target, or removed): retention leaves them alone; `snapcronctl prune --orphaned` deletes them.
            """)

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The job.") var job: String?
    @Flag(help: "List the orphaned images of every job instead of one job's images.") var orphaned = false
    @Flag(help: "Print the daemon's JSON result instead of a table.") var json = false

    func validate() throws {
        try OrphanedChoice.validate(job: job, orphaned: orphaned)
    }

    func run() throws {
        guard let job else { return try runOrphaned() }
        let (result, raw) = try connection.connect(json: json).call(.images, JobParams(job: job), as: ImagesResult.self)
        if json { return Connection.printJSON(raw) }
        var table = Table("ID", "NAME", "CREATED", "STATE", "SIZE", "PINNED", "KEPT BY")
        for image in result.images {
            table.add(
                image.id, image.name, Human.time(image.createdAt), image.state, Human.size(image.sizeBytes),
                image.pinned ? "yes" : "no", image.keptBy ?? "- (next prune: \(image.pruneReason ?? "delete"))")
        }
        print(table.render())
    }

    private func runOrphaned() throws {
        let (result, raw) = try connection.connect(json: json).call(.orphans, NoParams(), as: OrphansResult.self)
        if json { return Connection.printJSON(raw) }
        var table = Table("JOB", "TARGET", "ID", "NAME", "CREATED", "STATE", "PINNED", "REASON")
        for image in result.images {
            table.add(
                image.job, "\(image.backend):\(image.target)", image.id, image.name, Human.time(image.createdAt),
                image.state, image.pinned ? "yes" : "no", image.reason)
        }
        print(table.render())
    }
}

/// `images` and `prune` take a job or `--orphaned`, exactly one.
enum OrphanedChoice {
    static func validate(job: String?, orphaned: Bool) throws {
        switch (job, orphaned) {
        case (_?, true): throw ValidationError("give JOB or --orphaned, not both")
        case (nil, false): throw ValidationError("missing JOB (or --orphaned for the images of targets no job uses)")
        default: break
        }
    }
}

/// `snapcronctl trigger JOB [--wait]`: run a job now.
struct TriggerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trigger", abstract: "Run a job now, outside its schedule.",
        discussion: "With --wait, follows the run through QUEUED > SAVING > ACTIVE; exit status 1 if it fails.")

    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The job.") var job: String
    @Flag(help: "Wait until the run finishes, showing its progress.") var wait = false
    @Option(help: "Seconds between progress polls.") var interval: Double = 1
    @Flag(help: "Print the daemon's JSON result instead of text.") var json = false

    func run() throws {
        let connection = try self.connection.connect(json: json)
        let (result, raw) = try connection.call(.trigger, JobParams(job: job), as: TriggerResult.self)
        if !wait {
            if json { return Connection.printJSON(raw) }
            print("run \(result.runId) of \(result.job) started")
            return
        }
        let interactive = isatty(STDOUT_FILENO) == 1 && !json
        var stages: [String] = []
        var last: RunInfo
        while true {
            let (run, _) = try connection.call(.run, RunParams(id: result.runId), as: RunInfo.self)
            last = run
            let stage = Self.stage(of: run)
            if stages.last != stage {
                stages.append(stage)
                if !json {
                    let line = "run \(run.id) \(run.job): " + stages.joined(separator: " > ")
                    if interactive {
                        FileHandle.standardOutput.write(Data(("\r" + line).utf8))
                    } else {
                        print(line)
                    }
                }
            }
            if run.isFinished { break }
            Thread.sleep(forTimeInterval: max(0.05, interval))
        }
        if interactive { print("") }
        if json {
            let (_, raw) = try connection.call(.run, RunParams(id: result.runId), as: RunInfo.self)
            Connection.printJSON(raw)
        } else if let error = last.error, last.state != "succeeded" {
            Output.printError("run \(last.id) \(last.state): \(error)")
        } else if let image = last.imageId {
            print("image \(image) is ACTIVE")
        }
        if last.state != "succeeded" { throw ExitCodes.failure }
    }

    /// The run's progress as the operator knows it from the cloud consoles: QUEUED, SAVING, ACTIVE.
    static func stage(of run: RunInfo) -> String {
        switch run.state {
        case "claimed": "CLAIMED"
        case "creating": "CREATING"
        case "waiting": (run.imageState ?? "queued").uppercased()
        case "succeeded": "ACTIVE"
        default: run.state.uppercased()
        }
    }
}

/// `snapcronctl pause JOB`.
struct PauseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pause", abstract: "Stop a job's scheduled fires (persisted; trigger still works).")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The job.") var job: String
    @Flag(help: "Print the daemon's JSON result instead of text.") var json = false

    func run() throws {
        let (result, raw) = try connection.connect(json: json).call(.pause, JobParams(job: job), as: PauseResult.self)
        if json { return Connection.printJSON(raw) }
        print("\(result.job) paused")
    }
}

/// `snapcronctl resume JOB`.
struct ResumeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "resume", abstract: "Resume a paused job.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The job.") var job: String
    @Flag(help: "Print the daemon's JSON result instead of text.") var json = false

    func run() throws {
        let (result, raw) = try connection.connect(json: json).call(.resume, JobParams(job: job), as: PauseResult.self)
        if json { return Connection.printJSON(raw) }
        print("\(result.job) resumed")
    }
}

/// `snapcronctl pin IMAGE`.
struct PinCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pin", abstract: "Keep an image forever: retention never deletes a pinned image.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The image id (see `snapcronctl images JOB`).") var image: String
    @Option(help: "The job the image belongs to (needed only if two backends share the id).") var job: String?
    @Flag(help: "Print the daemon's JSON result instead of text.") var json = false

    func run() throws {
        let (result, raw) = try connection.connect(json: json).call(
            .pin, PinParams(image: image, job: job), as: ImageInfo.self)
        if json { return Connection.printJSON(raw) }
        print("image \(result.id) of \(result.job) pinned")
    }
}

/// `snapcronctl unpin IMAGE`.
struct UnpinCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "unpin", abstract: "Let retention decide about an image again.")
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The image id.") var image: String
    @Option(help: "The job the image belongs to.") var job: String?
    @Flag(help: "Print the daemon's JSON result instead of text.") var json = false

    func run() throws {
        let (result, raw) = try connection.connect(json: json).call(
            .unpin, PinParams(image: image, job: job), as: ImageInfo.self)
        if json { return Connection.printJSON(raw) }
        print("image \(result.id) of \(result.job) unpinned")
    }
}

/// `snapcronctl reload`: the synchronous reload behind `ExecReload=`.
struct ReloadCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reload", abstract: "Re-read the schedule; returns when it is live, or with its errors.",
        discussion: "On errors the running schedule stays; they are printed compiler-style and the exit status is 1.")
    @OptionGroup var connection: ConnectionOptions
    @Flag(help: "Print the daemon's JSON result instead of text.") var json = false

    func run() throws {
        let (result, raw) = try connection.connect(json: json).call(.reload, NoParams(), as: ReloadResult.self)
        if json { return Connection.printJSON(raw) }
        for warning in result.warnings { Output.printError(warning.rendered) }
        print("schedule reloaded: \(result.jobs) job\(result.jobs == 1 ? "" : "s")")
    }
}

/// `snapcronctl prune JOB [--dry-run]` / `prune --orphaned [--dry-run]`.
struct PruneCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "prune", abstract: "Apply a job's retention now, or show the plan with --dry-run.",
        discussion: """
            With --orphaned instead of JOB, deletes the images of targets no job images now (see `snapcronctl \
            images --orphaned`), but never a pinned one, one not active, or the newest active one of each old \
            target.
            """)
    @OptionGroup var connection: ConnectionOptions
    @Argument(help: "The job.") var job: String?
    @Flag(help: "Delete the orphaned images of every job instead of applying one job's retention.") var orphaned =
        false
    @Flag(name: .customLong("dry-run"), help: "Only show what would be kept and deleted, and why.") var dryRun = false
    @Flag(help: "Print the daemon's JSON result instead of a table.") var json = false

    func validate() throws {
        try OrphanedChoice.validate(job: job, orphaned: orphaned)
    }

    func run() throws {
        guard let job else { return try runOrphaned() }
        let (result, raw) = try connection.connect(json: json).call(
            .prune, PruneParams(job: job, dryRun: dryRun), as: PruneResult.self)
        if json { return Connection.printJSON(raw) }
        print("\(result.job): \(result.policy)\(result.dryRun ? " (dry run)" : "")")
        var table = Table("ID", "CREATED", "STATE", "ACTION", "REASON")
        for decision in result.decisions {
            table.add(
                decision.id, Human.time(decision.createdAt), decision.state, decision.action,
                decision.reasons.joined(separator: "; "))
        }
        print(table.render())
        let deletions = result.decisions.filter { $0.action == "delete" }.count
        if result.dryRun {
            print("would delete \(deletions) image\(deletions == 1 ? "" : "s")")
        } else {
            print("deleting \(result.deleting.count) image\(result.deleting.count == 1 ? "" : "s")")
        }
    }

    private func runOrphaned() throws {
        let (result, raw) = try connection.connect(json: json).call(
            .pruneOrphans, PruneOrphansParams(dryRun: dryRun), as: PruneOrphansResult.self)
        if json { return Connection.printJSON(raw) }
        var table = Table("JOB", "TARGET", "ID", "CREATED", "STATE", "ACTION", "REASON")
        for image in result.images {
            table.add(
                image.job, "\(image.backend):\(image.target)", image.id, Human.time(image.createdAt), image.state,
                image.action, image.reason)
        }
        if !result.images.isEmpty { print(table.render()) }
        let count = "\(result.images.count) orphaned image\(result.images.count == 1 ? "" : "s")"
        if result.dryRun {
            print("would delete \(count)")
        } else {
            let deleted = result.images.filter { $0.state == "deleted" }.count
            print("deleted \(deleted) of \(count)")
            if deleted < result.images.count { throw ExitCodes.failure }
        }
    }
}

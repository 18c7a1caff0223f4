import Foundation
import SnapcronStore
import TestThreads
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The built `snapcrond`, next to the test bundle (`.build/debug`).
let snapcrondBinary: URL? = {
    var directories: [URL] = []
    if let executable = Bundle.main.executableURL { directories.append(executable.deletingLastPathComponent()) }
    directories += Bundle.allBundles.filter { $0.bundlePath.hasSuffix(".xctest") }
        .map { $0.bundleURL.deletingLastPathComponent() }
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    directories.append(root.appendingPathComponent(".build/debug"))
    return directories.map { $0.appendingPathComponent("snapcrond") }
        .first { FileManager.default.isExecutableFile(atPath: $0.path) }
}()

/// Polls `condition` every 50 ms until it holds or `seconds` pass.
func eventually(within seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let limit = Date().addingTimeInterval(seconds)
    while Date() < limit {
        if try condition() { return true }
        usleep(50_000)
    }
    return try condition()
}

/// A temp directory with a small sparse disk image, a config, a schedule and a state directory.
final class DaemonWorkspace {
    let url: URL
    var path: String { url.path }
    var state: String { path + "/state" }
    var images: String { state + "/images" }
    var disk: String { path + "/disk.img" }
    var schedule: String { path + "/schedule" }
    var config: String { path + "/snapcron.toml" }
    var marker: String { path + "/paused" }

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("snapcrond-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(atPath: url.path + "/state", withIntermediateDirectories: true)
        // 8 MiB sparse, with data at the start and in the middle.
        let handle = try #require(FileHandle(forWritingAtPath: { () -> String in
            FileManager.default.createFile(atPath: url.path + "/disk.img", contents: nil)
            return url.path + "/disk.img"
        }()))
        try handle.write(contentsOf: Data(repeating: 0xAB, count: 64 * 1024))
        try handle.seek(toOffset: 4 << 20)
        try handle.write(contentsOf: Data("snapcron".utf8))
        try handle.truncate(atOffset: 8 << 20)
        try handle.close()
        try "[daemon]\nstate_dir = \"\(state)\"\n".write(toFile: config, atomically: true, encoding: .utf8)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    /// A daily job `crash` at the UTC minute of `fire`, on the disk image.
    func writeSchedule(firingAt fire: Date, options: String = "deadline=3h") throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.hour, .minute], from: fire)
        try "CRON_TZ=UTC\n\(parts.minute!) \(parts.hour!) * * *   crash   local:\(disk)   \(options)\n"
            .write(toFile: schedule, atomically: true, encoding: .utf8)
    }

    /// Makes the store say the job's last fire was `last`, so the next one is due at start (a catch-up).
    func seedLastFire(_ last: Date) throws {
        let store = try SnapcronDatabase(path: state + "/state.db")
        try store.recordMissed(job: "crash", scheduledAt: last, now: Date(), reason: "seeded by the test")
        try store.close()
    }

    /// The image folders on disk (not trash left by an interrupted delete).
    func imageFolders() -> Set<String> {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: images)) ?? []
        return Set(names.filter { !$0.hasPrefix(".") })
    }

    func store() throws -> SnapcronDatabase { try SnapcronDatabase(path: state + "/state.db") }
}

/// One `snapcrond` process with its stderr in a file.
final class DaemonProcess {
    let process = Process()
    let stderrPath: String

    convenience init(_ workspace: DaemonWorkspace, pause: String? = nil, arguments: [String]? = nil) throws {
        try self.init(
            workspaceDirectory: workspace.path,
            arguments: arguments ?? ["--config", workspace.config, "--schedule", workspace.schedule],
            pause: pause.map { ($0, workspace.marker) })
    }

    /// `snapcrond ARGUMENTS`, its stderr kept in `workspaceDirectory`; `pause` freezes it at a named point.
    init(workspaceDirectory: String, arguments: [String], pause: (point: String, marker: String)? = nil) throws {
        let binary = try #require(snapcrondBinary, "snapcrond not found next to the test bundle; run swift build")
        process.executableURL = binary
        process.arguments = arguments
        var environment = ProcessInfo.processInfo.environment
        environment["SNAPCRON_TEST_PAUSE"] = pause?.point
        environment["SNAPCRON_TEST_PAUSE_FILE"] = pause?.marker
        process.environment = environment
        stderrPath = workspaceDirectory + "/stderr-\(UUID().uuidString)"
        FileManager.default.createFile(atPath: stderrPath, contents: nil)
        let stderr = try FileHandle(forWritingTo: URL(fileURLWithPath: stderrPath))
        process.standardError = stderr
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        try stderr.close()
    }

    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }

    func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// Waits (bounded) for the process to exit; returns its status, nil if it is still running (then kills it).
    func waitForExit(within seconds: Double) -> Int32? {
        if eventually(within: seconds, { !process.isRunning }) {
            process.waitUntilExit()
            return process.terminationStatus
        }
        signal(SIGKILL)
        process.waitUntilExit()
        return nil
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}

/// Whole-minute instant `minutes` before now.
func minutesAgo(_ minutes: Int) -> Date {
    let now = Date().timeIntervalSince1970
    return Date(timeIntervalSince1970: (now / 60).rounded(.down) * 60 - Double(minutes * 60))
}

@Suite(.onOwnThreads, .serialized) struct DaemonCrashTests {
    /// Kill -9 at a pause point of the first run (or inside its local copy), restart, and check that the run
    /// finishes exactly once, with a complete image.
    @Test(arguments: ["create", "created", "poll", "copy"])
    func killedDuringARunResumesItWithoutDuplicateOrLoss(_ point: String) async throws {
        let workspace = try DaemonWorkspace()
        // "copy" stops inside the local copy, which a reflink would skip.
        try "[daemon]\nstate_dir = \"\(workspace.state)\"\n[backends.local]\ntype = \"local\"\nreflink = false\n"
            .write(toFile: workspace.config, atomically: true, encoding: .utf8)
        let fire = minutesAgo(60)
        try workspace.writeSchedule(firingAt: fire)
        try workspace.seedLastFire(fire.addingTimeInterval(-86_400))

        let first = try DaemonProcess(workspace, pause: point)
        let paused = eventually(within: 60) { FileManager.default.fileExists(atPath: workspace.marker) }
        #expect(paused, "never reached pause point \(point): \(first.stderr)")
        first.signal(SIGKILL)
        _ = first.waitForExit(within: 10)

        let second = try DaemonProcess(workspace)
        let store = try workspace.store()
        let finished = try eventually(within: 60) {
            try store.runs(job: "crash").first { $0.scheduledAt == fire }?.state.isTerminal == true
        }
        #expect(finished, "the run did not finish after restart: \(second.stderr)")
        second.signal(SIGTERM)
        #expect(second.waitForExit(within: 10) == 0)

        let runs = try store.runs(job: "crash")
        #expect(runs.map(\.scheduledAt) == [fire, fire.addingTimeInterval(-86_400)], "the fire claimed once")
        let run = try #require(runs.first)
        #expect(run.state == .succeeded, "\(run)")
        #expect(run.trigger == .catchUp)
        #expect(try store.unfinishedRuns().isEmpty)
        let images = try store.images(job: "crash")
        #expect(images.map(\.id) == [run.imageID].compactMap { $0 })
        #expect(images.allSatisfy { $0.state == .active })
        #expect(workspace.imageFolders() == Set(images.map(\.id)), "store rows match image folders on disk")
        let manifest = workspace.images + "/" + (run.imageID ?? "?") + "/manifest.json"
        #expect(try String(contentsOfFile: manifest, encoding: .utf8).contains("active"))
        try store.close()
    }

    /// Kill -9 while retention deletes an older image, restart: the store and the disk agree.
    @Test(arguments: ["delete", "deleted"])
    func killedDuringRetentionLeavesStoreAndDiskConsistent(_ point: String) async throws {
        let workspace = try DaemonWorkspace()
        let older = minutesAgo(120)
        let newer = minutesAgo(60)
        try workspace.writeSchedule(firingAt: older, options: "deadline=3h keep=1")
        try workspace.seedLastFire(older.addingTimeInterval(-86_400))
        let store = try workspace.store()

        // A first run makes the image retention will delete.
        let first = try DaemonProcess(workspace)
        #expect(
            try eventually(within: 60) { try store.runs(job: "crash").first?.state == .succeeded },
            "\(first.stderr)")
        first.signal(SIGTERM)
        #expect(first.waitForExit(within: 10) == 0)
        let oldImage = try #require(try store.images(job: "crash").first?.id)

        // The job moves to a later minute: its fire is due at once, and keep=1 deletes the older image.
        try workspace.writeSchedule(firingAt: newer, options: "deadline=3h keep=1")
        let second = try DaemonProcess(workspace, pause: point)
        #expect(
            eventually(within: 60) { FileManager.default.fileExists(atPath: workspace.marker) },
            "never reached pause point \(point): \(second.stderr)")
        second.signal(SIGKILL)
        _ = second.waitForExit(within: 10)
        #expect(workspace.imageFolders().contains(oldImage) == (point == "delete"))

        let third = try DaemonProcess(workspace)
        let consistent = try eventually(within: 30) {
            try Set(store.images(job: "crash").map(\.id)) == workspace.imageFolders()
                && store.image(id: oldImage, backend: "local")?.state == .deleted
        }
        third.signal(SIGTERM)
        #expect(third.waitForExit(within: 10) == 0)
        let recorded = try store.images(job: "crash", includeDeleted: true)
        #expect(consistent, "store \(recorded) vs disk \(workspace.imageFolders())")
        let runs = try store.runs(job: "crash")
        #expect(runs.filter { $0.state == .succeeded }.count == 2)
        #expect(try store.unfinishedRuns().isEmpty)
        let live = try store.images(job: "crash")
        #expect(live.count == 1 && live.first?.id != oldImage)
        try store.close()
    }
}

@Suite(.onOwnThreads, .serialized) struct DaemonSignalTests {
    @Test func sighupWithABrokenScheduleKeepsTheRunningOneAndSaysWhy() async throws {
        let workspace = try DaemonWorkspace()
        try workspace.writeSchedule(firingAt: minutesAgo(-600))
        let daemon = try DaemonProcess(workspace)
        #expect(eventually(within: 30) { daemon.stderr.contains("Scheduler started") }, "\(daemon.stderr)")
        try "CRON_TZ=UTC\n0 3 * * 8   crash   local:\(workspace.disk)\n"
            .write(toFile: workspace.schedule, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        #expect(
            eventually(within: 30) { daemon.stderr.contains("Reload failed; the running schedule stays") },
            "\(daemon.stderr)")
        #expect(daemon.stderr.contains("\(workspace.schedule):2:9"), "\(daemon.stderr)")
        #expect(daemon.process.isRunning)
        // A good schedule again: reloads.
        try workspace.writeSchedule(firingAt: minutesAgo(-300))
        daemon.signal(SIGHUP)
        #expect(eventually(within: 30) { daemon.stderr.contains("Schedule reloaded") }, "\(daemon.stderr)")
        let stop = Date()
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(within: 10) == 0)
        #expect(Date().timeIntervalSince(stop) < 5, "SIGTERM exits promptly")
    }

    @Test func badScheduleAtStartExitsOneWithEveryErrorLocated() throws {
        let workspace = try DaemonWorkspace()
        try """
            CRON_TZ=UTC
            0 3 * * 8      one    local:\(workspace.disk)
            0 61 * * *     two    local:\(workspace.disk)
            0 3 * * *      three  nowhere:x
            """.write(toFile: workspace.schedule, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(workspace)
        #expect(daemon.waitForExit(within: 30) == 1)
        let stderr = daemon.stderr
        for location in ["\(workspace.schedule):2:9", "\(workspace.schedule):3:3", "\(workspace.schedule):4:"] {
            #expect(stderr.contains(location), "\(location) in \(stderr)")
        }
    }

    @Test func badConfigAtStartExitsOneWithItsLocation() throws {
        let workspace = try DaemonWorkspace()
        try workspace.writeSchedule(firingAt: minutesAgo(-600))
        try "[daemon]\nstate_dir = \"\(workspace.state)\"\nmax_concurrent_creates = = 3\n"
            .write(toFile: workspace.config, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(workspace)
        #expect(daemon.waitForExit(within: 30) == 1)
        #expect(daemon.stderr.contains("\(workspace.config):3:"), "\(daemon.stderr)")
    }
}

@Suite(.onOwnThreads) struct DaemonHookTests {
    /// SIGTERM to the real daemon while a `pre` hook runs: pre is stopped, post runs exactly once, the daemon exits
    /// 0 promptly, and the next start runs the fire again (pre and post again) to success.
    @Test func sigtermDuringPreRunsPostOnceAndTheNextStartFinishesTheRun() async throws {
        let workspace = try DaemonWorkspace()
        let log = workspace.path + "/hooks.log"
        let hang = workspace.path + "/hang"
        _ = FileManager.default.createFile(atPath: hang, contents: nil)
        try """
            [daemon]
            state_dir = "\(workspace.state)"

            [hooks.freeze]
            pre = ["/bin/sh", "-c", "echo pre >>'\(log)'; if [ -e '\(hang)' ]; then exec sleep 300; fi"]
            post = ["/bin/sh", "-c", "echo post >>'\(log)'"]
            timeout = "5m"
            """.write(toFile: workspace.config, atomically: true, encoding: .utf8)
        let fire = minutesAgo(60)
        try workspace.writeSchedule(firingAt: fire, options: "deadline=3h hooks=freeze")
        try workspace.seedLastFire(fire.addingTimeInterval(-86_400))
        func lines() -> [String] {
            ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
        }

        let first = try DaemonProcess(workspace)
        #expect(eventually(within: 30) { lines() == ["pre"] }, "pre never started: \(first.stderr)")
        let stop = Date()
        first.signal(SIGTERM)
        #expect(first.waitForExit(within: 120) == 0, "\(first.stderr)")
        #expect(Date().timeIntervalSince(stop) < 120, "pre was stopped, not waited out")
        #expect(lines() == ["pre", "post"])
        #expect(workspace.imageFolders().isEmpty)

        try FileManager.default.removeItem(atPath: hang)
        let second = try DaemonProcess(workspace)
        let store = try workspace.store()
        let finished = try eventually(within: 60) {
            try store.runs(job: "crash").first { $0.scheduledAt == fire }?.state.isTerminal == true
        }
        #expect(finished, "\(second.stderr)")
        second.signal(SIGTERM)
        #expect(second.waitForExit(within: 10) == 0)
        #expect(lines() == ["pre", "post", "pre", "post"])
        let run = try #require(try store.runs(job: "crash").first { $0.scheduledAt == fire })
        #expect(run.state == .succeeded)
        // What history --verbose shows: the stopped pre, its post, then the second start's pre and post.
        let hooks = try store.hookResults(runIDs: [run.id])[run.id] ?? []
        #expect(hooks.map(\.phase) == [.pre, .post, .pre, .post])
        #expect(hooks.map(\.result) == ["stopped: the daemon is stopping", "exit 0", "exit 0", "exit 0"], "\(hooks)")
        #expect(workspace.imageFolders().count == 1)
    }
}

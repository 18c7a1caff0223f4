import BackendTypes
import Foundation
import Logging
import SnapcronConfig
import SnapcronCore
import SnapcronStore
import SnapcronTestKit
import SnapshotBackend
import TestThreads
import Testing

@testable import SnapcronDaemon

/// Hooks run as real processes (through the daemon's `CommandHookRunner`) around creates on a fake backend, with
/// the scheduler on a manual clock. Each hook appends a line to a log file, so the test sees exactly what ran.
@Suite(.onOwnThreads) struct HookTests {
    let directory: String
    let log: String

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("snapcron-hooks-\(UUID().uuidString)")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        log = directory + "/hooks.log"
    }

    /// A hook command: `sh -c SCRIPT` with the log path as `$1`, so every hook can write `echo ... >>"$1"`.
    func script(_ body: String) -> [String] { ["/bin/sh", "-c", body, "hook", log] }

    var lines: [String] {
        ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    static let start = Date(timeIntervalSince1970: 1_780_000_000 - 1_780_000_000.truncatingRemainder(dividingBy: 60) + 30)

    struct Harness {
        let scheduler: SchedulerService
        let loop: Task<Void, any Error>
        let clock: ManualClock
        let store: SnapcronDatabase
        let fake: FakeSnapshotBackend
    }

    /// A scheduler with one every-minute job `db` on backend `fake` using hook set `set`; started and idle.
    /// `wrap` puts a backend of the test's own around the fake; `notifier` delivers `notify_url` and `ping_url`.
    func start(
        _ set: HookSet, fake: FakeSnapshotBackend = FakeSnapshotBackend(name: "fake"), options: String = "",
        wrap: (FakeSnapshotBackend) -> any SnapshotBackend = { $0 }, notifier: (any RunNotifier)? = nil
    ) async throws -> Harness {
        let schedule = try parse("* * * * *  db  fake:vm1  hooks=\(set.name) \(options)", with: set)
        let clock = ManualClock(now: Self.start)
        let store = try SnapcronDatabase.inMemory()
        var logger = Logger(label: "hooks-test")
        logger.logLevel = .critical
        let scheduler = SchedulerService(
            jobs: schedule.jobs, store: store, backends: ["fake": wrap(fake)], clock: clock, logger: logger,
            hookRunner: CommandHookRunner(), notifier: notifier)
        let loop = Task { try await scheduler.run() }
        await scheduler.waitUntilIdle()
        return Harness(scheduler: scheduler, loop: loop, clock: clock, store: store, fake: fake)
    }

    /// A one-line schedule on backend `fake`, with the hook set `set` in the config.
    func parse(_ line: String, with set: HookSet) throws -> Schedule {
        var config = SnapcronConfig.default(stateDir: directory)
        config.backends["fake"] = BackendConfig(name: "fake", type: .exec)
        config.hooks[set.name] = set
        return try ScheduleFile.parse(text: line + "\n", file: "schedule", config: config, now: Self.start, systemZone: .utc)
    }

    /// Moves the clock to the next minute (the fire) and on until the run ends.
    func runOneFire(_ harness: Harness) async throws -> RunRecord {
        harness.clock.advance(by: 30)
        for _ in 0..<60 {
            await harness.scheduler.waitUntilIdle()
            if let run = try harness.store.runs(job: "db").first, run.state.isTerminal { return run }
            harness.clock.advance(by: 2)
        }
        throw HookTestError("the run did not end: \(try harness.store.runs(job: "db"))")
    }

    func stop(_ harness: Harness) async {
        harness.loop.cancel()
        _ = await harness.loop.result
    }

    struct HookTestError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    @Test func aPreThatFailsSkipsTheImageAndPostStillRunsOnce() async throws {
        var set = HookSet(name: "freeze")
        set.pre = script(#"echo "pre $SNAPCRON_JOB $SNAPCRON_TARGET $SNAPCRON_PHASE" >>"$1"; exit 3"#)
        set.post = script(#"echo "post $SNAPCRON_PHASE" >>"$1""#)
        let harness = try await start(set)
        let run = try await runOneFire(harness)
        await stop(harness)
        #expect(lines == ["pre db vm1 pre", "post post"])
        #expect(run.state == .failed)
        #expect(run.error?.contains("pre hook of 'freeze' failed (exit 3): no image taken") == true, "\(run.error ?? "")")
        #expect(await harness.fake.images.isEmpty)
    }

    @Test func aPreThatHangsIsStoppedAtItsTimeoutAndPostRunsOnce() async throws {
        var set = HookSet(name: "slow")
        set.pre = script(#"echo pre >>"$1"; exec sleep 30"#)
        set.post = script(#"echo post >>"$1""#)
        set.timeout = .seconds(1)
        let harness = try await start(set)
        let run = try await runOneFire(harness)
        await stop(harness)
        #expect(lines == ["pre", "post"])
        // Stopped at its timeout (waiting 30 s out would have ended it with exit 0).
        #expect(run.state == .failed && run.error?.contains("(timed out)") == true, "\(run.error ?? "")")
    }

    @Test func aCreateThatFailsAfterPreStillGetsItsPostOnce() async throws {
        var set = HookSet(name: "freeze")
        set.pre = script(#"echo pre >>"$1""#)
        set.post = script(#"echo "post image=[$SNAPCRON_IMAGE]" >>"$1""#)
        let fake = FakeSnapshotBackend(name: "fake")
        await fake.failAlways(.create, message: "quota exceeded")
        let harness = try await start(set, fake: fake, options: "retries=0")
        let run = try await runOneFire(harness)
        await stop(harness)
        #expect(lines == ["pre", "post image=[]"])
        #expect(run.state == .failed && run.error?.contains("quota exceeded") == true)
    }

    @Test func stoppingTheDaemonDuringPreStopsPreAndRunsPostOnce() async throws {
        var set = HookSet(name: "freeze")
        set.pre = script(#"echo pre >>"$1"; exec sleep 300"#)
        set.post = script(#"echo post >>"$1""#)
        set.timeout = .seconds(300)
        let harness = try await start(set)
        harness.clock.advance(by: 30)
        // Wait (real time) until pre is running, then stop the daemon as SIGTERM does: cancel its loop.
        for _ in 0..<500 where lines.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        #expect(lines == ["pre"])
        let stopping = ContinuousClock.now
        await stop(harness)
        #expect(ContinuousClock.now - stopping < .seconds(120), "pre was stopped, not waited out")
        #expect(lines == ["pre", "post"])
        #expect(await harness.fake.images.isEmpty)
        // The run is left to the next start (which runs pre again), not recorded as failed.
        #expect(try harness.store.runs(job: "db").first?.state.isTerminal == false)
    }

    /// A backend whose create never returns (it ignores cancellation, as a stuck API call would).
    struct HangingCreates: SnapshotBackend {
        let base: FakeSnapshotBackend
        var name: String { base.name }
        func create(target: String, name: String, description: String, logger: Logger) async throws -> ImageRef {
            await withCheckedContinuation { (_: CheckedContinuation<Void, Never>) in }
            fatalError("unreachable")
        }
        func status(_ image: ImageRef, logger: Logger) async throws -> ImageState {
            try await base.status(image, logger: logger)
        }
        func list(target: String, logger: Logger) async throws -> [ImageInfo] {
            try await base.list(target: target, logger: logger)
        }
        func delete(_ image: ImageRef, logger: Logger) async throws { try await base.delete(image, logger: logger) }
        func validate(target: String) throws { try base.validate(target: target) }
    }

    @Test func stoppingTheDaemonDuringTheCreateCutsItAndRunsPostOnce() async throws {
        var set = HookSet(name: "freeze")
        set.pre = script(#"echo pre >>"$1""#)
        set.post = script(#"echo post >>"$1""#)
        let harness = try await start(set, wrap: { HangingCreates(base: $0) })
        harness.clock.advance(by: 30)
        for _ in 0..<500 where lines.isEmpty { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(200))  // pre has ended; the create hangs
        #expect(lines == ["pre"])
        await stop(harness)
        #expect(lines == ["pre", "post"])
        #expect(try harness.store.runs(job: "db").first?.state.isTerminal == false, "resumed at the next start")
    }

    @Test func continueTakesACrashConsistentImageAndSaysSo() async throws {
        var set = HookSet(name: "freeze")
        set.pre = script(#"echo pre >>"$1"; exit 1"#)
        set.post = script(#"echo "post $SNAPCRON_IMAGE_NAME" >>"$1""#)
        set.onPreFailure = .continue
        let fake = FakeSnapshotBackend(name: "fake", defaultBehavior: .active)
        let harness = try await start(set, fake: fake)
        let run = try await runOneFire(harness)
        await stop(harness)
        #expect(run.state == .succeeded)
        #expect(run.error?.contains("the image is crash-consistent") == true, "\(run.error ?? "")")
        #expect(lines == ["pre", "post \(run.imageName ?? "?")"])
        #expect(await harness.fake.images.count == 1)
    }

    @Test func successAndFailureHooksGetTheRunsOutcome() async throws {
        var set = HookSet(name: "notify")
        set.onSuccess = script(#"echo "success $SNAPCRON_PHASE $SNAPCRON_STATE $SNAPCRON_IMAGE" >>"$1""#)
        set.onFailure = script(#"echo "failure $SNAPCRON_STATE $SNAPCRON_ERROR" >>"$1""#)
        let fake = FakeSnapshotBackend(name: "fake", defaultBehavior: .active)
        let harness = try await start(set, fake: fake, options: "retries=0")
        let succeeded = try await runOneFire(harness)
        await fake.failAlways(.create, message: "boom")
        harness.clock.advance(by: 60 - harness.clock.now().timeIntervalSince1970.truncatingRemainder(dividingBy: 60))
        for _ in 0..<60 {
            await harness.scheduler.waitUntilIdle()
            if try harness.store.runs(job: "db").filter(\.state.isTerminal).count == 2 { break }
            harness.clock.advance(by: 2)
        }
        await harness.scheduler.waitUntilIdle()
        await stop(harness)
        let failed = try #require(try harness.store.runs(job: "db").first { $0.state == .failed })
        #expect(lines.first == "success success succeeded \(succeeded.imageID ?? "?")")
        #expect(lines.count == 2 && lines[1].hasPrefix("failure failed ") && lines[1].contains("boom"), "\(lines)")
        #expect(failed.error?.contains("boom") == true)
    }

    @Test func aCommandThatCannotStartCountsAsAFailedPre() async throws {
        var set = HookSet(name: "missing")
        set.pre = ["snapcron-no-such-hook-command"]
        set.post = script(#"echo post >>"$1""#)
        let harness = try await start(set)
        let run = try await runOneFire(harness)
        await stop(harness)
        #expect(lines == ["post"])
        #expect(run.error?.contains("not started: command 'snapcron-no-such-hook-command' not found") == true, "\(run.error ?? "")")
    }
}

@Suite(.onOwnThreads) struct HookConfigTests {
    func read(_ toml: String) -> (SnapcronConfig?, String) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("hooks-\(UUID().uuidString).toml").path
        try? toml.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            return (try SnapcronConfig.load(path: path, stateDirectory: "/tmp/snapcron-hooks-test"), "")
        } catch {
            return (nil, "\(error)")
        }
    }

    @Test func aHookSetIsReadWithItsCommandsTimeoutAndPolicy() throws {
        let (config, errors) = read(
            """
            [hooks.freeze]
            pre = ["virsh", "domfsfreeze", "{target}"]
            post = ["virsh", "domfsthaw", "{target}"]
            on_failure = ["/usr/local/bin/page", "{job}: {error}"]
            timeout = "30s"
            on_pre_failure = "continue"

            [backends.kvm]
            type = "exec"
            create = ["/usr/local/bin/snap", "{target}", "{name}"]
            hooks = "freeze"
            """)
        let set = try #require(config?.hooks["freeze"], "\(errors)")
        #expect(set.pre == ["virsh", "domfsfreeze", "{target}"])
        #expect(set.timeout == .seconds(30) && set.onPreFailure == .continue && set.onSuccess == nil)
        #expect(config?.backendHooks["kvm"] == "freeze")
        #expect(HookSet.expand(set.onFailure!, ["job": "db", "error": "quota"]) == ["/usr/local/bin/page", "db: quota"])
    }

    @Test func badHookTablesSayWhereAndWhy() {
        let (_, errors) = read(
            """
            [hooks.a]
            pre = ["virsh", "{domain}"]
            on_pre_failure = "maybe"

            [hooks.b]
            post = []

            [backends.kvm]
            type = "exec"
            create = ["/usr/local/bin/snap", "{target}", "{name}"]
            hooks = "c"
            """)
        #expect(errors.contains("hooks.a.pre: unknown placeholder {domain}"), "\(errors)")
        #expect(errors.contains("hooks.a.on_pre_failure: expected \"skip\" or \"continue\""), "\(errors)")
        #expect(errors.contains("hooks.b.post: expected a non-empty array of strings"), "\(errors)")
        #expect(errors.contains("backends.kvm.hooks: unknown hook set 'c'"), "\(errors)")
    }

    @Test func aJobNamingAnUnknownSetGetsAnErrorAtItsColumnAndNoneTurnsTheBackendsOff() throws {
        var config = SnapcronConfig.default(stateDir: "/tmp/snapcron-hooks-test")
        config.backends["fake"] = BackendConfig(name: "fake", type: .exec)
        var set = HookSet(name: "freeze")
        set.pre = ["/bin/true"]
        config.hooks["freeze"] = set
        config.backendHooks["fake"] = "freeze"
        let now = Date(timeIntervalSince1970: 1_780_000_000)
        #expect(throws: DiagnosticList.self) {
            try ScheduleFile.parse(text: "@daily db fake:vm1 hooks=frezee\n", file: "schedule", config: config, now: now)
        }
        do {
            _ = try ScheduleFile.parse(
                text: "@daily db fake:vm1 hooks=frezee\n", file: "schedule", config: config, now: now)
        } catch {
            #expect(error.description.contains("schedule:1:26: error: hooks: unknown hook set 'frezee'"), "\(error)")
            #expect(error.description.contains("did you mean 'freeze'?"))
        }
        let jobs = try ScheduleFile.parse(
            text: "@daily a fake:vm1\n@daily b fake:vm2 hooks=none\n", file: "schedule", config: config, now: now
        ).jobs
        #expect(jobs[0].options.hooks == set)
        #expect(jobs[1].options.hooks == nil)
    }
}

/// A webhook receiver on loopback (a Python test peer): POSTs follow `plan` (`slow`: 503 after 3 s, `500`, then
/// `ok`: 200); GETs (pings) are always answered 200. Every request is logged as a JSON line when it arrives.
final class WebhookReceiver {
    let port: Int
    let log: String
    let plan: String
    private var process: Process?

    init(directory: String, plan: String) throws {
        log = directory + "/requests.jsonl"
        self.plan = plan
        let probe = Process()
        probe.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        probe.arguments = ["-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"]
        let pipe = Pipe()
        probe.standardOutput = pipe
        try probe.run()
        probe.waitUntilExit()
        port = Int(String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .trimmingCharacters(in: .whitespacesAndNewlines))!
    }

    var url: String { "http://127.0.0.1:\(port)" }

    /// Starts listening (until then the port is down: connections are refused).
    func start() throws {
        let script = """
            import http.server, json, sys, time
            port, out, plan = int(sys.argv[1]), sys.argv[2], sys.argv[3].split(",")
            posts = [0]
            class Handler(http.server.BaseHTTPRequestHandler):
                def answer(self):
                    body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                    action = "ok"
                    if self.command == "POST":
                        action = plan[posts[0]] if posts[0] < len(plan) else "ok"
                        posts[0] += 1
                    code = {"slow": 503, "500": 500}.get(action, 200)
                    with open(out, "a") as f:
                        f.write(json.dumps({"method": self.command, "path": self.path, "code": code,
                                            "action": action, "body": body}) + "\\n")
                    if action == "slow":
                        time.sleep(3)
                    try:
                        self.send_response(code)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    except Exception:
                        pass
                do_GET = answer
                do_POST = answer
                def log_message(self, *args):
                    pass
            http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", script, String(port), log, plan]
        try process.run()
        self.process = process
    }

    /// The requests answered so far.
    var requests: [[String: Any]] {
        ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    deinit {
        if let process, process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

extension HookTests {
    @Test func aWebhookThatIsDownSlowThenFailingIsDeliveredOnceAndTheRunDoesNotWait() async throws {
        let receiver = try WebhookReceiver(directory: directory, plan: "slow,500,ok")
        var set = HookSet(name: "notify")
        set.notifyURL = receiver.url + "/hook?token=abc"
        set.pingURL = receiver.url + "/ping/uuid"
        var logger = Logger(label: "hooks-test")
        logger.logLevel = .critical
        let notifier = HTTPRunNotifier(
            logger: logger, retryDelays: Array(repeating: .milliseconds(300), count: 20), requestTimeout: .seconds(2))
        let harness = try await start(
            set, fake: FakeSnapshotBackend(name: "fake", defaultBehavior: .active), notifier: notifier)
        let (scheduler, clock, store) = (harness.scheduler, harness.clock, harness.store)
        clock.advance(by: 30)
        // The run ends at once, while its notifications still wait for the receiver to come up.
        var run: RunRecord?
        let nextFire = clock.now().addingTimeInterval(60)
        for _ in 0..<3000 {
            run = try store.runs(job: "db").first
            if run?.state.isTerminal == true { break }
            try await Task.sleep(for: .milliseconds(10))
            // The first poll finds the image active. The clock stays short of the next fire however long a loaded
            // machine takes, so the run is the only one.
            if clock.now() < nextFire.addingTimeInterval(-5) { clock.advance(by: 1) }
        }
        #expect(run?.state == .succeeded)
        #expect(receiver.requests.isEmpty)
        try await Task.sleep(for: .milliseconds(500))
        try receiver.start()
        await scheduler.waitUntilIdle()  // returns once every delivery has ended
        await stop(harness)

        let requests = receiver.requests
        let posts = requests.filter { $0["method"] as? String == "POST" }
        #expect(posts.map { $0["action"] as? String } == ["slow", "500", "ok"], "\(requests)")
        #expect(posts.filter { $0["code"] as? Int == 200 }.count == 1, "delivered once")
        let delivered = try #require(posts.last)
        #expect(delivered["path"] as? String == "/hook?token=abc")
        let body = try #require(
            try JSONSerialization.jsonObject(with: Data((delivered["body"] as? String ?? "").utf8)) as? [String: Any])
        #expect(body["event"] as? String == "run.finished" && body["job"] as? String == "db")
        #expect(body["state"] as? String == "succeeded" && body["run"] as? Int == Int(run?.id ?? -1))
        #expect(body["image"] as? String == run?.imageID && body["image_name"] as? String == run?.imageName)
        #expect(body["scheduled_at"] as? String != nil && body["finished_at"] as? String != nil)
        let pings = requests.filter { $0["method"] as? String == "GET" }.compactMap { $0["path"] as? String }
        // Both pings arrive. A ping whose answer took longer than the request timeout (a loaded machine) is sent
        // again: at least once, as a ping service expects, so it may arrive twice.
        #expect(Set(pings) == ["/ping/uuid", "/ping/uuid/start"], "\(requests)")
    }
}

extension HookTests {
    /// A fire missed past its deadline (the daemon was down) is a failure to whoever watches the job: on_failure
    /// runs with state `missed`, notify_url gets it, ping_url gets /fail. Only the newest missed fire is reported,
    /// not each older one recorded with it.
    @Test func aFireMissedPastItsDeadlineReachesOnFailureTheWebhookAndThePing() async throws {
        let receiver = try WebhookReceiver(directory: directory, plan: "ok")
        try receiver.start()
        var set = HookSet(name: "watch")
        set.onFailure = script(#"echo "failure $SNAPCRON_PHASE $SNAPCRON_STATE $SNAPCRON_RUN $SNAPCRON_ERROR" >>"$1""#)
        set.notifyURL = receiver.url + "/hook"
        set.pingURL = receiver.url + "/ping/uuid"
        let schedule = try parse("0 * * * *  db  fake:vm1  hooks=watch deadline=1m", with: set)
        // The daemon was down for three hours: the last fire it handled is three hours old.
        let hour = (Self.start.timeIntervalSince1970 / 3600).rounded(.down) * 3600
        let store = try SnapcronDatabase.inMemory()
        try store.recordMissed(
            job: "db", scheduledAt: Date(timeIntervalSince1970: hour - 3 * 3600), now: Self.start, reason: "seeded")
        var logger = Logger(label: "hooks-test")
        logger.logLevel = .critical
        // The receiver answers at once: the timeout only has to outlast a loaded CI machine (a ping answered after
        // the timeout would be sent again, and this test counts exactly one).
        let notifier = HTTPRunNotifier(
            logger: logger, retryDelays: Array(repeating: .milliseconds(300), count: 20), requestTimeout: .seconds(15))
        let scheduler = SchedulerService(
            jobs: schedule.jobs, store: store, backends: ["fake": FakeSnapshotBackend(name: "fake")],
            clock: ManualClock(now: Self.start), logger: logger, hookRunner: CommandHookRunner(), notifier: notifier)
        let loop = Task { try await scheduler.run() }
        await scheduler.waitUntilIdle()  // returns once hooks and deliveries have ended
        loop.cancel()
        _ = await loop.result

        let runs = try store.runs(job: "db")
        let newest = try #require(runs.first { $0.scheduledAt.timeIntervalSince1970 == hour })
        #expect(newest.state == .missed)
        // The seeded fire, the two between and the newest.
        #expect(runs.filter { $0.state == .missed }.count == 4, "the older fires are recorded too: \(runs)")
        #expect(lines.count == 1, "one on_failure, for the newest: \(lines)")
        #expect(lines.first?.hasPrefix("failure failure missed \(newest.id) ") == true, "\(lines)")
        #expect(lines.first?.contains("past deadline=1m") == true, "\(lines)")
        let requests = receiver.requests
        let posts = requests.filter { $0["method"] as? String == "POST" }
        #expect(posts.count == 1, "\(requests)")
        let body = try #require(
            try JSONSerialization.jsonObject(with: Data((posts.first?["body"] as? String ?? "").utf8)) as? [String: Any])
        #expect(body["state"] as? String == "missed" && body["run"] as? Int == Int(newest.id))
        #expect(body["image_name"] == nil && body["image"] == nil && body["backend"] as? String == "fake")
        #expect((body["error"] as? String)?.contains("past deadline=1m") == true)
        let pings = requests.filter { $0["method"] as? String == "GET" }.compactMap { $0["path"] as? String }
        #expect(pings == ["/ping/uuid/fail"], "\(requests)")
    }
}

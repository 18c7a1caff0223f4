// fleet-bench: does a fleet's night fit its window? The real scheduler (engine, executor, SQLite WAL store) and the
// real backend code: TWCC against the stand-in API on loopback, exec with real processes. Time runs on a clock
// sped up by a known factor, the TWCC backend's own pacing (rate limit, retries) included, so a 15-minute night
// takes under a minute; every real cost (HTTP, SQLite, processes) is multiplied by that factor, so the figures
// err on the slow side.
//
//   swift run -c release --package-path Benchmarks fleet-bench            all scenarios
//   SCENARIO=twcc-40|twcc-1000|exec-50 swift run ... fleet-bench          one
import BackendTypes
import ExecDescriptor
import Foundation
import Logging
import SnapcronCore
import SnapcronStore
import SnapshotBackend
import Synchronization
import TWCCBackend
import TWCCDescriptor
import TWCCStandIn
import ExecBackend

let quiet: Logger = {
    var logger = Logger(label: "fleet-bench", factory: { _ in SwiftLogNoOpLogHandler() })
    logger.logLevel = .critical
    return logger
}()

func emit(_ object: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

/// Wall time from `origin`, `speed` times faster than the real clock. Sleeps are real sleeps divided by `speed`.
final class SpedUpClock: SchedulerClock, Sendable {
    let origin: Date
    let speed: Double
    private let started = ContinuousClock.now

    init(origin: Date, speed: Double) {
        self.origin = origin
        self.speed = speed
    }

    func now() -> Date {
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        return origin.addingTimeInterval(seconds * speed)
    }

    func sleep(until deadline: Date) async throws {
        let wait = deadline.timeIntervalSince(now()) / speed
        if wait > 0 { try await Task.sleep(for: .seconds(wait)) }
    }

    /// The TWCC backend's view of the same time: its rate limit and back-offs run on this clock too.
    var twccTiming: TWCCBackend.Timing {
        TWCCBackend.Timing(
            now: { [self] in .seconds(now().timeIntervalSince(origin)) },
            sleep: { [speed] duration in try await Task.sleep(for: duration / speed) })
    }
}

struct Outcome {
    var succeeded = 0
    var other: [String: Int] = [:]
    var finishOffsets: [Double] = []
    var startOffsets: [Double] = []
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    return sorted[min(sorted.count - 1, Int((Double(sorted.count - 1) * p).rounded()))]
}

func round3(_ value: Double) -> Double { (value * 1000).rounded() / 1000 }

/// Runs `jobs` until every run of the fire at `fire` has ended or `limit` seconds of scheduler time have passed.
func runFleet(
    jobs: [Job], backends: [String: any SnapshotBackend], clock: SpedUpClock, fire: Date, limit: TimeInterval,
    directory: URL
) async throws -> Outcome {
    let store = try SnapcronDatabase(path: directory.appendingPathComponent("state.db").path)
    let scheduler = SchedulerService(jobs: jobs, store: store, backends: backends, clock: clock, logger: quiet)
    let loop = Task { try await scheduler.run() }
    defer { loop.cancel() }
    var outcome = Outcome()
    while clock.now() < fire.addingTimeInterval(limit) {
        try await Task.sleep(for: .milliseconds(50))
        let runs = try store.runs(job: nil, state: nil, since: fire, limit: jobs.count * 2)
        if runs.count >= jobs.count && runs.allSatisfy({ $0.state.isTerminal }) { break }
    }
    let runs = try store.runs(job: nil, state: nil, since: fire, limit: jobs.count * 2)
    for run in runs {
        if run.state == .succeeded {
            outcome.succeeded += 1
            if let finished = run.finishedAt { outcome.finishOffsets.append(finished.timeIntervalSince(fire)) }
        } else {
            outcome.other[run.state.rawValue, default: 0] += 1
        }
        if let started = run.startedAt { outcome.startOffsets.append(started.timeIntervalSince(fire)) }
    }
    outcome.other["not_fired", default: 0] += max(0, jobs.count - runs.count)
    if outcome.other["not_fired"] == 0 { outcome.other["not_fired"] = nil }
    return outcome
}

func scheduleJobs(_ text: String, backend: String, type: BackendType, now: Date) throws -> [Job] {
    var config = SnapcronConfig(file: nil, stateDirectory: "/var/lib/snapcron-fleet-bench", backends: [:])
    config.backends[backend] = BackendConfig(name: backend, type: type)
    return try ScheduleFile.parse(text: text, file: "fleet", config: config, now: now, systemZone: .utc).jobs
}

/// N TWCC VMs (one site each) imaged at 01:00; each image bakes `bake` seconds at the stand-in.
func twccScenario(name: String, count: Int, bake: TimeInterval, speed: Double, requestsPerSecond: Double?, limit: TimeInterval)
    async throws
{
    let fire = Date(timeIntervalSince1970: 1_798_765_200)  // 2027-01-01T01:00:00Z
    let clock = SpedUpClock(origin: fire.addingTimeInterval(-5), speed: speed)
    let standIn = TWCCStandIn(now: { clock.now() }, keepsRequests: false)
    standIn.setProgression(.baking(seconds: bake))
    try await standIn.start()
    defer { Task { await standIn.stop() } }
    var text = ""
    for index in 0..<count {
        let site = standIn.addSite(name: "vm-\(index)")
        text += "0 1 * * *   vm-\(index)   twcc:\(site.id)   keep=3\n"
    }
    var configuration = TWCCBackend.Configuration(
        baseURL: standIn.baseURL, platform: standIn.platform, projectID: standIn.projectID,
        apiKey: try APIKey(standIn.apiKey))
    if let requestsPerSecond { configuration.requestsPerSecond = requestsPerSecond }
    let backend = TWCCBackend(name: "twcc", configuration: configuration, timing: clock.twccTiming)
    let jobs = try scheduleJobs(text, backend: "twcc", type: .twcc, now: clock.now())
    standIn.resetRequestCounts()
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-bench-\(getpid())-\(name)")
    try? FileManager.default.removeItem(at: directory)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let outcome = try await runFleet(
        jobs: jobs, backends: ["twcc": backend], clock: clock, fire: fire, limit: limit, directory: directory)
    var routes: [String: Int] = [:]
    for (route, number) in standIn.requestCounts { routes[route.description] = number }
    emit([
        "scenario": name, "jobs": count, "bake_s": bake, "speed": speed,
        "requests_per_second": configuration.requestsPerSecond, "succeeded": outcome.succeeded,
        "not_succeeded": outcome.other, "last_success_after_fire_s": round3(outcome.finishOffsets.max() ?? .nan),
        "p50_success_after_fire_s": round3(percentile(outcome.finishOffsets, 0.5)),
        "last_create_started_after_fire_s": round3(outcome.startOffsets.max() ?? .nan),
        "api_requests": standIn.requestTotal,
        "api_requests_per_image": round3(Double(standIn.requestTotal) / Double(max(1, count))), "routes": routes,
    ])
}

/// 50 exec jobs at one minute whose create command answers `active` at once: when does each create start?
func execScenario(count: Int) async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fleet-bench-\(getpid())-exec")
    try? FileManager.default.removeItem(at: directory)
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    // The command notes when it started (real time), then prints the image as active.
    let log = directory.appendingPathComponent("starts.log").path
    let script = directory.appendingPathComponent("instant-create").path
    try """
    #!/bin/sh
    date +%s.%N >>'\(log)'
    printf '{"id": "%s", "state": "active"}\\n' "$1"
    """.write(toFile: script, atomically: true, encoding: .utf8)
    chmod(script, 0o755)
    let backend = try ExecBackend(
        configuration: .init(name: "exec", create: [script, "{name}"], status: [script, "{image}"]))
    var text = ""
    for index in 0..<count { text += "* * * * *   vm-\(index)   exec:vm-\(index)\n" }
    // Real speed; the next minute starts 2 s after the scheduler does.
    let now = Date()
    let minute = (now.timeIntervalSince1970 / 60).rounded(.down) * 60 + 60
    let fire = Date(timeIntervalSince1970: minute)
    let clock = SpedUpClock(origin: fire.addingTimeInterval(-2), speed: 1)
    let realFire = Date().addingTimeInterval(2)
    let jobs = try scheduleJobs(text, backend: "exec", type: .exec, now: clock.now())
    let outcome = try await runFleet(
        jobs: jobs, backends: ["exec": backend], clock: clock, fire: fire, limit: 50, directory: directory)
    let starts = (try String(contentsOfFile: log, encoding: .utf8)).split(separator: "\n").compactMap {
        Double($0).map { $0 - realFire.timeIntervalSince1970 }
    }
    emit([
        "scenario": "exec-\(count)", "jobs": count, "succeeded": outcome.succeeded, "not_succeeded": outcome.other,
        "creates": starts.count, "first_create_after_minute_s": round3(starts.min() ?? .nan),
        "last_create_after_minute_s": round3(starts.max() ?? .nan),
        "p50_create_after_minute_s": round3(percentile(starts, 0.5)),
        "last_success_after_minute_s": round3(outcome.finishOffsets.max() ?? .nan),
    ])
}

let only = ProcessInfo.processInfo.environment["SCENARIO"]
if only == nil || only == "twcc-40" {
    // The measured defect: default settings, images ACTIVE 20 s after their create.
    try await twccScenario(name: "twcc-40", count: 40, bake: 20, speed: 4, requestsPerSecond: nil, limit: 300)
}
if only == nil || only == "twcc-1000" {
    // A large fleet with real bake times: 1,000 VMs, 10 minutes each, 20 requests/s allowed.
    let speed = ProcessInfo.processInfo.environment["SPEED"].flatMap(Double.init) ?? 10
    try await twccScenario(name: "twcc-1000", count: 1000, bake: 600, speed: speed, requestsPerSecond: 20, limit: 1800)
}
if only == nil || only == "exec-50" {
    try await execScenario(count: 50)
}

import Foundation
import SnapcronConfig
import SnapcronCore
import SnapcronMetrics
import SnapcronStore
import SnapcronTestKit
import NIOHTTP1
import Testing

@testable import SnapcronDaemon

/// The refresher and the registry on a manual clock and a real SQLite file: what a scrape would get, without HTTP.
@Suite struct MetricsRefresherTests {
    final class Fixture {
        let directory: URL
        let store: SnapcronDatabase
        let clock: ManualClock
        let catalog = JobCatalog()
        let metrics = DaemonMetrics(version: "test")
        let paused = NIOLockedSet()
        let refresher: MetricsRefresher

        init(schedule: String, at start: Date) throws {
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("metrics-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            store = try SnapcronDatabase(path: directory.path + "/state.db")
            clock = ManualClock(now: start)
            let config = SnapcronConfig.default(stateDir: directory.path)
            let loaded = try ScheduleLoader(config: config).check(text: schedule, file: "schedule", now: start).get()
            catalog.update(loaded.jobs)
            let (paused, clock) = (self.paused, self.clock)
            refresher = MetricsRefresher(
                metrics: metrics, store: store, catalog: catalog, paused: { paused.values }, now: { clock.now() },
                logger: .init(label: "test"))
        }

        deinit { try? FileManager.default.removeItem(at: directory) }

        /// The published exposition as text.
        var text: String { String(buffer: metrics.exposition) }

        /// The value of the one sample line that starts with `series` (name and labels as printed).
        func value(_ series: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(series + " ") }
                .flatMap { Double($0.split(separator: " ").last ?? "") }
        }
    }

    static let start = Date(timeIntervalSince1970: 1_796_000_000)  // 2026-12-01T00:53:20Z

    @Test func nextFiresFollowTheClockAndPausesShowWithoutAStoreRead() async throws {
        let fixture = try Fixture(schedule: "CRON_TZ=UTC\n* * * * *  web  local:/srv/web.img\n0 3 * * *  db  local:/srv/db.img\n", at: Self.start)
        await fixture.refresher.refresh()
        let minute = (Self.start.timeIntervalSince1970 / 60).rounded(.down) * 60
        #expect(fixture.value(#"snapcron_job_next_fire_timestamp_seconds{job="web"}"#) == minute + 60)
        #expect(fixture.value(#"snapcron_job_period_seconds{job="web"}"#) == 60)
        #expect(fixture.value(#"snapcron_job_period_seconds{job="db"}"#) == 86_400)
        #expect(fixture.value(#"snapcron_jobs"#) == 2)
        #expect(fixture.value(#"snapcron_job_paused{job="web"}"#) == 0)

        fixture.clock.advance(by: 61)
        fixture.paused.insert("db")
        await fixture.refresher.refresh()
        #expect(fixture.value(#"snapcron_job_next_fire_timestamp_seconds{job="web"}"#) == minute + 120)
        #expect(fixture.value(#"snapcron_job_paused{job="db"}"#) == 1)
    }

    @Test func runEventsAndTheStoreCensusReachTheExposition() async throws {
        let fixture = try Fixture(schedule: "CRON_TZ=UTC\n0 3 * * *  db  local:/srv/db.img\n", at: Self.start)
        await fixture.refresher.refresh()
        #expect(fixture.value(#"snapcron_runs_total{job="db",state="failed"}"#) == 0)
        #expect(fixture.value(#"snapcron_images{job="db",state="active"}"#) == 0)
        #expect(fixture.value(#"snapcron_job_newest_image_timestamp_seconds{job="db"}"#) == nil)

        // A run through the store, as the executor records it, and the events it reports.
        let fire = Self.start.addingTimeInterval(-3_600)
        let run = try #require(
            try fixture.store.claimRuns(
                [RunClaim(job: "db", scheduledAt: fire, trigger: .schedule, imageName: "snapcron-db-1", backend: "local", target: "/srv/db.img")],
                now: fire
            ).first ?? nil)
        _ = try fixture.store.markCreating(runIDs: [run.id], now: fire)
        _ = try fixture.store.markWaiting(runID: run.id, imageID: "img-1", description: nil, now: fire, nextPollAt: fire)
        let end = fire.addingTimeInterval(95)
        _ = try fixture.store.finishRun(runID: run.id, state: .succeeded, error: nil, sizeBytes: 4096, now: end)
        fixture.metrics.runEnded(job: "db", state: .succeeded, startedAt: fire, endedAt: end)
        fixture.metrics.backendRequest(backend: "local", operation: "create", outcome: .ok)
        await fixture.refresher.refresh()

        #expect(fixture.value(#"snapcron_runs_total{job="db",state="succeeded"}"#) == 1)
        #expect(fixture.value(#"snapcron_run_duration_seconds_count{job="db"}"#) == 1)
        #expect(fixture.value(#"snapcron_run_duration_seconds_bucket{job="db",le="60.0"}"#) == 0)
        #expect(fixture.value(#"snapcron_run_duration_seconds_bucket{job="db",le="120.0"}"#) == 1)
        #expect(fixture.value(#"snapcron_images{job="db",state="active"}"#) == 1)
        #expect(fixture.value(#"snapcron_image_bytes{job="db"}"#) == 4096)
        #expect(fixture.value(#"snapcron_job_newest_image_timestamp_seconds{job="db"}"#) == fire.timeIntervalSince1970)
        #expect(fixture.value(#"snapcron_job_last_success_timestamp_seconds{job="db"}"#) == end.timeIntervalSince1970)
        #expect(fixture.value(#"snapcron_job_last_fire_timestamp_seconds{job="db"}"#) == fire.timeIntervalSince1970)
        #expect(
            fixture.value(#"snapcron_backend_requests_total{backend="local",operation="create",outcome="ok"}"#) == 1)

        // A fresh refresher (a restart) reads the last success back from the store.
        let clock = fixture.clock
        let restarted = MetricsRefresher(
            metrics: DaemonMetrics(version: "test"), store: fixture.store, catalog: fixture.catalog, paused: { [] },
            now: { clock.now() }, logger: .init(label: "test"))
        await restarted.refresh()
        #expect(
            String(buffer: restarted.metrics.exposition).contains(
                #"snapcron_job_last_success_timestamp_seconds{job="db"} \#(end.timeIntervalSince1970)"#))
    }

    @Test func aJobLeavingTheScheduleLosesEverySeries() async throws {
        let fixture = try Fixture(schedule: "CRON_TZ=UTC\n0 3 * * *  db  local:/srv/db.img\n0 4 * * *  web  local:/srv/web.img\n", at: Self.start)
        fixture.metrics.runEnded(job: "db", state: .failed, startedAt: Self.start, endedAt: Self.start)
        fixture.metrics.imageDeleted(job: "db")
        await fixture.refresher.refresh()
        #expect(fixture.text.contains(#"job="db""#))
        let kept = try ScheduleLoader(config: .default(stateDir: fixture.directory.path))
            .check(text: "CRON_TZ=UTC\n0 4 * * *  web  local:/srv/web.img\n", file: "schedule", now: Self.start).get()
        fixture.catalog.update(kept.jobs)
        await fixture.refresher.refresh()
        #expect(!fixture.text.contains(#"job="db""#), "\(fixture.text)")
        #expect(fixture.text.contains(#"snapcron_job_period_seconds{job="web"}"#))
    }
}

/// A set the test changes while the refresher reads it.
final class NIOLockedSet: @unchecked Sendable {
    private let lock = NSLock()
    private var set: Set<String> = []
    var values: Set<String> { lock.withLock { set } }
    func insert(_ value: String) { lock.withLock { _ = set.insert(value) } }
}

@Suite struct MetricsSettingsTests {
    @Test func gzipIsSentOnlyToWhoAcceptsIt() {
        func accepts(_ value: String) -> Bool { MetricsHTTPHandler.acceptsGzip(HTTPHeaders([("Accept-Encoding", value)])) }
        #expect(accepts("gzip"))
        #expect(accepts("deflate, gzip"))
        #expect(accepts("br;q=1.0, gzip;q=0.5, *;q=0.1"))
        #expect(accepts("*"))
        #expect(!accepts("gzip;q=0"))
        #expect(!accepts("identity"))
        #expect(!accepts("deflate, br"))
        #expect(!MetricsHTTPHandler.acceptsGzip(HTTPHeaders()))
    }

    @Test func listenAddressesParse() throws {
        #expect(try MetricsListen(parsing: "127.0.0.1:9464") == .tcp(host: "127.0.0.1", port: 9464))
        #expect(try MetricsListen(parsing: "[::1]:9464") == .tcp(host: "::1", port: 9464))
        #expect(try MetricsListen(parsing: "localhost:80") == .tcp(host: "127.0.0.1", port: 80))
        #expect(try MetricsListen(parsing: "/run/snapcron/metrics.sock") == .unix(path: "/run/snapcron/metrics.sock"))
        #expect(try MetricsListen(parsing: "[::1]:9464").description == "[::1]:9464")
        for bad in ["9464", ":9464", "127.0.0.1:", "127.0.0.1:0", "[::1]9464", "::1:9464", "host.example:9464", "1.2.3.4:x"] {
            #expect(throws: MetricsConfigError.self, "\(bad)") { try MetricsListen(parsing: bad) }
        }
    }

    @Test func allowListsMatchByPrefix() throws {
        let block = try IPAddressRange(parsing: "10.1.0.0/16")
        #expect(block.contains(IPAddress("10.1.200.3")!))
        #expect(!block.contains(IPAddress("10.2.0.1")!))
        #expect(block.contains(IPAddress("::ffff:10.1.0.9")!), "an IPv4-mapped peer of a dual-stack listener")
        let odd = try IPAddressRange(parsing: "192.168.1.128/25")
        #expect(odd.contains(IPAddress("192.168.1.200")!) && !odd.contains(IPAddress("192.168.1.100")!))
        let v6 = try IPAddressRange(parsing: "2001:db8::/32")
        #expect(v6.contains(IPAddress("2001:db8:1::5")!) && !v6.contains(IPAddress("2001:db9::1")!))
        #expect(!v6.contains(IPAddress("10.0.0.1")!))
        #expect(IPAddressRange.loopback.contains { $0.contains(IPAddress("127.5.5.5")!) })
        #expect(IPAddressRange.loopback.contains { $0.contains(IPAddress("::1")!) })
        #expect(try IPAddressRange(parsing: "0.0.0.0/0").contains(IPAddress("8.8.8.8")!))
        for bad in ["10.0.0.0/33", "::/129", "10.0.0.0/x", "10.0.0/8", "a/b/c", ""] {
            #expect(throws: MetricsConfigError.self, "\(bad)") { try IPAddressRange(parsing: bad) }
        }
    }
}

import Foundation
import TestThreads
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `/metrics` of the real daemon: what a run shows, read by curl, by the reference Python parser and by a real
/// Prometheus (Debian's `prometheus`, started by the test on loopback).
@Suite(.onOwnThreads, .serialized) struct MetricsTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// A workspace whose daemon serves metrics at `listen` and whose job `crash` is caught up at start.
    static func startDaemonWithARun(listen: String, extraDaemonKeys: String = "") throws -> (DaemonWorkspace, DaemonProcess) {
        let workspace = try DaemonWorkspace()
        try """
            [daemon]
            state_dir = "\(workspace.state)"
            metrics_listen = "\(listen)"
            \(extraDaemonKeys)
            """.write(toFile: workspace.config, atomically: true, encoding: .utf8)
        let fire = minutesAgo(60)
        try workspace.writeSchedule(firingAt: fire)
        try workspace.seedLastFire(fire.addingTimeInterval(-86_400))
        let daemon = try DaemonProcess(workspace)
        return (workspace, daemon)
    }

    @Test func aRunShowsInTheMetricsAndTheReferenceParserReadsThem() async throws {
        let port = try freeTCPPort()
        let (workspace, daemon) = try Self.startDaemonWithARun(listen: "127.0.0.1:\(port)")
        #expect(eventually(within: 60) { daemon.stderr.contains("Run succeeded") }, "\(daemon.stderr)")
        // Published within a second or two of the run's end.
        var text = ""
        let shown = eventually(within: 15) {
            text = (try? httpRequest(port: port, path: "/metrics").body) ?? ""
            return text.contains(#"snapcron_images{job="crash",state="active"} 1"#)
        }
        #expect(shown, "\(text)\n\(daemon.stderr)")

        let families = try Self.parseWithPrometheusClient(text)
        func samples(_ family: String, _ name: String? = nil) -> [(labels: [String: String], value: Double)] {
            guard let entry = families[family] as? [String: Any], let list = entry["samples"] as? [[Any]] else { return [] }
            return list.compactMap { sample in
                guard sample.count == 3, let sampleName = sample[0] as? String, name == nil || sampleName == name,
                    let labels = sample[1] as? [String: String], let value = (sample[2] as? NSNumber)?.doubleValue
                else { return nil }
                return (labels, value)
            }
        }
        func type(_ family: String) -> String? { (families[family] as? [String: Any])?["type"] as? String }
        #expect(type("snapcron_runs") == "counter")
        #expect(type("snapcron_run_duration_seconds") == "histogram")
        #expect(type("snapcron_images") == "gauge")
        #expect(type("snapcron_backend_requests") == "counter")
        #expect(samples("snapcron_up").map(\.value) == [1])
        #expect(samples("snapcron_build_info").first?.labels["version"]?.isEmpty == false)
        #expect(samples("snapcron_jobs").map(\.value) == [1])
        #expect(samples("snapcron_runs", "snapcron_runs_total").contains { $0.labels == ["job": "crash", "state": "succeeded"] && $0.value == 1 })
        #expect(samples("snapcron_run_duration_seconds", "snapcron_run_duration_seconds_count").map(\.value) == [1])
        #expect(samples("snapcron_images").contains { $0.labels == ["job": "crash", "state": "active"] && $0.value == 1 })
        #expect((samples("snapcron_image_bytes").first?.value ?? 0) > 0)
        #expect(samples("snapcron_job_paused").map(\.value) == [0])
        #expect(samples("snapcron_job_period_seconds").map(\.value) == [86_400])
        let now = Date().timeIntervalSince1970
        let newest = samples("snapcron_job_newest_image_timestamp_seconds").first?.value ?? 0
        #expect(abs(now - newest) < 300, "newest image \(newest), now \(now)")
        let success = samples("snapcron_job_last_success_timestamp_seconds").first?.value ?? 0
        #expect(abs(now - success) < 300, "last success \(success), now \(now)")
        let next = samples("snapcron_job_next_fire_timestamp_seconds").first?.value ?? 0
        #expect(next > now && next < now + 86_400, "next fire \(next), now \(now)")
        // The caught-up fire: the whole minute an hour before the test started.
        let lastFire = samples("snapcron_job_last_fire_timestamp_seconds").first?.value ?? 0
        #expect(lastFire.truncatingRemainder(dividingBy: 60) == 0 && (3_540...3_720).contains(now - lastFire), "\(lastFire)")
        #expect(
            samples("snapcron_backend_requests", "snapcron_backend_requests_total").contains {
                $0.labels == ["backend": "local", "operation": "create", "outcome": "ok"] && $0.value >= 1
            }, "\(text)")
        // Counters an alert takes increase() of start at 0 for every job.
        #expect(samples("snapcron_retention_deleted", "snapcron_retention_deleted_total").map(\.value) == [0])
        #expect(
            samples("snapcron_runs", "snapcron_runs_total").contains {
                $0.labels == ["job": "crash", "state": "failed"] && $0.value == 0
            })

        // The HTTP edges.
        #expect(try httpRequest(port: port, path: "/nope").status == 404)
        #expect(try httpRequest(port: port, path: "/metrics", method: "POST").status == 405)
        let head = try httpRequest(port: port, path: "/metrics", method: "HEAD")
        #expect(head.status == 200 && head.body.isEmpty)
        #expect(try httpRequest(port: port, path: "/metrics?x=1").status == 200)
        // gzip, as Prometheus asks for it: from the publication after the first ask on, the same text compressed.
        var encoding = ""
        let gzipped = eventually(within: 10) {
            let headers = run("/usr/bin/curl", ["-s", "-D", "-", "-o", "/dev/null", "-H", "Accept-Encoding: gzip", "http://127.0.0.1:\(port)/metrics"])
            encoding = headers.stdout.lowercased()
            return encoding.contains("content-encoding: gzip")
        }
        #expect(gzipped, "\(encoding)")
        let decoded = run("/usr/bin/curl", ["-s", "--compressed", "http://127.0.0.1:\(port)/metrics"]).stdout
        #expect(decoded.contains(#"snapcron_images{job="crash",state="active"} 1"#), "\(decoded.prefix(500))")

        // A reload that drops the job drops its series.
        try "CRON_TZ=UTC\n0 4 * * *   other   local:\(workspace.disk)\n"
            .write(toFile: workspace.schedule, atomically: true, encoding: .utf8)
        daemon.signal(SIGHUP)
        let dropped = eventually(within: 15) {
            text = (try? httpRequest(port: port, path: "/metrics").body) ?? ""
            return text.contains(#"snapcron_job_period_seconds{job="other"}"#) && !text.contains(#"job="crash""#)
        }
        #expect(dropped, "\(text)")
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(within: 10) == 0)
    }

    @Test(.timeLimit(.minutes(3))) func aRealPrometheusScrapesTheDaemonAndAnswersQueries() async throws {
        let prometheus = "/usr/bin/prometheus"
        try #require(
            FileManager.default.isExecutableFile(atPath: prometheus),
            "Debian's prometheus is not installed: run scripts/install-deps --tests")
        let port = try freeTCPPort()
        let (workspace, daemon) = try Self.startDaemonWithARun(listen: "127.0.0.1:\(port)")
        #expect(eventually(within: 60) { daemon.stderr.contains("Run succeeded") }, "\(daemon.stderr)")
        // The scrape config docs/metrics.md gives (honor_labels: snapcron's `job` label is the snapcron job).
        let webPort = try freeTCPPort()
        let config = workspace.path + "/prometheus.yml"
        try """
            global:
              scrape_interval: 1s
              evaluation_interval: 1s
            scrape_configs:
              - job_name: snapcron
                honor_labels: true
                static_configs:
                  - targets: ["127.0.0.1:\(port)"]
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: prometheus)
        server.arguments = [
            "--config.file=\(config)", "--storage.tsdb.path=\(workspace.path)/tsdb",
            "--web.listen-address=127.0.0.1:\(webPort)",
        ]
        let log = workspace.path + "/prometheus.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        server.standardOutput = logHandle
        server.standardError = logHandle
        try server.run()
        defer {
            server.terminate()
            server.waitUntilExit()
        }
        func query(_ expression: String) -> [[String: Any]] {
            let encoded = expression.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? expression
            guard let response = try? httpRequest(port: webPort, path: "/api/v1/query?query=\(encoded)"),
                response.status == 200,
                let object = try? JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any],
                let data = object["data"] as? [String: Any], let result = data["result"] as? [[String: Any]]
            else { return [] }
            return result
        }
        func value(_ sample: [String: Any]) -> Double? {
            ((sample["value"] as? [Any])?.last as? String).flatMap(Double.init)
        }
        var runs: [[String: Any]] = []
        let scraped = eventually(within: 60) {
            runs = query(#"snapcron_runs_total{state="succeeded"}"#)
            return !runs.isEmpty
        }
        let prometheusLog = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        #expect(scraped, "Prometheus never returned snapcron_runs_total:\n\(prometheusLog.suffix(3000))")
        let labels = runs.first?["metric"] as? [String: String]
        #expect(labels?["job"] == "crash" && labels?["instance"] == "127.0.0.1:\(port)", "\(runs)")
        #expect(runs.first.flatMap(value) == 1)
        #expect(query(#"up{job="snapcron"}"#).first.flatMap(value) == 1)
        #expect(query("snapcron_up").first.flatMap(value) == 1)
        let age = query("time() - snapcron_job_newest_image_timestamp_seconds").first.flatMap(value)
        #expect(age.map { $0 >= 0 && $0 < 600 } == true, "image age \(String(describing: age))")
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(within: 10) == 0)
    }

    @Test func aPeerOutsideMetricsAllowIsRefused() throws {
        let port = try freeTCPPort()
        let (workspace, daemon) = try Self.startDaemonWithARun(
            listen: "127.0.0.1:\(port)", extraDaemonKeys: #"metrics_allow = ["10.0.0.0/8", "192.168.1.7"]"#)
        var response: (status: Int, body: String)?
        #expect(eventually(within: 30) {
            response = try? httpRequest(port: port, path: "/metrics")
            return response != nil
        }, "\(daemon.stderr)")
        #expect(response?.status == 403)
        #expect(response?.body.contains("metrics_allow") == true)
        #expect(response?.body.contains("snapcron_up") == false)
        withExtendedLifetime(workspace) {}
    }

    @Test func aUnixSocketServesMetricsToEveryLocalUser() throws {
        let workspace = try DaemonWorkspace()
        let socket = workspace.path + "/metrics.sock"
        try "[daemon]\nstate_dir = \"\(workspace.state)\"\nmetrics_listen = \"\(socket)\"\n"
            .write(toFile: workspace.config, atomically: true, encoding: .utf8)
        try workspace.writeSchedule(firingAt: minutesAgo(-600))
        let daemon = try DaemonProcess(workspace)
        var response: (status: Int, body: String)?
        #expect(eventually(within: 30) {
            response = try? httpRequest(unixSocket: socket, path: "/metrics")
            return response?.status == 200
        }, "\(daemon.stderr)")
        #expect(response?.body.contains("snapcron_up 1") == true, "\(response?.body ?? "")")
        var info = stat()
        #expect(lstat(socket, &info) == 0 && info.st_mode & 0o777 == 0o666)
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(within: 10) == 0)
        #expect(!FileManager.default.fileExists(atPath: socket), "the socket file is removed at exit")
    }

    /// A taken port does not stop the daemon (images matter more than their metrics): it schedules and says why
    /// (the 30 s retry itself is not waited for here).
    @Test func aTakenPortIsLoggedAndSchedulingGoesOn() throws {
        let holder = try TCPListener()
        let (workspace, daemon) = try Self.startDaemonWithARun(listen: "127.0.0.1:\(holder.port)")
        defer { withExtendedLifetime(workspace) {} }
        #expect(eventually(within: 60) { daemon.stderr.contains("Run succeeded") }, "\(daemon.stderr)")
        #expect(daemon.stderr.contains("Metrics unavailable; retrying in 30 s"), "\(daemon.stderr)")
        #expect(daemon.process.isRunning)
    }

    @Test(arguments: [
        (#"metrics_listen = "localhost""#, "daemon.metrics_listen: expected HOST:PORT"),
        (#"metrics_listen = "127.0.0.1:70000""#, "is not a number from 1 to 65535"),
        (#"metrics_listen = "example.com:9464""#, "is not an IP address"),
        (#"metrics_allow = ["10.0.0.0/33"]"#, "daemon.metrics_allow[0]: prefix length '33'"),
        (#"metrics_allow = "10.0.0.0/8""#, "daemon.metrics_allow: expected a non-empty array"),
    ])
    func badMetricsSettingsStopTheStartWithTheirKeyPath(line: String, message: String) throws {
        let workspace = try DaemonWorkspace()
        try workspace.writeSchedule(firingAt: minutesAgo(-600))
        try "[daemon]\nstate_dir = \"\(workspace.state)\"\n\(line)\n"
            .write(toFile: workspace.config, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(workspace)
        #expect(daemon.waitForExit(within: 30) == 1)
        #expect(daemon.stderr.contains(workspace.config) && daemon.stderr.contains(message), "\(daemon.stderr)")
    }

    // MARK: Helpers

    /// The exposition parsed by prometheus_client (installed into `.build/metrics-venv` on first use).
    static func parseWithPrometheusClient(_ text: String) throws -> [String: Any] {
        let venv = packageRoot.appendingPathComponent(".build/metrics-venv").path
        let python = venv + "/bin/python"
        if run(python, ["-c", "import prometheus_client"]).status != 0 {
            let made = run("/usr/bin/env", ["python3", "-m", "venv", "--clear", venv])
            try #require(made.status == 0, "python3 -m venv: \(made.output)")
            let installed = run(python, ["-m", "pip", "install", "--quiet", "prometheus_client==0.26.0"])
            try #require(installed.status == 0, "pip install prometheus_client (needs PyPI): \(installed.output)")
        }
        let script = packageRoot.appendingPathComponent("Tests/metrics/parse_metrics.py").path
        let parsed = run(python, [script], input: text)
        try #require(parsed.status == 0, "prometheus_client refused the exposition: \(parsed.output)")
        return try #require(try JSONSerialization.jsonObject(with: Data(parsed.stdout.utf8)) as? [String: Any])
    }
}

/// Runs a command to its end (in `directory`, if given); stdout alone and stdout + stderr.
@discardableResult
func run(
    _ executable: String, _ arguments: [String], input: String? = nil, in directory: URL? = nil
) -> (status: Int32, stdout: String, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.currentDirectoryURL = directory
    let out = Pipe()
    let inPipe = Pipe()
    let errPath = FileManager.default.temporaryDirectory.appendingPathComponent("stderr-\(UUID().uuidString)").path
    FileManager.default.createFile(atPath: errPath, contents: nil)
    defer { unlink(errPath) }
    guard let err = FileHandle(forWritingAtPath: errPath) else { return (127, "", "cannot create \(errPath)") }
    process.standardOutput = out
    process.standardError = err
    process.standardInput = input == nil ? FileHandle.nullDevice : inPipe
    do { try process.run() } catch { return (127, "", "\(error)") }
    try? err.close()
    if let input {
        let data = Data(input.utf8)
        let writer = inPipe.fileHandleForWriting
        Thread.detachNewThread {
            writer.write(data)
            try? writer.close()
        }
    }
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: stdout, as: UTF8.self)
    let stderr = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
    return (process.terminationStatus, text, text + stderr)
}

/// One HTTP request with curl; the status and the body.
func httpRequest(
    port: Int? = nil, unixSocket: String? = nil, path: String, method: String = "GET"
) throws -> (status: Int, body: String) {
    var arguments = ["-s", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]
    arguments += method == "HEAD" ? ["-I"] : ["-X", method]
    if let unixSocket { arguments += ["--unix-socket", unixSocket, "http://localhost\(path)"] }
    if let port { arguments.append("http://127.0.0.1:\(port)\(path)") }
    let result = run("/usr/bin/curl", arguments)
    guard result.status == 0, let newline = result.stdout.lastIndex(of: "\n"),
        let status = Int(result.stdout[result.stdout.index(after: newline)...])
    else { throw CurlError(output: result.output) }
    var body = String(result.stdout[..<newline])
    if method == "HEAD" { body = body.components(separatedBy: "\r\n\r\n").dropFirst().joined() }
    return (status, body)
}

struct CurlError: Error { var output: String }

/// A loopback port nobody listens on now.
func freeTCPPort() throws -> Int {
    let listener = try TCPListener()
    return listener.port
}

/// A socket bound to a free loopback port, held until released.
final class TCPListener {
    let descriptor: Int32
    let port: Int

    init() throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.descriptor = descriptor
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(descriptor, pointer, length) == 0 && listen(descriptor, 1) == 0
                    && getsockname(descriptor, pointer, &length) == 0
            }
        }
        guard bound else { throw CurlError(output: "cannot bind a loopback port") }
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(descriptor) }
}

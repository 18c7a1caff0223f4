import Foundation
import PostgresHarness
import SnapcronPostgres
import SnapcronStore
import SnapcronTestKit
import SnapcronCore
import TestThreads
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Three real `snapcrond` processes on one real PostgreSQL, 30 jobs every minute on an exec backend whose creates
/// take 2 s and are logged to a file. One node is SIGKILLed during its creates, another SIGSTOPped past its lease
/// and then continued. Every (job, minute) must get exactly one create and one succeeded run, the runs of both
/// nodes must be finished by the others, and the continued node's writes for them must be refused.
@Suite(.onOwnThreads, .enabled(if: !PostgresServer.skipRequested)) struct ClusterDaemonTests {
    static let jobs = 30
    static let lease = 6

    /// The directory of the cluster: the backend's script and images, the password, one folder per node.
    final class ClusterWorkspace {
        let root: URL
        var path: String { root.path }
        var creates: String { path + "/creates.log" }
        var inflight: String { path + "/inflight" }
        var schedule: String { path + "/schedule" }

        init(server: PostgresServer, database: String, nodes: [String], jobs: Int = ClusterDaemonTests.jobs) throws {
            root = FileManager.default.temporaryDirectory.appendingPathComponent("snapcron-cluster-\(UUID().uuidString)")
            for folder in ["images", "inflight"] + nodes {
                try FileManager.default.createDirectory(atPath: path + "/" + folder, withIntermediateDirectories: true)
            }
            FileManager.default.createFile(atPath: creates, contents: nil)
            try writeExecutable(Self.backendScript, to: path + "/backend")
            FileManager.default.createFile(
                atPath: path + "/password", contents: Data((server.password + "\n").utf8),
                attributes: [.posixPermissions: 0o600])
            var schedule = "CRON_TZ=UTC\n"
            for job in 0..<jobs {
                schedule += "* * * * *   job-\(job)   fake:vm-\(job)   deadline=5m timeout=3m\n"
            }
            try schedule.write(toFile: self.schedule, atomically: true, encoding: .utf8)
            for node in nodes {
                let config = """
                    [daemon]
                    state_dir = "\(path)/\(node)"
                    socket_path = "\(path)/\(node)/control.sock"

                    [store]
                    url = "\(server.url(database: database))"
                    password_file = "\(path)/password"
                    node_name = "\(node)"
                    lease = "\(ClusterDaemonTests.lease)s"

                    [backends.fake]
                    type = "exec"
                    create = ["\(path)/backend", "create", "{target}", "{name}"]
                    list = ["\(path)/backend", "list", "{target}"]
                    status = ["\(path)/backend", "status", "{image}"]
                    delete = ["\(path)/backend", "delete", "{image}"]
                    environment = { NODE = "\(node)", CLUSTER_ROOT = "\(path)" }
                    """
                try config.write(toFile: configPath(node), atomically: true, encoding: .utf8)
            }
        }

        deinit { try? FileManager.default.removeItem(at: root) }

        func configPath(_ node: String) -> String { "\(path)/\(node)/snapcron.toml" }

        /// Starts a daemon per node just after a minute's fires, so that they are up well before the next one.
        func startDaemonsAfterAMinuteBegins(_ nodes: [String]) throws -> [String: DaemonProcess] {
            while Int(Date().timeIntervalSince1970) % 60 > 5 { usleep(200_000) }
            var daemons: [String: DaemonProcess] = [:]
            for node in nodes {
                daemons[node] = try DaemonProcess(
                    workspaceDirectory: path, arguments: ["--config", configPath(node), "--schedule", schedule])
            }
            return daemons
        }

        /// Creates under way, as `node target name` (the script holds a file while its create sleeps).
        func createsInFlight() -> [(node: String, target: String, name: String)] {
            ((try? FileManager.default.contentsOfDirectory(atPath: inflight)) ?? []).compactMap { entry in
                let parts = entry.components(separatedBy: "--")
                return parts.count == 3 ? (parts[0], parts[1], parts[2]) : nil
            }
        }

        /// Each create the backend was asked for, as `node target name`.
        func createLines() -> [[String]] {
            ((try? String(contentsOfFile: creates, encoding: .utf8)) ?? "").split(separator: "\n")
                .map { $0.split(separator: " ").map(String.init) }
        }

        /// An exec backend over files: an image is a file `images/TARGET/NAME`. create logs itself, then takes 2 s.
        static let backendScript = """
            #!/bin/sh
            set -eu
            root="$CLUSTER_ROOT"
            op="$1"
            shift
            case "$op" in
            create)
                target="$1" name="$2"
                mkdir -p "$root/images/$target"
                echo "$NODE $target $name" >>"$root/creates.log"
                touch "$root/inflight/$NODE--$target--$name"
                sleep 2
                : >"$root/images/$target/$name"
                rm -f "$root/inflight/$NODE--$target--$name"
                printf '{"id": "%s@%s"}' "$target" "$name"
                ;;
            list)
                target="$1" separator=""
                printf '['
                for file in "$root/images/$target"/*; do
                    [ -e "$file" ] || continue
                    name=$(basename "$file")
                    printf '%s{"id": "%s@%s", "name": "%s"}' "$separator" "$target" "$name" "$name"
                    separator=","
                done
                printf ']'
                ;;
            status)
                target="${1%@*}" name="${1#*@}"
                if [ -e "$root/images/$target/$name" ]; then printf '{"state": "active"}'; else printf '{"state": "gone"}'; fi
                ;;
            delete)
                rm -f "$root/images/${1%@*}/${1#*@}"
                ;;
            esac
            """
    }

    @Test func threeNodesRunEachFireOnceThroughAKillAndAPause() throws {
        let server = try PostgresServer.start()
        defer { try? server.stop() }
        let database = try server.createDatabase()
        let nodes = ["n1", "n2", "n3"]
        let workspace = try ClusterWorkspace(server: server, database: database, nodes: nodes)

        let daemons = try workspace.startDaemonsAfterAMinuteBegins(nodes)
        defer { for daemon in daemons.values { daemon.signal(SIGKILL) } }
        let firstFire = Int(Date().timeIntervalSince1970 / 60 + 1) * 60

        // Minute 1: SIGKILL a node in the middle of its creates.
        let killed = try #require(nodeCreating(in: workspace, among: nodes, after: firstFire), "no create under way")
        daemons[killed]?.signal(SIGKILL)
        let killedAt = Date()
        let killedRuns = Set(workspace.createsInFlight().filter { $0.node == killed }.map(\.name))
        _ = daemons[killed]?.waitForExit(within: 10)

        // Minute 2: SIGSTOP another one past its lease, then let it go on.
        let alive = nodes.filter { $0 != killed }
        let stopped = try #require(
            nodeCreating(in: workspace, among: alive, after: firstFire + 60), "no create under way at minute 2")
        daemons[stopped]?.signal(SIGSTOP)
        let stoppedRuns = Set(workspace.createsInFlight().filter { $0.node == stopped }.map(\.name))
        usleep(UInt32((Self.lease + 5) * 1_000_000))
        daemons[stopped]?.signal(SIGCONT)

        // Minute 3 fires with two nodes; then every run of the three minutes must end.
        let lastFire = firstFire + 120
        let fires = (0..<3).map { firstFire + 60 * $0 }
        let ended = eventually(within: Double(lastFire + 60) - Date().timeIntervalSince1970) {
            (try? unfinishedOrMissing(server: server, database: database, fires: fires)) == 0
        }
        for node in alive { daemons[node]?.signal(SIGTERM) }
        for node in alive { #expect(daemons[node]?.waitForExit(within: 20) == 0, "\(node): \(daemons[node]?.stderr ?? "")") }
        #expect(ended, "runs left unfinished: \((try? runTable(server: server, database: database)) ?? "")")

        // Exactly one create per (job, minute), and one succeeded run.
        let lines = workspace.createLines()
        var createsPerImage: [String: Int] = [:]
        for line in lines where line.count == 3 { createsPerImage[line[2], default: 0] += 1 }
        let expectedNames = Set(
            fires.flatMap { fire in (0..<Self.jobs).map { "snapcron-job-\($0)-\(Self.stamp(fire))" } })
        #expect(Set(createsPerImage.keys).isSuperset(of: expectedNames), "a fire was never created")
        #expect(createsPerImage.filter { $0.value > 1 }.isEmpty, "created twice: \(createsPerImage.filter { $0.value > 1 })")
        let states = try server.administer(
            """
            SELECT state, count(*) FROM runs WHERE scheduled_at IN (\(fires.map(String.init).joined(separator: ",")))
            GROUP BY state ORDER BY state
            """, database: database)
        #expect(states.trimmingCharacters(in: .whitespacesAndNewlines) == "succeeded|\(3 * Self.jobs)", "\(states)")

        // The killed and the stopped node's runs were finished by the others, the killed one's within lease + 5 s.
        for (node, names) in [(killed, killedRuns), (stopped, stoppedRuns)] where !names.isEmpty {
            let owners = try server.administer(
                """
                SELECT DISTINCT owner_node FROM runs
                WHERE image_name IN (\(names.map { "'\($0)'" }.joined(separator: ",")))
                """, database: database)
            #expect(!owners.split(separator: "\n").contains(Substring(node)), "\(node) kept its runs: \(owners)")
        }
        if !killedRuns.isEmpty {
            let latest = try server.administer(
                """
                SELECT max(finished_at) FROM runs
                WHERE image_name IN (\(killedRuns.map { "'\($0)'" }.joined(separator: ",")))
                """, database: database)
            let takeover = (Double(latest.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .infinity)
                - killedAt.timeIntervalSince1970
            print("ClusterDaemonTests: \(killedRuns.count) runs of the killed node ended \(Int(takeover)) s after the kill")
            #expect(takeover <= Double(Self.lease + 6), "takeover took \(takeover) s")
        }
        // The stopped node noticed, and what it tried to write for the runs it lost was refused.
        let stoppedLog = daemons[stopped]?.stderr ?? ""
        #expect(stoppedLog.contains("cluster.lease_lost") || stoppedLog.contains("lease_lapsed"), "\(stoppedLog.suffix(3000))")
    }

    @Test func aStoreStoppedFor30SecondsLosesNoFireAndDuplicatesNone() throws {
        let server = try PostgresServer.start()
        defer { try? server.stop() }
        let database = try server.createDatabase()
        let nodes = ["n1", "n2"]
        let workspace = try ClusterWorkspace(server: server, database: database, nodes: nodes, jobs: 10)
        let daemons = try workspace.startDaemonsAfterAMinuteBegins(nodes)
        defer { for daemon in daemons.values { daemon.signal(SIGKILL) } }
        let fire = Int(Date().timeIntervalSince1970 / 60 + 1) * 60

        // Down from 10 s before the fire to 20 s after it: longer than a store call's 20 s wait for a connection,
        // so that the nodes notice while it lasts.
        while Date().timeIntervalSince1970 < Double(fire - 10) { usleep(100_000) }
        try server.pause()
        while Date().timeIntervalSince1970 < Double(fire + 15) { usleep(100_000) }
        // Both systemd's STATUS line and snapcronctl status say the store is being reconnected to.
        let status = try runSnapcronctl(
            ["status", "--socket", "\(workspace.path)/n1/control.sock"], inDirectory: workspace.path)
        #expect(status.stdout.contains("store:        PROBLEM: reconnecting: "), "\(status)")
        while Date().timeIntervalSince1970 < Double(fire + 20) { usleep(100_000) }
        try server.resume()

        let ended = eventually(within: 90) {
            (try? unfinishedOrMissing(server: server, database: database, fires: [fire], jobs: 10)) == 0
        }
        for node in nodes { daemons[node]?.signal(SIGTERM) }
        for node in nodes { #expect(daemons[node]?.waitForExit(within: 20) == 0, "\(node): \(daemons[node]?.stderr ?? "")") }
        #expect(ended, "\((try? runTable(server: server, database: database)) ?? "")")
        let states = try server.administer(
            "SELECT state, count(*) FROM runs WHERE scheduled_at = \(fire) GROUP BY state", database: database)
        #expect(states.trimmingCharacters(in: .whitespacesAndNewlines) == "succeeded|10", "\(states)")
        var createsPerImage: [String: Int] = [:]
        for line in workspace.createLines() where line.count == 3 { createsPerImage[line[2], default: 0] += 1 }
        let names = Set((0..<10).map { "snapcron-job-\($0)-\(Self.stamp(fire))" })
        #expect(names.allSatisfy { createsPerImage[$0] == 1 }, "\(createsPerImage)")
    }

    /// A wrong password, an unreachable server, a schema newer than this snapcron and a node name another host
    /// holds: each stops the daemon at start with a message that says so, and exit status 1.
    @Test func badStoreSettingsStopTheDaemonAtStart() throws {
        let server = try PostgresServer.start()
        defer { try? server.stop() }
        let database = try server.createDatabase()
        let workspace = try ClusterWorkspace(server: server, database: database, nodes: ["n1"], jobs: 1)
        let config = workspace.configPath("n1")
        let good = try String(contentsOfFile: config, encoding: .utf8)
        func start(_ text: String) throws -> (status: Int32?, stderr: String) {
            try text.write(toFile: config, atomically: true, encoding: .utf8)
            let daemon = try DaemonProcess(
                workspaceDirectory: workspace.path, arguments: ["--config", config, "--schedule", workspace.schedule])
            return (daemon.waitForExit(within: 30), daemon.stderr)
        }

        // snapcronctl store migrate: applies the schema once, then has nothing to do.
        let migrate = ["store", "migrate", "--config", config]
        let first = try runSnapcronctl(migrate, inDirectory: workspace.path)
        #expect(first.status == 0, "\(first)")
        #expect(first.stdout.contains("schema version 0 -> \(PostgresStateStore.schemaVersion)"), "\(first)")
        let again = try runSnapcronctl(migrate, inDirectory: workspace.path)
        #expect(again.stdout.contains("schema version \(PostgresStateStore.schemaVersion), nothing to do"), "\(again)")

        FileManager.default.createFile(
            atPath: workspace.path + "/wrong", contents: Data("wrong\n".utf8), attributes: [.posixPermissions: 0o600])
        let wrongPassword = try start(good.replacingOccurrences(of: "\(workspace.path)/password", with: "\(workspace.path)/wrong"))
        #expect(wrongPassword.status == 1)
        #expect(wrongPassword.stderr.contains("password authentication failed"), "\(wrongPassword.stderr)")

        let unreachable = try start(good.replacingOccurrences(of: "127.0.0.1:\(server.port)", with: "127.0.0.1:1"))
        #expect(unreachable.status == 1)
        #expect(unreachable.stderr.contains("cannot open the store"), "\(unreachable.stderr)")

        // A good start migrates the database and registers n1; then another host takes the name, with a live lease.
        try good.write(toFile: config, atomically: true, encoding: .utf8)
        let daemon = try DaemonProcess(
            workspaceDirectory: workspace.path, arguments: ["--config", config, "--schedule", workspace.schedule])
        #expect(eventually(within: 30) { daemon.stderr.contains("Ready") }, "\(daemon.stderr)")
        let status = try runSnapcronctl(
            ["status", "--socket", "\(workspace.path)/n1/control.sock"], inDirectory: workspace.path)
        #expect(status.stdout.contains("cluster:      1 node, 1 live"), "\(status)")
        #expect(status.stdout.contains("n1 (this node): live, "), "\(status)")
        // A node with another schedule joins; n1 names the jobs that differ when it next loads its schedule.
        try server.administer(
            """
            INSERT INTO nodes (name, epoch, lease_until, last_seen, started_at, host, instance, pid, version, schedule)
            VALUES ('n9', 1, 4102444800, 0, 0, 'other-host', 'other-machine', 9, 'x',
                    '{"ghost": "* * * * * UTC fake:vm-9 keep=1"}')
            """, database: database)
        let reload = try runSnapcronctl(
            ["reload", "--socket", "\(workspace.path)/n1/control.sock"], inDirectory: workspace.path)
        #expect(reload.status == 0, "\(reload)")
        #expect(
            eventually(within: 10) {
                daemon.stderr.contains("cluster.schedule_differs") && daemon.stderr.contains("ghost, job-0")
            }, "\(daemon.stderr)")
        try server.administer("DELETE FROM nodes WHERE name = 'n9'", database: database)
        daemon.signal(SIGTERM)
        #expect(daemon.waitForExit(within: 20) == 0)
        try server.administer(
            "UPDATE nodes SET host = 'elsewhere', instance = 'other-machine', pid = 7, lease_until = 4102444800 WHERE name = 'n1'",
            database: database)
        let nameInUse = try start(good)
        #expect(nameInUse.status == 1)
        #expect(nameInUse.stderr.contains("node name 'n1' is in use"), "\(nameInUse.stderr)")
        #expect(nameInUse.stderr.contains("host elsewhere (pid 7)"), "\(nameInUse.stderr)")

        try server.administer("UPDATE snapcron_schema SET version = version + 1", database: database)
        let newer = try start(good)
        #expect(newer.status == 1)
        #expect(newer.stderr.contains("newer than this snapcron knows"), "\(newer.stderr)")
        let refused = try runSnapcronctl(migrate, inDirectory: workspace.path)
        #expect(refused.status == 1 && refused.stderr.contains("newer than this snapcron knows"), "\(refused)")
    }

    /// `snapcronctl store copy`: a node's SQLite history moves into a new cluster store whole (ids, images, pins,
    /// pauses, hook results, the installation id); an unfinished run goes over without an owner, for the first node
    /// to take; a store that is not empty, or a database a daemon still runs on, is refused.
    @Test func aSQLiteHistoryIsCopiedIntoANewClusterStore() async throws {
        let server = try PostgresServer.start()
        defer { try? server.stop() }
        let database = try server.createDatabase()
        let workspace = try ClusterWorkspace(server: server, database: database, nodes: ["n1"], jobs: 1)
        let statePath = workspace.path + "/n1/state.db"
        let sqlite = try SnapcronDatabase(path: statePath)
        let start = Date(timeIntervalSince1970: 1_780_000_000)
        func claim(_ job: String, _ minute: Int) throws -> RunRecord {
            let fire = start.addingTimeInterval(Double(minute * 60))
            return try #require(
                try sqlite.claimRuns(
                    [RunClaim(job: job, scheduledAt: fire, trigger: .schedule, imageName: "\(job)-\(minute)", backend: "fake", target: "vm")],
                    now: fire
                ).first ?? nil)
        }
        let done = try claim("db", 1)
        _ = try sqlite.markCreating(runIDs: [done.id], now: start)
        _ = try sqlite.markWaiting(runID: done.id, imageID: "img-1", description: "d", now: start, nextPollAt: start)
        _ = try sqlite.finishRun(runID: done.id, state: .succeeded, error: nil, sizeBytes: 42, now: start)
        _ = try sqlite.setPinned(id: "img-1", backend: "fake", true)
        try sqlite.recordHookResult(
            HookRecord(runID: done.id, phase: .post, hookSet: "freeze", result: "exit 0", exitStatus: 0, durationMs: 12, finishedAt: start))
        let unfinished = try claim("web", 2)
        _ = try sqlite.setPaused(name: "web", true, now: start)
        let before = try sqlite.exportAll()
        try sqlite.close()

        let copy = ["store", "copy", "--from", "sqlite:\(statePath)", "--to", server.url(database: database),
                    "--password-file", workspace.path + "/password"]
        let copied = try runSnapcronctl(copy, inDirectory: workspace.path)
        #expect(copied.status == 0, "\(copied)")
        #expect(copied.stdout.contains("copied 2 runs, 1 images, 2 job states and 1 hook results"), "\(copied)")

        let store = try await PostgresStateStore.open(
            url: server.url(database: database), password: server.password, logger: .init(label: "test"))
        #expect(try await store.installationID() == before.installationID)
        #expect(try await store.runs(job: nil, state: nil, since: nil, limit: 10).sorted { $0.id < $1.id } == before.runs)
        #expect(try await store.image(id: "img-1", backend: "fake") == before.images.first?.record)
        #expect(try await store.allJobStates().sorted { $0.name < $1.name } == before.jobs)
        #expect(try await store.hookResults(runIDs: [done.id])[done.id] == before.hookResults)
        // New runs get ids after the copied ones.
        let next = try await store.claimRuns(
            [RunClaim(job: "db", scheduledAt: start.addingTimeInterval(600), trigger: .schedule, imageName: "x", backend: "fake", target: "vm")],
            now: start)
        #expect((next.first??.id ?? 0) > unfinished.id)
        await store.close()
        let node = try await PostgresStateStore.open(
            url: server.url(database: database), password: server.password, logger: .init(label: "test"),
            node: ClusterNode(name: "n1", lease: .seconds(30), host: "h", pid: 1, version: "t"))
        #expect(try await node.unfinishedRuns().map(\.id).contains(unfinished.id), "the first node takes it over")
        await node.close()

        let again = try runSnapcronctl(copy, inDirectory: workspace.path)
        #expect(again.status == 1 && again.stderr.contains("is not empty"), "\(again)")

        // A daemon running on the state directory holds its lock.
        let lock = open(workspace.path + "/n1/snapcrond.lock", O_RDWR | O_CREAT, 0o600)
        defer { close(lock) }
        #expect(flock(lock, LOCK_EX | LOCK_NB) == 0)
        let busy = try runSnapcronctl(copy, inDirectory: workspace.path)
        #expect(busy.status == 1 && busy.stderr.contains("snapcrond is running on"), "\(busy)")
    }

    /// Waits for a create of one of `nodes` for a fire at or after `fire` (Unix seconds) and returns its node.
    func nodeCreating(in workspace: ClusterWorkspace, among nodes: [String], after fire: Int) -> String? {
        var found: String?
        _ = eventually(within: Double(fire + 40) - Date().timeIntervalSince1970) {
            guard Date().timeIntervalSince1970 >= Double(fire) else { return false }
            found = workspace.createsInFlight().map(\.node).first { nodes.contains($0) }
            return found != nil
        }
        return found
    }

    /// Runs of `fires` not yet ended, plus fires with fewer runs than jobs.
    func unfinishedOrMissing(server: PostgresServer, database: String, fires: [Int], jobs: Int = Self.jobs) throws
        -> Int
    {
        let counts = try server.administer(
            """
            SELECT count(*) FILTER (WHERE state IN ('claimed', 'creating', 'waiting')), count(*) FROM runs
            WHERE scheduled_at IN (\(fires.map(String.init).joined(separator: ",")))
            """, database: database
        ).trimmingCharacters(in: .whitespacesAndNewlines).split(separator: "|").compactMap { Int($0) }
        guard counts.count == 2 else { return .max }
        return counts[0] + (fires.count * jobs - counts[1])
    }

    func runTable(server: PostgresServer, database: String) throws -> String {
        try server.administer(
            "SELECT id, job, scheduled_at, state, owner_node, owner_epoch, error FROM runs ORDER BY id",
            database: database)
    }

    /// The UTC stamp snapcron puts in image names: 20261207T134500Z.
    static func stamp(_ seconds: Int) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
    }
}

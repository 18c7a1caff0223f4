import BackendTypes
import ControlClient
import ControlProtocol
import ExecDescriptor
import Foundation
import Logging
import SnapcronConfig
import SnapcronCore
import SnapcronDaemon
import SnapcronStore
import SnapcronTestKit
import SnapshotBackend
import Testing

/// A scheduler on a manual clock with a fake backend, a file store and a control service; `listen()` adds a
/// real socket.
final class Harness: @unchecked Sendable {  // set up once, then only read
    static let start = Date(timeIntervalSince1970: 1_790_000_000)  // 2026-09-21T13:33:20Z
    static let schedule = """
        * * * * *     web   fake:vm-web   keep=2
        0 3 * * *     db    fake:vm-db    keep-daily=3
        */5 * * * *   lab   fake:vm-lab   overlap=allow

        """

    let directory: String
    let schedulePath: String
    let clock = ManualClock(now: Harness.start)
    let backend: FakeSnapshotBackend
    let store: SnapcronDatabase
    let scheduler: SchedulerService
    let catalog = JobCatalog()
    let config: SnapcronConfig
    let service: ControlService
    var server: ControlServer?
    var socketPath: String { directory + "/control.sock" }
    private var loop: Task<Void, any Error>?

    init(
        schedule: String = Harness.schedule,
        access: ControlAccess = ControlAccess(ownUID: 0, groupID: 0, groupName: "root"),
        behavior: FakeSnapshotBackend.ImageBehavior = .active
    ) throws {
        var template = Array("/tmp/snapcron-control-XXXXXX".utf8CString)
        directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
        chmod(directory, 0o755)  // another user (the nobody test) must reach the socket
        schedulePath = directory + "/schedule"
        try schedule.write(toFile: schedulePath, atomically: true, encoding: .utf8)
        var config = SnapcronConfig.default(stateDir: directory)
        config.backends = ["fake": BackendConfig(name: "fake", type: .exec)]
        self.config = config
        let clock = self.clock
        backend = FakeSnapshotBackend(name: "fake", defaultBehavior: behavior, now: { clock.now() })
        store = try SnapcronDatabase(path: directory + "/state.db")
        let backends: [String: any SnapshotBackend] = ["fake": backend]
        let jobs = try Self.validate(schedule, path: schedulePath, config: config, backends: backends, now: clock.now())
        catalog.update(jobs)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        var pacing = RunPacing()
        pacing.firstPollInterval = 1
        scheduler = SchedulerService(
            jobs: jobs, store: store, backends: backends, clock: clock, pacing: pacing, logger: logger)
        let (scheduler, catalog, path, settings) = (self.scheduler, self.catalog, self.schedulePath, config)
        service = ControlService(
            environment: ControlEnvironment(
                store: store, scheduler: scheduler, catalog: catalog, config: config, backends: backends,
                schedulePath: schedulePath, access: access, startedAt: Harness.start, now: { clock.now() },
                reload: {
                    let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
                    let result = ScheduleLoader(config: settings, backends: backends).check(
                        text: text, file: path, now: clock.now())
                    if case .success(let schedule) = result {
                        await scheduler.apply(jobs: schedule.jobs)
                        catalog.update(schedule.jobs)
                    }
                    return result
                }),
            logger: logger)
    }

    private static func validate(
        _ text: String, path: String, config: SnapcronConfig, backends: [String: any SnapshotBackend], now: Date
    ) throws -> [Job] {
        switch ScheduleLoader(config: config, backends: backends).check(text: text, file: path, now: now) {
        case .success(let schedule): return schedule.jobs
        case .failure(let diagnostics): throw diagnostics
        }
    }

    /// Starts the scheduler loop and waits until it sleeps.
    func startScheduler() async {
        let scheduler = self.scheduler
        loop = Task { try await scheduler.run() }  // as in Daemon.run
        await scheduler.waitUntilIdle()
    }

    /// Opens the real socket.
    func listen(limits: ControlServerLimits = ControlServerLimits(), mode: mode_t = 0o666) async throws {
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = ControlServer(
            options: ControlSocketOptions(path: socketPath, mode: mode), limits: limits, service: service,
            logger: logger)
        try await server.start()
        self.server = server
    }

    /// Stops everything and removes the directory.
    func stop() async {
        loop?.cancel()
        _ = await loop?.result
        await server?.stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Moves the clock and lets the scheduler handle what became due.
    func advance(to date: Date) async {
        clock.advance(to: date)
        // The woken loop runs later: wait until it sleeps again past `date` with nothing in flight, twice, since
        // a backend call that finishes wakes it once more.
        for _ in 0..<2 {
            var spins = 0
            while !(clock.nextDeadline.map { $0 > date } ?? false), spins < 100_000 {
                await Task.yield()
                spins += 1
            }
            await scheduler.waitUntilIdle()
        }
    }
}

/// How a test reaches the service: in-process, or as a client of the real socket.
extension Harness {
    /// A harness on `transport` with its scheduler running, stopped after `body` whatever happens.
    static func with(_ transport: Transport, _ body: (Harness) async throws -> Void) async throws {
        let harness = try Harness()
        if transport == .socket { try await harness.listen() }
        await harness.startScheduler()
        do {
            try await body(harness)
        } catch {
            await harness.stop()
            throw error
        }
        await harness.stop()
    }
}

enum Transport: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case inProcess
    case socket

    var testDescription: String { rawValue }
}

extension Harness {
    /// Sends one line and returns the answer line (nil when none: a notification), by `transport`.
    func send(_ line: String, via transport: Transport, peer: PeerCredentials? = .root) async throws -> String? {
        switch transport {
        case .inProcess:
            return await service.respond(to: Array(line.utf8), peer: peer).map {
                String(decoding: $0.dropLast(), as: UTF8.self)
            }
        case .socket:
            let path = socketPath
            return try await blocking {
                let client = try ControlClient(path: path, timeout: 30)
                try client.send(Data((line + "\n").utf8))
                return String(decoding: try client.receiveLine(), as: UTF8.self)
            }
        }
    }

    /// Calls `method` and decodes the answer; `Result` is the result type, or a thrown `RPCError`.
    func call<Params: ControlParams, Result: Decodable & Sendable>(
        _ method: ControlMethod, _ params: Params, as type: Result.Type, via transport: Transport,
        peer: PeerCredentials? = .root
    ) async throws -> Result {
        let request = try ControlCoding.encoder.encode(
            RPCRequest(id: .number(1), method: method.rawValue, params: params))
        let line = try #require(try await send(String(decoding: request, as: UTF8.self), via: transport, peer: peer))
        let response = try ControlCoding.decoder.decode(RPCResponse<Result>.self, from: Data(line.utf8))
        if let error = response.error { throw error }
        return try #require(response.result)
    }
}

extension PeerCredentials {
    static let root = PeerCredentials(pid: 1, uid: 0, gid: 0)
    static let nobody = PeerCredentials(pid: 2, uid: 65534, gid: 65534)
}

/// Runs blocking work (socket clients) off the cooperative pool, which the server's requests need.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try body() })
        }
    }
}

/// The built executables sit next to the test bundle (`.build/debug`).
enum Executables {
    static func path(_ name: String) throws -> String {
        var directories: [URL] = []
        if let executable = Bundle.main.executableURL { directories.append(executable.deletingLastPathComponent()) }
        directories += Bundle.allBundles.filter { $0.bundlePath.hasSuffix(".xctest") }
            .map { $0.bundleURL.deletingLastPathComponent() }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        directories.append(root.appendingPathComponent(".build/debug"))
        let found = directories.map { $0.appendingPathComponent(name).path }
            .first { FileManager.default.isExecutableFile(atPath: $0) }
        return try #require(found, "\(name) not built; run `swift build --build-tests` first")
    }

    /// Runs a command to its end; stdin is /dev/null unless `input` is given.
    static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil
    ) throws -> (status: Int32, stdout: String, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { _, new in new }
        process.environment = merged
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        if let input {
            let pipe = Pipe()
            process.standardInput = pipe
            pipe.fileHandleForWriting.write(Data(input.utf8))
            try pipe.fileHandleForWriting.close()
        } else {
            process.standardInput = FileHandle.nullDevice
        }
        try process.run()
        // Read both pipes to their end before waiting, so that a full pipe cannot block the child.
        let (stdout, stderr) = (
            out.fileHandleForReading.readDataToEndOfFile(), err.fileHandleForReading.readDataToEndOfFile()
        )
        process.waitUntilExit()
        return (
            process.terminationStatus, String(decoding: stdout, as: UTF8.self), String(decoding: stderr, as: UTF8.self)
        )
    }
}

/// `path` as a Unix socket address, for tests that use raw sockets.
func unixAddress(_ path: String) -> sockaddr_un {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        let bytes = Array(path.utf8)
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    return address
}

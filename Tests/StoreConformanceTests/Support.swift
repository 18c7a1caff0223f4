import Foundation
import Logging
import PostgresHarness
import SnapcronCore
import SnapcronPostgres
import SnapcronStore
import TestThreads
import Testing

/// A fixed instant; tests name times as minutes after it.
let epoch = Date(timeIntervalSince1970: 1_767_225_600)  // 2026-01-01T00:00:00Z

func minute(_ n: Int) -> Date { epoch + TimeInterval(n * 60) }

let quietLogger = Logger(label: "snapcron.store-tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// The PostgreSQL server the suites under ``StoreTests`` share, started by ``PostgresServerTrait``.
enum SharedPostgres {
    @TaskLocal static var server: PostgresServer?
}

/// Starts one throwaway PostgreSQL for a suite and everything in it, and stops it after the last test.
struct PostgresServerTrait: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        if SharedPostgres.server != nil || PostgresServer.skipRequested {
            try await function()
            return
        }
        // initdb, pg_ctl and their waits block: on a thread of their own, never on the cooperative pool.
        let server = try await withTaskExecutorPreference(OwnThreadsExecutor.shared) { try PostgresServer.start() }
        print("PostgreSQL test server: initdb + start took \(server.startDuration) (\(server.url()))")
        defer { try? server.stop() }
        try await SharedPostgres.$server.withValue(server) { try await function() }
    }
}

extension Trait where Self == PostgresServerTrait {
    /// A throwaway PostgreSQL for this suite (see ``SharedPostgres``).
    static var postgresServer: Self { PostgresServerTrait() }
}

/// Every suite that needs a PostgreSQL nests in this one, so that one server serves them all.
@Suite(.postgresServer, .onOwnThreads) struct StoreTests {}

/// The stores the conformance suite runs against.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqliteInMemory = "sqlite-memory"
    case sqliteFile = "sqlite-file"
    case postgres

    /// Every kind, without PostgreSQL when `SNAPCRON_SKIP_POSTGRES_TESTS=1`.
    static let tested: [StoreKind] = allCases.filter { $0 != .postgres || !PostgresServer.skipRequested }

    var testDescription: String { rawValue }

    /// Runs `body` with a fresh, empty store of this kind, closed afterwards.
    func withStore<T>(_ body: (any StateStore) async throws -> T) async throws -> T {
        switch self {
        case .sqliteInMemory:
            return try await body(try SnapcronDatabase.inMemory())
        case .sqliteFile:
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("snapcron-conformance-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let database = try SnapcronDatabase(path: directory.appendingPathComponent("state.db").path)
            defer { try? database.close() }
            return try await body(database)
        case .postgres:
            let server = try #require(SharedPostgres.server, "no PostgreSQL server: run inside StoreTests")
            let store = try await PostgresStateStore.open(
                url: server.url(database: try server.createDatabase()), password: server.password,
                logger: quietLogger)
            do {
                let value = try await body(store)
                await store.close()
                return value
            } catch {
                await store.close()
                throw error
            }
        }
    }
}

extension StateStore {
    /// Claims a scheduled fire of `job` at `minute(m)` with a conventional name, backend and target.
    @discardableResult
    func claim(_ job: String, at m: Int, target: String = "vm-1", trigger: RunTrigger = .schedule) async throws
        -> RunRecord?
    {
        try await claimRuns(
            [
                RunClaim(
                    job: job, scheduledAt: minute(m), trigger: trigger, imageName: "snapcron-\(job)-\(m)",
                    backend: "fake", target: target)
            ], now: minute(m))[0]
    }

    /// Claims, starts and drives a run to `waiting` with image id `image`.
    @discardableResult
    func waitingRun(_ job: String, at m: Int, image: String, target: String = "vm-1") async throws -> RunRecord {
        let run = try #require(try await claim(job, at: m, target: target))
        _ = try #require(try await markCreating(runIDs: [run.id], now: minute(m))[0])
        return try await markWaiting(
            runID: run.id, imageID: image, description: nil, now: minute(m), nextPollAt: minute(m + 1))
    }

    /// Claims and drives a run to `succeeded`, so its image `image` (created at `minute(m)`) is active.
    @discardableResult
    func activeImage(_ job: String, at m: Int, image: String, target: String = "vm-1") async throws -> ImageRecord {
        let run = try await waitingRun(job, at: m, image: image, target: target)
        _ = try await finishRun(runID: run.id, state: .succeeded, error: nil, sizeBytes: nil, now: minute(m + 1))
        return try #require(try await self.image(id: image, backend: "fake"))
    }

    func jobState(_ name: String) async throws -> JobStateRecord? {
        let one = try await jobState(name: name)
        let listed = try await allJobStates().first { $0.name == name }
        #expect(one == listed, "jobState(name:) agrees with allJobStates()")
        return one
    }
}

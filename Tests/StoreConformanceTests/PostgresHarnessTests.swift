import Foundation
import PostgresHarness
import TestThreads
import Testing

/// The harness itself: a server of its own, started, used and stopped, its folder removed.
@Suite(.onOwnThreads) struct PostgresHarnessTests {
    @Test(.enabled(if: !PostgresServer.skipRequested))
    func startsAnswersAndStopsCleanly() throws {
        let server = try PostgresServer.start()
        print("PostgreSQL harness: initdb + start took \(server.startDuration)")
        #expect(try server.administer("SELECT 1").trimmingCharacters(in: .whitespacesAndNewlines) == "1")
        let database = try server.createDatabase()
        let owner = try server.administer(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '\(database)'")
        #expect(owner.trimmingCharacters(in: .whitespacesAndNewlines) == PostgresServer.role)
        #expect(server.url().hasPrefix("postgresql://snapcron@127.0.0.1:"))
        #expect(!server.url().contains(server.password))
        try server.stop()
        #expect(!FileManager.default.fileExists(atPath: server.directory.path))
    }
}

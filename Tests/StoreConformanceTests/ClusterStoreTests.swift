import Foundation
import PostgresHarness
import SnapcronCore
import SnapcronPostgres
import Testing

/// Several nodes on one PostgreSQL: who holds which run, and what a node whose lease lapsed may still write.
/// Leases are made to lapse by moving `lease_until` back in the database (its clock is the one leases follow),
/// never by sleeping.
extension StoreTests {
    @Suite(.enabled(if: !PostgresServer.skipRequested)) struct Cluster {
        var server: PostgresServer {
            get throws { try #require(SharedPostgres.server, "no PostgreSQL server: run inside StoreTests") }
        }

        func node(_ name: String, host: String = "host-1") -> ClusterNode {
            ClusterNode(name: name, lease: .seconds(30), host: host, pid: 100, version: "test")
        }

        func open(_ database: String, as node: ClusterNode?) async throws -> PostgresStateStore {
            let server = try server
            return try await PostgresStateStore.open(
                url: server.url(database: database), password: server.password, logger: quietLogger, node: node)
        }

        func claim(_ store: PostgresStateStore, job: String, at fire: Int) async throws -> RunRecord {
            let claim = RunClaim(
                job: job, scheduledAt: minute(fire), trigger: .schedule, imageName: "\(job)-\(fire)", backend: "b",
                target: "t-\(job)")
            return try #require(try await store.claimRuns([claim], now: minute(fire)).first ?? nil)
        }

        /// Moves a node's lease into the past, as if it had been silent for longer than its lease.
        func lapse(_ name: String, in database: String) throws {
            try server.administer(
                "UPDATE nodes SET lease_until = lease_until - 3600 WHERE name = '\(name)'", database: database)
        }

        @Test func aLiveNodesRunsStayItsOwn() async throws {
            let database = try server.createDatabase()
            let a = try await open(database, as: node("a"))
            let b = try await open(database, as: node("b"))
            defer { Task { await a.close(); await b.close() } }
            let run = try await claim(a, job: "db", at: 1)
            #expect(try await b.takeOverRuns().isEmpty)
            #expect(try await b.unfinishedRuns().isEmpty, "b starting up resumes nothing of a live a")
            // A claim a sent again (its answer was lost) finds its own run; b's finds nothing of a's.
            #expect(try await a.ownUnfinishedRun(job: "db", scheduledAt: minute(1))?.id == run.id)
            #expect(try await b.ownUnfinishedRun(job: "db", scheduledAt: minute(1)) == nil)
            #expect(try await a.renewRunLease())
            _ = try #require(try await a.markCreating(runIDs: [run.id], now: minute(1)).first ?? nil)
        }

        @Test func aLapsedNodesRunsGoToOneOtherNodeAndItsWritesAreRefused() async throws {
            let database = try server.createDatabase()
            let a = try await open(database, as: node("a"))
            let b = try await open(database, as: node("b"))
            defer { Task { await a.close(); await b.close() } }
            let waiting = try await claim(a, job: "db", at: 1)
            _ = try await a.markCreating(runIDs: [waiting.id], now: minute(1))
            _ = try await a.markWaiting(
                runID: waiting.id, imageID: "img-1", description: nil, now: minute(1), nextPollAt: minute(2))
            let claimed = try await claim(a, job: "web", at: 1)

            try lapse("a", in: database)
            // A node without the runs' backend takes none of them (it could not follow them).
            let other = try await open(
                database, as: ClusterNode(name: "c", lease: .seconds(30), host: "h", pid: 1, version: "t", backends: ["zfs"]))
            #expect(try await other.takeOverRuns().isEmpty)
            await other.close()
            let taken = try await b.takeOverRuns()
            #expect(taken.map(\.id) == [waiting.id, claimed.id])
            #expect(try await b.takeOverRuns().isEmpty, "a run is taken over once")

            // a, back from a long pause, may not touch them: every write is refused and changes nothing.
            await #expect(throws: RunFencedError.self) {
                try await a.finishRun(runID: waiting.id, state: .failed, error: "late", sizeBytes: nil, now: minute(3))
            }
            await #expect(throws: RunFencedError.self) {
                try await a.updatePoll(
                    runID: waiting.id, imageState: .saving, sizeBytes: nil, nextPollAt: minute(4), now: minute(3))
            }
            await #expect(throws: RunFencedError.self) {
                try await a.markCreating(runIDs: [claimed.id], now: minute(3))
            }
            #expect(try await a.run(id: waiting.id)?.state == .waiting)

            // a notices at its next renewal, registers again, and finds nothing left to take: b holds both.
            #expect(try await !a.renewRunLease())
            #expect(try await a.renewRunLease())
            #expect(try await a.takeOverRuns().isEmpty)
            await #expect(throws: RunFencedError.self) {
                try await a.recordRetryableFailure(runID: claimed.id, error: "x", nextAttemptAt: minute(4))
            }
            #expect(try await a.markCreating(runIDs: [claimed.id], now: minute(3)) == [nil])

            _ = try await b.finishRun(runID: waiting.id, state: .succeeded, error: nil, sizeBytes: 10, now: minute(3))
            #expect(try await b.image(id: "img-1", backend: "b")?.state == .active)
        }

        @Test func aRestartedNodeTakesBackItsOwnRunsAndANameHeldElsewhereIsRefused() async throws {
            let database = try server.createDatabase()
            let first = try await open(database, as: node("a"))
            let run = try await claim(first, job: "db", at: 1)
            await first.close()

            // Another host may not use the name while the lease lives.
            let error = try await #require(throws: PostgresStoreError.self) {
                try await open(database, as: node("a", host: "host-2"))
            }
            #expect(error.code == .nodeNameInUse)
            #expect(error.message.contains("host-1"), "\(error.message)")

            // The same host (the daemon restarted) registers anew and resumes what it held.
            let restarted = try await open(database, as: node("a"))
            #expect(try await restarted.unfinishedRuns().map(\.id) == [run.id])
            _ = try #require(try await restarted.markCreating(runIDs: [run.id], now: minute(2)).first ?? nil)
            await restarted.close()

            // Once the lease lapsed, another host may take the name over.
            try lapse("a", in: database)
            let moved = try await open(database, as: node("a", host: "host-2"))
            #expect(try await moved.unfinishedRuns().map(\.id) == [run.id])
            await moved.close()
        }

        @Test func nodesTakingOverTogetherShareTheRunsWithoutOverlap() async throws {
            let database = try server.createDatabase()
            let dead = try await open(database, as: node("dead"))
            let claims = (0..<300).map { index in
                RunClaim(
                    job: "job-\(index)", scheduledAt: minute(1), trigger: .schedule, imageName: "i-\(index)",
                    backend: "b", target: "t-\(index)")
            }
            let claimed = try await dead.claimRuns(claims, now: minute(1)).compactMap { $0?.id }
            await dead.close()
            try lapse("dead", in: database)

            var stores: [PostgresStateStore] = []
            for name in ["a", "b", "c"] { stores.append(try await open(database, as: node(name))) }
            let shares = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for store in stores { group.addTask { try await store.takeOverRuns().map(\.id) } }
                return try await group.reduce(into: [[Int64]]()) { $0.append($1) }
            }
            for store in stores { await store.close() }
            let all = shares.flatMap { $0 }
            #expect(all.count == claimed.count, "each run taken once: \(shares.map(\.count))")
            #expect(Set(all) == Set(claimed))
        }

        @Test func oneRetentionPassPerJobAcrossTheCluster() async throws {
            let database = try server.createDatabase()
            let a = try await open(database, as: node("a"))
            let b = try await open(database, as: node("b"))
            defer { Task { await a.close(); await b.close() } }
            #expect(try await a.beginRetention(job: "db"))
            #expect(try await !b.beginRetention(job: "db"), "a runs db's pass")
            #expect(try await b.beginRetention(job: "web"), "other jobs are free")
            try await b.endRetention(job: "db")  // not b's: changes nothing
            #expect(try await !b.beginRetention(job: "db"))
            try await a.endRetention(job: "db")
            #expect(try await b.beginRetention(job: "db"))
            // A pass of a node whose lease lapsed counts as ended.
            try lapse("b", in: database)
            #expect(try await a.beginRetention(job: "db"))
            let nodes = try await a.clusterNodes()
            #expect(nodes.map(\.name) == ["a", "b"])
            #expect(nodes.map(\.leaseLive) == [true, false])
            #expect(nodes.map(\.isSelf) == [true, false])
        }

        @Test func schedulesThatDifferAreNamedJobByJob() async throws {
            let database = try server.createDatabase()
            let a = try await open(database, as: node("a"))
            let b = try await open(database, as: node("b"))
            defer { Task { await a.close(); await b.close() } }
            #expect(try await a.publishSchedule(["db": "0 2 * * * UTC x:1 keep=5", "web": "* * * * * UTC x:2 keep=5"]) == [:])
            let seenByB = try await b.publishSchedule(["db": "0 3 * * * UTC x:1 keep=5", "web": "* * * * * UTC x:2 keep=5", "lab": "l"])
            #expect(seenByB == ["a": ["db", "lab"]])
            #expect(try await a.publishSchedule(["db": "0 3 * * * UTC x:1 keep=5", "web": "* * * * * UTC x:2 keep=5", "lab": "l"]) == [:])
            // A node whose lease lapsed is not compared.
            try lapse("a", in: database)
            #expect(try await b.publishSchedule(["other": "o"]) == [:])
        }

        @Test func aStoreWithoutANodeOwnsEverything() async throws {
            let database = try server.createDatabase()
            let tool = try await open(database, as: nil)
            defer { Task { await tool.close() } }
            #expect(tool.runLease == nil)
            let run = try await claim(tool, job: "db", at: 1)
            #expect(try await tool.unfinishedRuns().map(\.id) == [run.id])
            _ = try #require(try await tool.markCreating(runIDs: [run.id], now: minute(1)).first ?? nil)
        }
    }
}

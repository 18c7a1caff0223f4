import Foundation
import PostgresHarness
import SnapcronCore
import SnapcronPostgres
import Testing

/// What only the PostgreSQL store has: a URL and a password, a schema version, several daemons on one database.
extension StoreTests {
    @Suite struct PostgresOnly {
        var server: PostgresServer {
            get throws { try #require(SharedPostgres.server, "no PostgreSQL server: run inside StoreTests") }
        }

        @Test func urlNamesUserHostPortAndDatabase() throws {
            let location = try PostgresStoreLocation(url: "postgresql://snap@db.example:6543/state")
            #expect(location == PostgresStoreLocation(user: "snap", host: "db.example", port: 6543, database: "state"))
            #expect(try PostgresStoreLocation(url: "postgres://snap@db/state").port == 5432)
            #expect(location.description == "postgresql://snap@db.example:6543/state")
            let verified = try PostgresStoreLocation(
                url: "postgresql://snap@db.example/state?sslmode=verify-full&sslrootcert=/etc/snapcron/ca.pem")
            #expect(verified.tls == .verifyFull && verified.rootCertificates == "/etc/snapcron/ca.pem")
            #expect(try PostgresStoreLocation(url: "postgresql://snap@db/state?sslmode=require").tls == .require)
        }

        @Test(arguments: [
            "postgresql://snap:secret@db/state", "mysql://snap@db/state", "postgresql://db/state",
            "postgresql://snap@db", "postgresql://snap@db/state?sslmode=prefer",
            "postgresql://snap@db/state?sslrootcert=/ca.pem", "postgresql://snap@db/state?sslmode=verify-full&sslrootcert=ca.pem",
            "postgresql://snap@db/state?connect_timeout=3",
        ])
        func badURLIsRefused(_ url: String) throws {
            let error = try #require(throws: PostgresStoreError.self) { try PostgresStoreLocation(url: url) }
            #expect(error.code == .invalidURL)
            #expect(!error.message.contains("secret"), "the password leaked: \(error.message)")
        }

        @Test(.enabled(if: !PostgresServer.skipRequested))
        func wrongPasswordIsAClearError() async throws {
            let error = try await #require(throws: PostgresStoreError.self) {
                try await PostgresStateStore.open(url: try server.url(), password: "wrong", logger: quietLogger)
            }
            #expect(error.code == .cannotConnect)
            #expect(error.message.contains("password authentication failed"), "\(error.message)")
            #expect(!error.message.contains("wrong"))
        }

        /// `sslmode=verify-full` against a server with a self-signed certificate: trusted when given as
        /// `sslrootcert`, refused against the system's CAs; `require` encrypts without checking; a server without
        /// TLS is refused when TLS is asked.
        @Test(.enabled(if: !PostgresServer.skipRequested))
        func tlsEncryptsAndVerifiesWhenAsked() async throws {
            let tlsServer = try PostgresServer.start(tls: true)
            defer { try? tlsServer.stop() }
            let certificate = try #require(tlsServer.certificatePath)
            let verified = try await PostgresStateStore.open(
                url: tlsServer.url() + "?sslmode=verify-full&sslrootcert=\(certificate)", password: tlsServer.password,
                logger: quietLogger)
            #expect(try await verified.installationID().isEmpty == false)
            let encrypted = try tlsServer.administer(
                "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.usename = 'snapcron'")
            #expect((Int(encrypted.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) >= 1, "\(encrypted)")
            await verified.close()

            let required = try await PostgresStateStore.open(
                url: tlsServer.url() + "?sslmode=require", password: tlsServer.password, logger: quietLogger)
            await required.close()

            let untrusted = try await #require(throws: PostgresStoreError.self) {
                try await PostgresStateStore.open(
                    url: tlsServer.url() + "?sslmode=verify-full", password: tlsServer.password, logger: quietLogger)
            }
            #expect(untrusted.code == .cannotConnect, "\(untrusted)")

            let plain = try server
            let refused = try await #require(throws: PostgresStoreError.self) {
                try await PostgresStateStore.open(
                    url: plain.url() + "?sslmode=require", password: plain.password, logger: quietLogger)
            }
            #expect(refused.code == .cannotConnect, "\(refused)")
        }

        @Test(.enabled(if: !PostgresServer.skipRequested))
        func unreachableServerIsAClearError() async throws {
            let error = try await #require(throws: PostgresStoreError.self) {
                // Port 1 on loopback: nobody listens there.
                try await PostgresStateStore.open(
                    url: "postgresql://snapcron@127.0.0.1:1/x", password: "p", logger: quietLogger)
            }
            #expect(error.code == .cannotConnect)
        }

        @Test(.enabled(if: !PostgresServer.skipRequested))
        func newerSchemaIsRefusedAndOpeningTwiceMigratesOnce() async throws {
            let server = try server
            let database = try server.createDatabase()
            let first = try await PostgresStateStore.open(
                url: server.url(database: database), password: server.password, logger: quietLogger)
            let id = try await first.installationID()
            await first.close()
            let second = try await PostgresStateStore.open(
                url: server.url(database: database), password: server.password, logger: quietLogger)
            #expect(try await second.installationID() == id)
            await second.close()

            try server.administer("UPDATE snapcron_schema SET version = version + 1", database: database)
            let error = try await #require(throws: PostgresStoreError.self) {
                try await PostgresStateStore.open(
                    url: server.url(database: database), password: server.password, logger: quietLogger)
            }
            #expect(error.code == .newerSchema)
            #expect(error.message.contains("schema version 3, newer than this snapcron knows (2)"), "\(error.message)")
        }

        @Test(.enabled(if: !PostgresServer.skipRequested))
        func foreignDatabaseIsRefused() async throws {
            let server = try server
            let database = try server.createDatabase()
            try server.administer(
                "CREATE TABLE customers (id int); ALTER TABLE customers OWNER TO snapcron", database: database)
            let error = try await #require(throws: PostgresStoreError.self) {
                try await PostgresStateStore.open(
                    url: server.url(database: database), password: server.password, logger: quietLogger)
            }
            #expect(error.code == .notASnapcronDatabase)
        }

        /// Three daemons (three pools) claim the same 300 fires at once, in batches in different orders: each fire
        /// is claimed by exactly one of them, and every claim is answered.
        @Test(.enabled(if: !PostgresServer.skipRequested))
        func concurrentNodesClaimEachFireOnce() async throws {
            let server = try server
            let database = try server.createDatabase()
            var stores: [PostgresStateStore] = []
            for _ in 0..<3 {
                stores.append(
                    try await PostgresStateStore.open(
                        url: server.url(database: database), password: server.password, logger: quietLogger))
            }
            let claims = (0..<300).map { n in
                RunClaim(
                    job: "job-\(n % 30)", scheduledAt: minute(n / 30), trigger: .schedule, imageName: "i-\(n)",
                    backend: "fake", target: "vm-\(n % 30)")
            }
            let won = try await withThrowingTaskGroup(of: [Int64].self) { group in
                for (index, store) in stores.enumerated() {
                    let order = index == 1 ? Array(claims.reversed()) : claims
                    group.addTask {
                        var ids: [Int64] = []
                        for start in stride(from: 0, to: order.count, by: 50) {
                            let batch = Array(order[start..<min(start + 50, order.count)])
                            ids += try await store.claimRuns(batch, now: minute(20)).compactMap { $0?.id }
                        }
                        return ids
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
            #expect(won.count == 300)
            #expect(Set(won).count == 300)
            #expect(try await stores[0].runs(job: nil, state: nil, since: nil, limit: 1000).count == 300)
            #expect(try await stores[2].allJobStates().allSatisfy { $0.lastScheduledAt == minute(9) })
            for store in stores { await store.close() }
        }
    }
}

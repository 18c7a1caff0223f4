// Cluster mode's claim path on a real PostgreSQL (a throwaway server, initdb'd here; needs root, as the tests):
// NODES stores, as NODES daemons would open, all claim the same minute's JOBS fires in the scheduler's order, in
// batches of BATCH, then mark the runs they won as creating. Every fire must be claimed exactly once.
//
//   swift build -c release --product store-claim-bench && .build/release/store-claim-bench
//   JOBS=10000 NODES=3 BATCH=10000 (defaults); NODES=1 gives the cost per fire of one node.
import Foundation
import Logging
import PostgresHarness
import SnapcronCore
import SnapcronPostgres

let environment = ProcessInfo.processInfo.environment
let jobCount = Int(environment["JOBS"] ?? "") ?? 10_000
let nodeCount = Int(environment["NODES"] ?? "") ?? 3
let batchSize = max(1, Int(environment["BATCH"] ?? "") ?? 10_000)
let quiet = Logger(label: "store-claim-bench", factory: { _ in SwiftLogNoOpLogHandler() })

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

let server = try PostgresServer.start()
defer { try? server.stop() }
let database = try server.createDatabase()
var stores: [PostgresStateStore] = []
for _ in 0..<nodeCount {
    stores.append(
        try await PostgresStateStore.open(
            url: server.url(database: database), password: server.password, logger: quiet))
}

let minute = Date(timeIntervalSince1970: 1_780_000_020)
let claims = (0..<jobCount).map { index in
    let job = "job\(index)"
    return RunClaim(
        job: job, scheduledAt: minute, trigger: .schedule, imageName: "snapcron-\(job)-20260528T202700Z",
        backend: "exec", target: "vm\(index)")
}

struct NodeResult: Sendable {
    var won: Int
    var claimTime: Duration
    var startTime: Duration
}

let started = ContinuousClock.now
let results = try await withThrowingTaskGroup(of: NodeResult.self) { group in
    for store in stores {
        group.addTask {
            let clock = ContinuousClock()
            let begin = clock.now
            var won: [Int64] = []
            var index = 0
            while index < claims.count {
                let batch = Array(claims[index..<min(index + batchSize, claims.count)])
                won += try await store.claimRuns(batch, now: minute).compactMap { $0?.id }
                index += batchSize
            }
            let claimed = clock.now
            var offset = 0
            while offset < won.count {
                let batch = Array(won[offset..<min(offset + 500, won.count)])
                _ = try await store.markCreating(runIDs: batch, now: minute)
                offset += 500
            }
            return NodeResult(won: won.count, claimTime: claimed - begin, startTime: clock.now - claimed)
        }
    }
    var results: [NodeResult] = []
    for try await result in group { results.append(result) }
    return results
}
let total = ContinuousClock.now - started

let recorded = try await stores[0].runs(job: nil, state: nil, since: nil, limit: jobCount * 2)
let distinct = Set(recorded.map(\.job)).count
let creating = recorded.filter { $0.state == .creating }.count
print(
    "PostgreSQL \(server.startDuration) to start; \(jobCount) fires of one minute, \(nodeCount) node(s), "
        + "batches of \(batchSize)")
for (index, result) in results.enumerated() {
    print(
        String(
            format: "  node %d: won %d, claims %.3f s, marked creating %.3f s", index + 1, result.won,
            seconds(result.claimTime), seconds(result.startTime)))
}
print(
    String(
        format: "all claimed and started in %.3f s (%.1f µs per fire); runs %d, distinct jobs %d, creating %d",
        seconds(total), seconds(total) * 1e6 / Double(jobCount), recorded.count, distinct, creating))
guard recorded.count == jobCount, distinct == jobCount, creating == jobCount,
    results.map(\.won).reduce(0, +) == jobCount
else {
    print("FAILED: every fire must be claimed exactly once")
    exit(1)
}

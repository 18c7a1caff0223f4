// Hammers a state database with claim → create → wait → finish until it is killed.
//
// Usage: snapcron-store-torture DB-PATH SEED
// Used by SnapcronStoreTests' crash-safety test, which SIGKILLs it at random moments and then checks the file.
// It first resumes the runs a previous (killed) instance left unfinished, prints "ready", then loops forever.
// Any store error is a bug: it is printed to stderr and the process exits 1, which fails the test.

import SnapcronCore
import Foundation
import SnapcronStore

/// A seeded generator, so a failing run can be replayed from its seed.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

let job = "torture"
let arguments = CommandLine.arguments
guard arguments.count == 3, let seed = UInt64(arguments[2]) else {
    FileHandle.standardError.write(Data("usage: snapcron-store-torture DB-PATH SEED\n".utf8))
    exit(2)
}

do {
    let db = try SnapcronDatabase(path: arguments[1])
    var random = SplitMix64(seed: seed)
    // A fake clock: the store takes `now` from its callers, and only order matters here.
    var clock = Date(timeIntervalSince1970: 1_800_000_000)
    func tick() -> Date {
        clock += 1
        return clock
    }

    /// Drives a run one step; nil once it is finished.
    func step(_ run: RunRecord) throws -> RunRecord? {
        switch run.state {
        case .claimed:
            return try db.markCreating(runID: run.id, now: tick())
        case .creating:
            if Int.random(in: 0..<5, using: &random) == 0 {
                return try db.recordRetryableFailure(runID: run.id, error: "throttled", nextAttemptAt: tick())
            }
            return try db.markWaiting(runID: run.id, imageID: "img-\(run.id)", now: tick(), nextPollAt: tick())
        case .waiting:
            switch Int.random(in: 0..<6, using: &random) {
            case 0, 1: return try db.updatePoll(runID: run.id, imageState: .saving, nextPollAt: tick(), now: tick())
            case 2: return try db.finishRun(runID: run.id, state: .failed, error: "image error", now: tick())
            case 3: return try db.finishRun(runID: run.id, state: .timedOut, error: "timeout", now: tick())
            default: return try db.finishRun(runID: run.id, state: .succeeded, error: nil, now: tick())
            }
        default:
            return nil
        }
    }

    func drive(_ run: RunRecord) throws {
        var current: RunRecord? = run
        while let run = current, !run.state.isTerminal {
            current = try step(run)
        }
    }

    for run in try db.unfinishedRuns() {
        try drive(run)
    }
    FileHandle.standardOutput.write(Data("ready\n".utf8))

    var fire = (try db.lastScheduledAt(job: job) ?? Date(timeIntervalSince1970: 1_700_000_000)) + 60
    while true {
        switch Int.random(in: 0..<10, using: &random) {
        case 0:
            _ = try db.recordMissed(job: job, scheduledAt: fire, now: tick(), reason: "daemon down")
        case 1:
            _ = try db.recordSkipped(job: job, scheduledAt: fire, now: tick(), reason: "overlap")
        default:
            let name = "snapcron-\(job)-\(Int(fire.timeIntervalSince1970))"
            guard
                let run = try db.claimRun(
                    job: job, scheduledAt: fire, trigger: .schedule, imageName: name, backend: "fake", target: "vm-1",
                    now: tick())
            else {
                throw TortureFailure(message: "fresh fire \(fire) was already claimed")
            }
            try drive(run)
        }
        // An old fire must stay claimed.
        if try db.claimRun(
            job: job, scheduledAt: fire, trigger: .schedule, imageName: "again", backend: "fake", target: "vm-1",
            now: tick()) != nil
        {
            throw TortureFailure(message: "fire \(fire) was claimed twice")
        }
        fire += 60
    }
} catch {
    FileHandle.standardError.write(Data("snapcron-store-torture: \(error)\n".utf8))
    exit(1)
}

struct TortureFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

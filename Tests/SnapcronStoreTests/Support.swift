import SnapcronCore
import Foundation
import SnapcronStore
import Testing

/// A fixed instant; tests name times as minutes after it.
let epoch = Date(timeIntervalSince1970: 1_767_225_600)  // 2026-01-01T00:00:00Z

func minute(_ n: Int) -> Date { epoch + TimeInterval(n * 60) }

extension SnapcronDatabase {
    /// Claims a scheduled fire of `job` at `minute(m)` with a conventional name, backend and target.
    @discardableResult
    func claim(_ job: String, at m: Int, target: String = "vm-1", trigger: RunTrigger = .schedule) throws
        -> RunRecord?
    {
        try claimRun(
            job: job, scheduledAt: minute(m), trigger: trigger, imageName: "snapcron-\(job)-\(m)", backend: "fake",
            target: target, now: minute(m))
    }

    /// Claims and drives a run to `waiting` with image id `image`.
    @discardableResult
    func waitingRun(_ job: String, at m: Int, image: String) throws -> RunRecord {
        let run = try #require(try claim(job, at: m))
        try markCreating(runID: run.id, now: minute(m))
        return try markWaiting(runID: run.id, imageID: image, now: minute(m), nextPollAt: minute(m + 1))
    }

    /// Claims and drives a run to `succeeded`, so its image `image` (created at `minute(m)`) is active.
    @discardableResult
    func activeImage(_ job: String, at m: Int, image: String, target: String = "vm-1") throws -> ImageRecord {
        let run = try #require(try claim(job, at: m, target: target))
        try markCreating(runID: run.id, now: minute(m))
        try markWaiting(runID: run.id, imageID: image, now: minute(m), nextPollAt: minute(m + 1))
        try finishRun(runID: run.id, state: .succeeded, error: nil, now: minute(m + 1))
        return try #require(try self.image(id: image, backend: "fake"))
    }
}

/// A fresh directory under the system temp directory, removed when released.
final class TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("snapcron-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    deinit { try? FileManager.default.removeItem(at: url) }
}

/// A seeded generator (print the seed so a failure can be replayed).
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

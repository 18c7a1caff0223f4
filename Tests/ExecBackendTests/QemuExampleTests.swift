import BackendTypes
import ExecBackend
import ExecDescriptor
import Foundation
import Logging
import SnapcronConfig
import SnapcronCore
import SnapcronStore
import SnapcronTestKit
import SnapshotBackend
import TestThreads
import Testing

@testable import SnapcronDaemon

/// The shipped example: `etc/snapcron.exec-qemu.toml` with the `etc/exec/qemu-snapshot` adapter on real qcow2 disks.
@Suite(.onOwnThreads, .enabled(if: hasQemuImg, "needs qemu-img (apt-get install qemu-utils; scripts/install-deps does)"))
struct QemuExampleTests {
    /// The shipped config with the adapter taken from this checkout instead of /usr/local/lib/snapcron.
    static func shippedConfig() throws -> SnapcronConfig {
        let text = try String(contentsOfFile: packageRoot + "/etc/snapcron.exec-qemu.toml", encoding: .utf8)
            .replacingOccurrences(of: "/usr/local/lib/snapcron/qemu-snapshot", with: qemuAdapter)
        return try SnapcronConfig.parse(text, file: "etc/snapcron.exec-qemu.toml")
    }

    /// The `qemu` backend built from the shipped config by the daemon's factory.
    static func shippedBackend() throws -> any SnapshotBackend {
        try #require(try LiveBackends.make(shippedConfig())["qemu"])
    }

    @Test func shippedConfigAndScheduleAreValid() throws {
        let config = try Self.shippedConfig()
        let settings = try #require(config.backends["qemu"]?.exec)
        #expect(settings.create == [qemuAdapter, "create", "{target}", "{name}"])
        #expect(settings.timeout == .seconds(600))
        #expect(settings.transientExitCodes == [75])
        #expect(config.backends["qemu"]?.maxConcurrent == 1)

        let schedule = try ScheduleFile.load(
            path: packageRoot + "/etc/schedule.exec-qemu", config: config, now: Date(timeIntervalSince1970: 1.8e9))
        let job = try #require(schedule.jobs.first)
        #expect(schedule.jobs.count == 1)
        #expect(job.backend == "qemu")
        let backend = try Self.shippedBackend()
        try backend.validate(target: job.target)
        for target in ["lab.qcow2", "/srv/lab.raw", "", "-o/x.qcow2"] {
            #expect(throws: SnapshotBackendError.self, "\(target)") { try backend.validate(target: target) }
        }
    }

    @Test func createStatusListDeleteOnARealDisk() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let disk = try scratch.qcow2("lab.qcow2")
        let backend = try Self.shippedBackend()

        let description = "created by snapcron (snapcron:job=lab scheduled=2026-11-29T01:00:00Z run=1)"
        let image = try await backend.create(
            target: disk, name: "snapcron-lab-20261129T010000Z", description: description, logger: quiet)
        #expect(image.id == "\(disk)@snapcron-lab-20261129T010000Z")
        #expect(try await backend.status(image, logger: quiet) == .active)
        #expect(try qemuSnapshotTags(disk) == ["snapcron-lab-20261129T010000Z"])

        let again = try await backend.create(
            target: disk, name: "snapcron-lab-20261129T010000Z", description: description, logger: quiet)
        #expect(again == image)
        #expect(try qemuSnapshotTags(disk).count == 1, "a retried create made a duplicate")

        let listed = try await backend.list(target: disk, logger: quiet)
        let entry = try #require(listed.first)
        #expect(listed.count == 1)
        #expect(entry.id == image)
        #expect(entry.name == "snapcron-lab-20261129T010000Z")
        #expect(entry.target == disk)
        #expect(entry.state == .active)
        let created = try #require(entry.createdAt)
        #expect(abs(created.timeIntervalSinceNow) < 300, "created_at \(created) is not about now")

        try await backend.delete(image, logger: quiet)
        #expect(try qemuSnapshotTags(disk).isEmpty)
        #expect(try await backend.status(image, logger: quiet) == .gone)
        #expect(try await backend.list(target: disk, logger: quiet).isEmpty)
        try await backend.delete(image, logger: quiet)
    }

    @Test func passesTheConformanceSuite() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let targets = (try scratch.qcow2("a.qcow2"), try scratch.qcow2("b.qcow2"))
        let failures = await SnapshotBackendConformance(makeBackend: { try Self.shippedBackend() }, targets: targets)
            .run()
        #expect(failures.isEmpty, "\(failures)")
        #expect(try qemuSnapshotTags(targets.0).isEmpty, "conformance left snapshots behind")
    }

    @Test func failuresOfQemuImgArePermanentAndSayWhy() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let backend = try Self.shippedBackend()
        let missing = scratch.path + "/missing.qcow2"
        let error = try #require(
            await backendError {
                _ = try await backend.create(target: missing, name: "s1", description: "", logger: quiet)
            })
        #expect(!error.isTransient)
        #expect(error.operation == .create)
        #expect(error.message.contains("qemu-snapshot list exited with status 1"), "\(error)")
        #expect(error.message.contains("No such file or directory"), "\(error)")

        try Data(count: 1 << 20).write(to: URL(fileURLWithPath: scratch.path + "/raw.qcow2"))
        let raw = try #require(
            await backendError {
                _ = try await backend.create(
                    target: scratch.path + "/raw.qcow2", name: "s1", description: "", logger: quiet)
            })
        #expect(raw.message.contains("not in qcow2 format"), "\(raw)")
        #expect(try await backend.status(ImageRef(id: missing + "@s1"), logger: quiet) == .gone)

        // A disk that a VM (here qemu-io) holds open is locked: qemu-img says so.
        let busy = try scratch.qcow2("busy.qcow2")
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/qemu-io")
        holder.arguments = ["-c", "sleep 60000", busy]
        try holder.run()
        defer { holder.terminate() }
        var locked: SnapshotBackendError?
        for _ in 0..<100 {
            locked = await backendError {
                _ = try await backend.create(target: busy, name: "s1", description: "", logger: quiet)
            }
            if locked != nil { break }
            try? await backend.delete(ImageRef(id: busy + "@s1"), logger: quiet)  // qemu-io was not up yet
            try await Task.sleep(for: .milliseconds(50))
        }
        let lockError = try #require(locked)
        #expect(!lockError.isTransient)
        #expect(lockError.message.contains("qemu-snapshot create exited with status 1"), "\(lockError)")
        #expect(lockError.message.contains("Failed to get \"write\" lock"), "\(lockError)")
    }

    /// The daemon's scheduler on a manual clock: three runs of a `keep=2` job leave the two newest snapshots.
    @Test func retentionDeletesOldSnapshots() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let disk = try scratch.qcow2("lab.qcow2")
        let config = try Self.shippedConfig()
        let backends = try LiveBackends.make(config)
        let schedule = try ScheduleFile.parse(
            text: "@yearly lab qemu:\(disk) keep=2\n", file: "schedule", config: config,
            now: Date(timeIntervalSince1970: 1_780_000_000))
        let clock = ManualClock(now: Date(timeIntervalSince1970: 1_780_000_000))
        let store = try SnapcronDatabase.inMemory()
        let scheduler = SchedulerService(
            jobs: schedule.jobs, store: store, backends: backends, clock: clock, logger: quiet)
        let loop = Task { try await scheduler.run() }
        defer { loop.cancel() }

        var names: [String] = []
        for _ in 0..<3 {
            // Create, then polls (2 s apart, backing off) until active, then retention: a minute at a time.
            let run = try await scheduler.triggerAndFinish(job: "lab", store: store, clock: clock, minutes: 50)
            names.append(run.imageName ?? "")
            await scheduler.waitUntilIdle()
            clock.advance(by: 60)
        }
        let runs = try store.runs(job: "lab")
        #expect(runs.count == 3)
        #expect(runs.allSatisfy { $0.state == .succeeded }, "\(runs.map { "\($0.state) \($0.error ?? "")" })")
        #expect(try qemuSnapshotTags(disk) == Array(names.suffix(2)), "runs \(runs.map { "\($0.id) \($0.state) \($0.imageName ?? "-") \($0.error ?? "")" })")
        let images = try store.images(job: "lab", includeDeleted: true)
        #expect(images.filter { $0.deletedAt != nil }.map(\.name) == [names[0]])
    }
}

import Crypto
import Foundation
import Logging
import SnapcronTestKit
import SnapshotBackend
import TestThreads
import Testing

@testable import LocalBackend

#if canImport(Glibc)
import Glibc
#endif

@Suite(.onOwnThreads) struct LocalBackendTests {
    static let mebibyte = 1 << 20
    static let gibibyte: Int64 = 1 << 30

    @Test func passesTheConformanceSuite() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        try writeFile(scratch.path + "/a.img", "disk a")
        try writeFile(scratch.path + "/b.img", "disk b")
        let root = scratch.path
        let suite = SnapshotBackendConformance(
            makeBackend: { LocalBackend(configuration: .init(imagesDirectory: root + "/images-\(UUID().uuidString)")) },
            targets: (root + "/a.img", root + "/b.img"),
            awaitFinal: { backend, image, _ in
                await (backend as! LocalBackend).awaitCompletion(of: image)
            })
        let failures = await suite.run()
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test func passesTheConformanceSuiteByPolling() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        try writeFile(scratch.path + "/a.img", "disk a")
        try writeFile(scratch.path + "/b.img", "disk b")
        let root = scratch.path
        let suite = SnapshotBackendConformance(
            makeBackend: { LocalBackend(configuration: .init(imagesDirectory: root + "/images-\(UUID().uuidString)")) },
            targets: (root + "/a.img", root + "/b.img"))
        try await suite.check()
    }

    @Test func copiesA2GiBSparseFileKeepingHoles() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let source = scratch.path + "/disk.raw"
        let size = 2 * Self.gibibyte
        try writeSparseFile(
            source, size: size,
            extents: [
                (0, Self.mebibyte), (700 << 20, 2 * Self.mebibyte), (1536 << 20, Self.mebibyte), (size - 123, 123),
            ])
        let backend = scratch.backend()

        let clock = ContinuousClock()
        let started = clock.now
        let image = try await backend.create(target: source, name: "disk-1", description: "nightly", logger: quiet)
        let state = await backend.awaitCompletion(of: image)
        let elapsed = clock.now - started
        print("2 GiB sparse image (copy + sha256 of 2 GiB incl. holes) took \(elapsed)")

        #expect(state == .active)
        let folder = scratch.images + "/disk-1"
        let copy = try #require(lstatOf(folder + "/data"))
        #expect(Int64(copy.st_size) == size)
        #expect(Int64(copy.st_blocks) * 512 < 16 << 20, "holes were filled: \(copy.st_blocks) blocks")
        let manifest = try manifestJSON(folder)
        #expect(manifest["sha256"] as? String == (try sha256sum(source)))
        #expect(manifest["size_bytes"] as? Int == Int(size))
        #expect((manifest["allocated_bytes"] as? Int ?? .max) < 16 << 20)
        #expect(manifest["copy_method"] as? String == "sparse-copy" || manifest["copy_method"] as? String == "reflink")
    }

    /// The copy alone (no hashing), on its own thread so the thread's I/O counters are exact.
    @Test func sparseCopyReadsOnlyDataExtents() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let source = scratch.path + "/disk.raw"
        let destination = scratch.path + "/copy.raw"
        let size = 2 * Self.gibibyte
        try writeSparseFile(
            source, size: size, extents: [(4096, 3 * Self.mebibyte), (Int64(1) << 30, Self.mebibyte)])

        let (elapsed, bytesRead) = await runOnOwnThread(name: "test-copy") { () -> (Duration, Int64) in
            let input = open(source, O_RDONLY)
            let output = open(destination, O_RDWR | O_CREAT | O_EXCL, 0o600)
            defer {
                close(input)
                close(output)
            }
            let before = threadReadBytes()
            let clock = ContinuousClock()
            let started = clock.now
            try? SparseFile.copyData(
                from: input, to: output, size: size, sourcePath: source, destinationPath: destination,
                cancel: CancellationFlag(), checkpoint: { _, _, _ in })
            _ = fsync(output)
            return (clock.now - started, threadReadBytes() - before)
        }
        print("sparse copy of 2 GiB with 4 MiB of data took \(elapsed), read \(bytesRead) bytes")
        #expect(elapsed < .seconds(1))
        #expect(bytesRead < 8 << 20)
        let copy = try #require(lstatOf(destination))
        #expect(Int64(copy.st_size) == size)
        // Same bytes: compared with the sparse-aware hasher, which the 2 GiB test checks against sha256sum.
        let digests = [source, destination].map { path -> String in
            let descriptor = open(path, O_RDONLY)
            defer { close(descriptor) }
            return (try? SparseFile.sha256(of: descriptor, size: size, path: path, cancel: CancellationFlag()))?
                .hexString ?? "unreadable"
        }
        #expect(digests[0] == digests[1])
    }

    @Test func copiesADirectoryTreeWithSymlinks() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let tree = scratch.path + "/vm"
        let manager = FileManager.default
        try manager.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
        try manager.createDirectory(atPath: tree + "/empty", withIntermediateDirectories: true)
        try writeFile(tree + "/a.txt", "config\n", mode: 0o640)
        try writeSparseFile(tree + "/sub/b.bin", size: 64 << 20, extents: [(8 << 20, 4096)])
        try manager.createSymbolicLink(atPath: tree + "/link", withDestinationPath: "sub/b.bin")
        try manager.setAttributes([.posixPermissions: 0o750], ofItemAtPath: tree + "/sub")

        let backend = scratch.backend()
        let image = try await backend.create(target: tree, name: "tree-1", description: "", logger: quiet)
        #expect(await backend.awaitCompletion(of: image) == .active)

        let data = scratch.images + "/tree-1/data"
        #expect(try String(contentsOfFile: data + "/a.txt", encoding: .utf8) == "config\n")
        #expect(lstatOf(data + "/a.txt").map { $0.st_mode & 0o7777 } == 0o640)
        #expect(lstatOf(data + "/sub").map { $0.st_mode & 0o7777 } == 0o750)
        #expect(try manager.destinationOfSymbolicLink(atPath: data + "/link") == "sub/b.bin")
        #expect(lstatOf(data + "/link").map { ($0.st_mode & S_IFMT) == S_IFLNK } == true)
        let sparse = try #require(lstatOf(data + "/sub/b.bin"))
        #expect(sparse.st_size == 64 << 20 && Int64(sparse.st_blocks) * 512 < 1 << 20)
        #expect(lstatOf(data + "/empty").map { ($0.st_mode & S_IFMT) == S_IFDIR } == true)

        // snapcron-tree-v1, computed independently from sha256sum.
        var records: [[String]] = [
            ["f", "a.txt", "7", try sha256sum(tree + "/a.txt")],
            ["d", "empty"],
            ["l", "link", "sub/b.bin"],
            ["d", "sub"],
            ["f", "sub/b.bin", "\(64 << 20)", try sha256sum(tree + "/sub/b.bin")],
        ]
        records.sort { $0[1].utf8.lexicographicallyPrecedes($1[1].utf8) }
        var hasher = SHA256()
        for field in records.joined() { hasher.update(data: Array(field.utf8) + [0]) }
        let expected = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        let manifest = try manifestJSON(scratch.images + "/tree-1")
        #expect(manifest["sha256"] as? String == expected)
        #expect(manifest["digest_algorithm"] as? String == "snapcron-tree-v1")
        #expect(manifest["kind"] as? String == "directory")
        #expect(manifest["size_bytes"] as? Int == 7 + (64 << 20))
    }

    @Test func missingTargetIsAClearPermanentError() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let backend = scratch.backend()
        let missing = scratch.path + "/nope.qcow2"
        let error = await #expect(throws: SnapshotBackendError.self) {
            try await backend.create(target: missing, name: "n-1", description: "", logger: quiet)
        }
        #expect(error?.isTransient == false)
        #expect(error?.operation == .create)
        #expect(
            error?.description == "local create failed for image n-1 of \(missing): target does not exist (permanent)")
        #expect(!FileManager.default.fileExists(atPath: scratch.images + "/n-1"))
        #expect(try await backend.status(ImageRef(id: "n-1"), logger: quiet) == .gone)
    }

    @Test(arguments: ["", "relative/disk.img", "/var/../etc", "/"])
    func validateRejectsBadTargets(_ target: String) throws {
        let backend = LocalBackend(configuration: .init(imagesDirectory: "/var/lib/snapcron/images"))
        #expect(throws: SnapshotBackendError.self) { try backend.validate(target: target) }
        #expect(throws: SnapshotBackendError.self) {
            try backend.validate(target: "/var/lib/snapcron/images/x")
        }
        #expect(throws: SnapshotBackendError.self) { try backend.validate(target: "/var/lib/snapcron") }
        try backend.validate(target: "/var/lib/libvirt/images/lab.qcow2")
    }

    @Test func rejectsUnsafeNamesAndReusedNames() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        try writeFile(scratch.path + "/a.img", "a")
        try writeFile(scratch.path + "/b.img", "b")
        let backend = scratch.backend()
        for bad in ["../escape", ".hidden", "a/b", ""] {
            await #expect(throws: SnapshotBackendError.self) {
                try await backend.create(target: scratch.path + "/a.img", name: bad, description: "", logger: quiet)
            }
        }
        let image = try await backend.create(target: scratch.path + "/a.img", name: "x", description: "", logger: quiet)
        _ = await backend.awaitCompletion(of: image)
        let error = await #expect(throws: SnapshotBackendError.self) {
            try await backend.create(target: scratch.path + "/b.img", name: "x", description: "", logger: quiet)
        }
        #expect(error?.message.contains("already used") == true)
    }

    @Test func targetRemovedMidCopyEndsInErrorWithoutData() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let source = scratch.path + "/disk.raw"
        try writeSparseFile(
            source, size: 32 << 20, extents: [(0, Self.mebibyte), (10 << 20, Self.mebibyte), (20 << 20, Self.mebibyte)])
        let gate = CopyGate { $0.extentIndex == 1 }
        let backend = scratch.backend(hook: gate.hook)

        let image = try await backend.create(target: source, name: "gone-1", description: "", logger: quiet)
        #expect(await gate.waitForArrival()?.offset == 10 << 20)
        #expect(try await backend.status(image, logger: quiet) == .saving)
        #expect(unlink(source) == 0)
        gate.letGo()

        let state = await backend.awaitCompletion(of: image)
        #expect(state.errorReason?.contains("was removed during the copy") == true, "\(state)")
        let folder = scratch.images + "/gone-1"
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder) == ["manifest.json"])
        #expect(try manifestJSON(folder)["state"] as? String == "error")
        let listed = try await backend.list(target: source, logger: quiet)
        #expect(listed.map(\.state) == [state])
        // A fresh instance reads the same from disk.
        #expect(try await scratch.backend().status(image, logger: quiet) == state)
    }

    /// What a process killed mid-copy leaves behind: a `queued`/`saving` manifest nobody locks, part of the data.
    private func writeLeftover(
        _ scratch: Scratch, name: String, target: String, state: String, description: String = ""
    ) throws -> String {
        let folder = scratch.images + "/" + name
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try writeFile(folder + "/data.partial", "half a disk")
        try writeFile(
            folder + "/manifest.json",
            """
            {"format": 1, "name": "\(name)", "description": "\(description)", "target": "\(target)",
             "state": "\(state)", "created_at": "2023-11-14T22:13:20Z"}
            """)
        return folder
    }

    @Test func leftoverSavingManifestIsInterruptedAndCreateRecopies() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let source = scratch.path + "/disk.raw"
        try writeSparseFile(source, size: 8 << 20, extents: [(Int64(Self.mebibyte), 5000)])
        let folder = try writeLeftover(scratch, name: "crashed-1", target: source, state: "saving")

        let backend = scratch.backend()
        let image = ImageRef(id: "crashed-1")
        let listed = try #require(try await backend.list(target: source, logger: quiet).first)
        #expect(listed.state.errorReason?.hasPrefix("interrupted:") == true, "\(listed.state)")

        #expect(try await backend.create(target: source, name: "crashed-1", description: "", logger: quiet) == image)
        #expect(await backend.awaitCompletion(of: image) == .active)
        #expect(try manifestJSON(folder)["sha256"] as? String == (try sha256sum(source)))
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).sorted() == ["data", "manifest.json"])
    }

    @Test func resumeAfterRestartCopiesAnInterruptedImageAgain() async throws {
        // The daemon restarted after a kill mid-copy and picks up the image it was following.
        let scratch = try Scratch()
        defer { scratch.remove() }
        let source = scratch.path + "/disk.raw"
        try writeSparseFile(source, size: 8 << 20, extents: [(Int64(Self.mebibyte), 5000)])
        let folder = try writeLeftover(
            scratch, name: "crashed-2", target: source, state: "queued", description: "nightly")
        let backend = scratch.backend()
        let image = ImageRef(id: "crashed-2")
        let before = try await backend.status(image, logger: quiet)
        #expect(before.errorReason?.hasPrefix("interrupted:") == true, "status alone changes nothing: \(before)")
        await backend.resumeAfterRestart(image, target: source, logger: quiet)
        let state = try await backend.status(image, logger: quiet)
        #expect(state == .queued || state == .saving || state == .active, "\(state)")
        #expect(await backend.awaitCompletion(of: image) == .active)
        #expect(try await backend.status(image, logger: quiet) == .active)
        #expect(try manifestJSON(folder)["sha256"] as? String == (try sha256sum(source)))
        #expect(try manifestJSON(folder)["description"] as? String == "nightly")
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder).sorted() == ["data", "manifest.json"])

        // When the target is gone by then, the image fails with both reasons.
        _ = try writeLeftover(scratch, name: "crashed-3", target: scratch.path + "/missing.raw", state: "saving")
        await backend.resumeAfterRestart(ImageRef(id: "crashed-3"), target: "", logger: quiet)
        let failed = try await backend.status(ImageRef(id: "crashed-3"), logger: quiet)
        #expect(failed.errorReason?.hasPrefix("interrupted:") == true, "\(failed)")
        #expect(failed.errorReason?.contains("copying again failed") == true, "\(failed)")
        #expect(failed.errorReason?.contains("target does not exist") == true, "\(failed)")
    }

    @Test func anotherInstanceSeesALiveCopyAsSaving() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let source = scratch.path + "/disk.raw"
        try writeSparseFile(source, size: 4 << 20, extents: [(0, 4096)])
        let gate = CopyGate { _ in true }
        let first = scratch.backend(hook: gate.hook)
        let second = scratch.backend()

        let image = try await first.create(target: source, name: "live-1", description: "", logger: quiet)
        _ = await gate.waitForArrival()
        #expect(try await second.status(image, logger: quiet) == .saving)
        #expect(try await second.create(target: source, name: "live-1", description: "", logger: quiet) == image)
        gate.letGo()
        #expect(await first.awaitCompletion(of: image) == .active)
        #expect(try await second.status(image, logger: quiet) == .active)
    }

    @Test func deleteDuringCopyStopsItAndRemovesEverything() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let source = scratch.path + "/disk.raw"
        try writeSparseFile(source, size: 16 << 20, extents: [(0, Self.mebibyte), (8 << 20, Self.mebibyte)])
        let gate = CopyGate { $0.extentIndex == 1 }
        let backend = scratch.backend(hook: gate.hook)

        let image = try await backend.create(target: source, name: "del-1", description: "", logger: quiet)
        _ = await gate.waitForArrival()
        let deletion = Task { try await backend.delete(image, logger: quiet) }
        // delete has to reach the actor and mark the job cancelled before the copy continues.
        while !(await backend.isDeleting(image)) {
            await Task.yield()
        }
        gate.letGo()
        try await deletion.value
        #expect(try await backend.status(image, logger: quiet) == .gone)
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.images).isEmpty)
    }

    @Test func listAllReturnsTheImagesOfEveryTarget() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        try writeFile(scratch.path + "/a.img", "disk a")
        try writeFile(scratch.path + "/b.img", "disk b")
        let backend = scratch.backend()
        let a = try await backend.create(
            target: scratch.path + "/a.img", name: "all-a", description: "snapcron:job=a", logger: quiet)
        let b = try await backend.create(target: scratch.path + "/b.img", name: "all-b", description: "", logger: quiet)
        _ = await backend.awaitCompletion(of: a)
        _ = await backend.awaitCompletion(of: b)
        let all = try #require(try await backend.listAll(logger: quiet))
        #expect(all.map(\.id) == [a, b])
        #expect(all.map(\.target) == [scratch.path + "/a.img", scratch.path + "/b.img"])
        #expect(all.first?.description == "snapcron:job=a")
        #expect(try await scratch.backend().listAll(logger: quiet)?.count == 2)
    }

    @Test func manifestRecordsTheImage() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let source = scratch.path + "/small.img"
        try writeFile(source, "hello\n", mode: 0o600)
        let backend = scratch.backend()
        let image = try await backend.create(target: source, name: "m-1", description: "web nightly", logger: quiet)
        #expect(await backend.awaitCompletion(of: image) == .active)

        let manifest = try manifestJSON(scratch.images + "/m-1")
        #expect(manifest["name"] as? String == "m-1")
        #expect(manifest["description"] as? String == "web nightly")
        #expect(manifest["target"] as? String == source)
        #expect(manifest["state"] as? String == "active")
        #expect(manifest["error"] is NSNull)
        #expect(manifest["created_at"] as? String == "2023-11-14T22:13:20Z")
        #expect(manifest["completed_at"] as? String == "2023-11-14T22:13:20Z")
        #expect(manifest["size_bytes"] as? Int == 6)
        #expect(manifest["allocated_bytes"] is Int)
        #expect(manifest["sha256"] as? String == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
        #expect(manifest["kind"] as? String == "file")
        #expect(lstatOf(scratch.images + "/m-1/data").map { $0.st_mode & 0o7777 } == 0o600)

        let listed = try await backend.list(target: source, logger: quiet)
        #expect(listed.count == 1)
        #expect(listed.first?.sizeBytes == 6)
        #expect(listed.first?.createdAt == Date(timeIntervalSince1970: 1_700_000_000))
    }
}

/// Bytes this thread has read through read-like system calls (`rchar` of /proc/thread-self/io).
func threadReadBytes() -> Int64 {
    guard let text = try? String(contentsOfFile: "/proc/thread-self/io", encoding: .utf8) else { return -1 }
    for line in text.split(separator: "\n") where line.hasPrefix("rchar:") {
        return Int64(line.dropFirst("rchar:".count).trimmingCharacters(in: .whitespaces)) ?? -1
    }
    return -1
}

import Foundation
import Logging
import SnapshotBackend
import Testing

@testable import LocalBackend

#if canImport(Glibc)
import Glibc
#endif

/// Defect 9: an entry swapped between the copy's `lstat` and its `open` must neither block the copy thread (a FIFO)
/// nor lead it outside the tree (a symlink). The entry hook runs exactly between the two.
@Suite struct SwappedEntryTests {
    @Test
    func aFileSwappedForAFIFOFailsTheCopyInsteadOfBlockingIt() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let tree = scratch.path + "/vm"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        try writeFile(tree + "/disk.img", "disk")
        try writeFile(tree + "/notes.txt", "notes")
        let once = Once()
        let backend = scratch.backend(entryHook: { entry in
            guard entry.relativePath == "disk.img" else { return }
            once.run {
                unlink(entry.path)
                mkfifo(entry.path, 0o644)
            }
        })
        let image = try await backend.create(target: tree, name: "fifo-1", description: "", logger: quiet)
        let state = await finalState(of: image, in: backend, within: .seconds(60))
        if state == nil { release(fifo: tree + "/disk.img") }
        #expect(state != nil, "the copy thread is blocked opening the FIFO")
        #expect(
            state == .error("\(tree)/disk.img changed during the copy: it was a regular file and is now a fifo"),
            "\(String(describing: state))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.images + "/fifo-1") == ["manifest.json"])
    }

    @Test
    func aFileTargetSwappedForAFIFOFailsTheCopyInsteadOfBlockingIt() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let disk = scratch.path + "/disk.raw"
        try writeFile(disk, "disk")
        let once = Once()
        let backend = scratch.backend(entryHook: { entry in
            guard entry.relativePath.isEmpty else { return }
            once.run {
                unlink(entry.path)
                mkfifo(entry.path, 0o644)
            }
        })
        let image = try await backend.create(target: disk, name: "fifo-2", description: "", logger: quiet)
        let state = await finalState(of: image, in: backend, within: .seconds(60))
        if state == nil { release(fifo: disk) }
        #expect(state != nil, "the copy thread is blocked opening the FIFO")
        #expect(
            state == .error("\(disk) changed during the copy: it was a regular file and is now a fifo"),
            "\(String(describing: state))")
    }

    @Test
    func aDirectorySwappedForASymlinkOutsideIsNeverFollowed() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let tree = scratch.path + "/vm"
        let outside = scratch.path + "/outside"
        try FileManager.default.createDirectory(atPath: tree + "/sub", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try writeFile(tree + "/sub/inside.txt", "inside")
        try writeFile(outside + "/secret.txt", "SECRET outside the tree")
        let once = Once()
        let backend = scratch.backend(entryHook: { entry in
            guard entry.relativePath == "sub" else { return }
            once.run {
                rename(entry.path, entry.path + ".moved")
                symlink(outside, entry.path)
            }
        })
        let image = try await backend.create(target: tree, name: "link-1", description: "", logger: quiet)
        let state = await finalState(of: image, in: backend, within: .seconds(60))
        #expect(filesContaining("SECRET", below: scratch.images).isEmpty)
        #expect(
            state == .error("\(tree)/sub changed during the copy: it was a directory and is now a symbolic link"),
            "\(String(describing: state))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: scratch.images + "/link-1") == ["manifest.json"])
    }

    /// A FIFO or a socket that is in the tree from the start is skipped (not copied, never opened), as documented.
    @Test
    func specialFilesPresentFromTheStartAreSkipped() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let tree = scratch.path + "/vm"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        try writeFile(tree + "/disk.img", "disk")
        #expect(mkfifo(tree + "/pipe", 0o644) == 0)
        try FileManager.default.createSymbolicLink(atPath: tree + "/escape", withDestinationPath: scratch.path)
        let backend = scratch.backend()
        let image = try await backend.create(target: tree, name: "special-1", description: "", logger: quiet)
        #expect(await finalState(of: image, in: backend, within: .seconds(60)) == .active)
        let data = scratch.images + "/special-1/data"
        #expect(try FileManager.default.contentsOfDirectory(atPath: data).sorted() == ["disk.img", "escape"])
        #expect(try FileManager.default.destinationOfSymbolicLink(atPath: data + "/escape") == scratch.path)
    }

    /// Names are bytes to the kernel: one that is not UTF-8 is copied under the same bytes, not a repaired string.
    @Test func aNameThatIsNotUTF8IsCopiedByteForByte() async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let tree = scratch.path + "/vm"
        try FileManager.default.createDirectory(atPath: tree, withIntermediateDirectories: true)
        let name: [UInt8] = [0x64, 0x69, 0x73, 0x6B, 0xFF, 0x2E, 0x69, 0x6D, 0x67]  // "disk\xFF.img"
        let source = Array(tree.utf8) + [0x2F] + name
        let descriptor = (source.map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer {
            open($0.baseAddress!, O_WRONLY | O_CREAT | O_EXCL, 0o644)
        }
        #expect(descriptor >= 0)
        #expect(write(descriptor, "data", 4) == 4)
        close(descriptor)
        let backend = scratch.backend()
        let image = try await backend.create(target: tree, name: "bytes-1", description: "", logger: quiet)
        #expect(await finalState(of: image, in: backend, within: .seconds(60)) == .active)
        let copy = Array((scratch.images + "/bytes-1/data/").utf8) + name
        var info = stat()
        let found = (copy.map { CChar(bitPattern: $0) } + [0]).withUnsafeBufferPointer { lstat($0.baseAddress!, &info) }
        #expect(found == 0 && info.st_size == 4)
    }

    /// Lets a copy thread blocked opening `fifo` for reading go on (the old code's failure mode), so the test ends.
    private func release(fifo: String) {
        let descriptor = open(fifo, O_WRONLY | O_NONBLOCK)
        if descriptor >= 0 { close(descriptor) }
    }
}

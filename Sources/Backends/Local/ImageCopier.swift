import Crypto
import Foundation
import Logging
import SnapshotBackend

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The state of a running copy, written by the copy thread and read by `status`.
final class CopyProgress: @unchecked Sendable {
    private let lock = NSLock()
    private var current: ImageState = .queued

    var state: ImageState {
        get { lock.withLock { current } }
        set { lock.withLock { current = newValue } }
    }
}

/// The digest of a directory image, `snapcron-tree-v1`.
///
/// SHA-256 over one record per entry below the root (the root itself is not listed), in ascending byte order of
/// the entry's UTF-8 relative path (`/`-separated, no leading `./`), fields ended by a NUL byte:
/// - directory: `d`, path
/// - regular file: `f`, path, size in decimal, sha256 of the content in lowercase hex
/// - symbolic link: `l`, path, link text
///
/// Modes, owners and times are not part of it; other file types (sockets, fifos, devices) are not copied.
enum TreeDigest {
    static let algorithm = "snapcron-tree-v1"

    struct Entry {
        enum Kind: String { case directory = "d", file = "f", symlink = "l" }
        var kind: Kind
        var path: String
        var size: Int64 = 0
        /// The content sha256 of a file, the link text of a symlink.
        var detail: String = ""
    }

    static func digest(of entries: [Entry]) -> String {
        var hasher = SHA256()
        let sorted = entries.sorted { $0.path.utf8.lexicographicallyPrecedes($1.path.utf8) }
        for entry in sorted {
            var fields = [entry.kind.rawValue, entry.path]
            switch entry.kind {
            case .directory: break
            case .file: fields += [String(entry.size), entry.detail]
            case .symlink: fields.append(entry.detail)
            }
            for field in fields {
                hasher.update(data: Array(field.utf8) + [0])
            }
        }
        return hasher.finalize().hexString
    }
}

/// Copies one target into one image folder on a thread of its own, then records the outcome in the manifest.
///
/// The image folder's lock (held through `lockDescriptor`) marks the copy as live for other backend instances;
/// it is released only after the final manifest is on disk.
struct ImageCopier: Sendable {
    var imagesDirectory: String
    var manifest: Manifest
    var lockDescriptor: Int32
    var allowReflink: Bool
    var hook: LocalBackend.CopyHook?
    var now: @Sendable () -> Date
    var progress: CopyProgress
    var cancel: CancellationFlag
    var logger: Logger

    var folder: String { imagesDirectory + "/" + manifest.name }
    var dataPath: String { folder + "/" + LocalBackend.dataFileName }
    var partialPath: String { folder + "/" + LocalBackend.dataFileName + ".partial" }

    /// Runs the whole copy; never throws: failures end in an `error` manifest.
    func run() {
        defer { closeQuietly(lockDescriptor) }
        var manifest = self.manifest
        let started = ContinuousClock.now
        do {
            manifest.state = ImageState.saving.stringValue
            try manifest.write(in: folder)
            progress.state = .saving

            let outcome = try copy()
            manifest.kind = outcome.kind
            manifest.sizeBytes = outcome.size
            manifest.allocatedBytes = outcome.allocated
            manifest.sha256 = outcome.digest
            manifest.digestAlgorithm = outcome.digestAlgorithm
            manifest.copyMethod = outcome.method
            manifest.state = ImageState.active.stringValue
            manifest.completedAt = now()
            try manifest.write(in: folder)
            progress.state = .active
            logger.info(
                "Image active",
                metadata: [
                    "image.size_bytes": "\(outcome.size)",
                    "image.allocated_bytes": "\(outcome.allocated)",
                    "image.copy_method": "\(outcome.method)",
                    "image.copy_ms": "\(outcome.copyDuration.milliseconds)",
                    "image.total_ms": "\((ContinuousClock.now - started).milliseconds)",
                ])
        } catch is CopyCancelled {
            // The image is being deleted; the deleter removes the folder.
            try? removeTree(partialPath)
            try? removeTree(dataPath)
            progress.state = .gone
            logger.debug("Image copy cancelled")
        } catch {
            let reason = "\(error)"
            // Never leave partial data behind an image that is not active.
            try? removeTree(partialPath)
            try? removeTree(dataPath)
            manifest.state = "error"
            manifest.error = reason
            manifest.completedAt = now()
            manifest.sizeBytes = nil
            manifest.allocatedBytes = nil
            manifest.sha256 = nil
            do {
                try manifest.write(in: folder)
            } catch {
                logger.error("Cannot record image error", metadata: ["error": "\(error)"])
            }
            progress.state = .error(reason)
            logger.error("Image copy failed", metadata: ["error": "\(reason)"])
        }
    }

    struct Outcome {
        var kind: String
        var size: Int64
        var allocated: Int64
        var digest: String
        var digestAlgorithm: String
        var method: String
        var copyDuration: Duration
    }

    /// Copies the target to `data.partial`, hashes it, and renames it to `data`.
    func copy() throws -> Outcome {
        let target = manifest.target
        guard let info = try fileStatus(target, followSymlinks: true) else {
            throw LocalCopyError("\(target) does not exist any more")
        }
        try removeTree(partialPath)
        try removeTree(dataPath)
        var outcome: Outcome
        if info.isRegularFile {
            let file = try copyFile(from: target, to: partialPath, followSymlink: true)
            outcome = Outcome(
                kind: "file", size: file.size, allocated: file.allocated, digest: file.sha256,
                digestAlgorithm: "sha256", method: file.method, copyDuration: file.copyDuration)
        } else if info.isDirectory {
            let clock = ContinuousClock()
            var tree = TreeCopy(copier: self, imagesDirectory: try fileStatus(imagesDirectory, followSymlinks: true))
            let duration = try clock.measure {
                try tree.copyDirectory(from: target, to: partialPath, relative: "", info: info)
            }
            // The root itself must still be the directory we walked.
            guard let after = try fileStatus(target, followSymlinks: true),
                after.st_dev == info.st_dev, after.st_ino == info.st_ino
            else {
                throw LocalCopyError("\(target) was removed or replaced during the copy")
            }
            outcome = Outcome(
                kind: "directory", size: tree.size, allocated: tree.allocated,
                digest: TreeDigest.digest(of: tree.entries), digestAlgorithm: TreeDigest.algorithm,
                method: "tree", copyDuration: duration)
        } else {
            throw LocalCopyError("\(target) is neither a regular file nor a directory")
        }
        try systemCall("rename", dataPath) { rename(partialPath, dataPath) }
        try fsyncDirectory(folder)
        return outcome
    }

    struct FileCopy {
        var size: Int64
        var allocated: Int64
        var sha256: String
        var method: String
        var copyDuration: Duration
    }

    /// Copies one regular file (reflink, else sparse-aware), keeps its mode, owner and times, fsyncs, and hashes it.
    func copyFile(from source: String, to destination: String, followSymlink: Bool) throws -> FileCopy {
        let flags = O_RDONLY | O_CLOEXEC | (followSymlink ? 0 : O_NOFOLLOW)
        let input = try systemCall("open", source) { open(source, flags) }
        defer { closeQuietly(input) }
        let before = try fileStatus(descriptor: input, path: source)
        guard before.isRegularFile else {
            throw LocalCopyError("\(source) is no longer a regular file")
        }
        let output = try systemCall("open", destination) {
            open(destination, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        }
        defer { closeQuietly(output) }

        let clock = ContinuousClock()
        let start = clock.now
        var method = "sparse-copy"
        if allowReflink && SparseFile.reflink(from: input, to: output) {
            method = "reflink"
        } else {
            try SparseFile.copyData(
                from: input, to: output, size: Int64(before.st_size), sourcePath: source,
                destinationPath: destination, cancel: cancel
            ) { index, offset, length in
                hook?(
                    LocalBackend.CopyCheckpoint(
                        image: manifest.name, source: source, extentIndex: index, offset: offset, length: length))
            }
        }
        try systemCall("fchmod", destination) { fchmod(output, before.permissionBits) }
        _ = fchown(output, before.st_uid, before.st_gid)  // only root may; a copy owned by us is fine otherwise
        #if os(Linux)
        var times = [before.st_atim, before.st_mtim]
        _ = futimens(output, &times)
        #endif
        try systemCall("fsync", destination) { fsync(output) }
        let copyDuration = clock.now - start

        // An unlinked, replaced or resized source makes the copy worthless even though our descriptor still reads.
        let after = try fileStatus(descriptor: input, path: source)
        if after.st_nlink == 0 {
            throw LocalCopyError("\(source) was removed during the copy")
        }
        let current = try fileStatus(source, followSymlinks: followSymlink)
        guard let current, current.st_dev == before.st_dev, current.st_ino == before.st_ino else {
            throw LocalCopyError("\(source) was removed or replaced during the copy")
        }
        if after.st_size != before.st_size {
            throw LocalCopyError("\(source) changed size during the copy")
        }

        let digest = try SparseFile.sha256(of: output, size: Int64(before.st_size), path: destination, cancel: cancel)
        let written = try fileStatus(descriptor: output, path: destination)
        return FileCopy(
            size: Int64(before.st_size), allocated: written.allocatedBytes, sha256: digest.hexString,
            method: method, copyDuration: copyDuration)
    }
}

/// The recursive part of a directory copy, collecting digest entries and sizes.
struct TreeCopy {
    let copier: ImageCopier
    /// The image store, skipped if it lies inside the tree (it would copy itself forever).
    let imagesDirectory: stat?
    var entries: [TreeDigest.Entry] = []
    var size: Int64 = 0
    var allocated: Int64 = 0

    mutating func copyDirectory(from source: String, to destination: String, relative: String, info: stat) throws {
        if copier.cancel.isCancelled { throw CopyCancelled() }
        try systemCall("mkdir", destination) { mkdir(destination, 0o700) }
        let names = try FileManager.default.contentsOfDirectory(atPath: source)
            .sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        for name in names {
            let childSource = source + "/" + name
            let childDestination = destination + "/" + name
            let childRelative = relative.isEmpty ? name : relative + "/" + name
            guard let child = try fileStatus(childSource) else {
                throw LocalCopyError("\(childSource) was removed during the copy")
            }
            if child.isDirectory {
                if let store = imagesDirectory, store.st_dev == child.st_dev, store.st_ino == child.st_ino {
                    copier.logger.warning(
                        "Skipping the image store inside the target", metadata: ["path": "\(childSource)"])
                    continue
                }
                entries.append(.init(kind: .directory, path: childRelative))
                try copyDirectory(from: childSource, to: childDestination, relative: childRelative, info: child)
            } else if child.isRegularFile {
                let file = try copier.copyFile(from: childSource, to: childDestination, followSymlink: false)
                entries.append(.init(kind: .file, path: childRelative, size: file.size, detail: file.sha256))
                size += file.size
                allocated += file.allocated
            } else if child.isSymlink {
                let text = try readLink(childSource)
                try systemCall("symlink", childDestination) { symlink(text, childDestination) }
                _ = lchown(childDestination, child.st_uid, child.st_gid)
                entries.append(.init(kind: .symlink, path: childRelative, detail: text))
            } else {
                copier.logger.warning("Skipping a special file", metadata: ["path": "\(childSource)"])
            }
        }
        try fsyncDirectory(destination)
        // Mode, owner and times last: a read-only directory must stay writable while it is filled.
        try systemCall("chmod", destination) { chmod(destination, info.permissionBits) }
        _ = chown(destination, info.st_uid, info.st_gid)
        #if os(Linux)
        var times = [info.st_atim, info.st_mtim]
        _ = utimensat(AT_FDCWD, destination, &times, 0)
        #endif
    }

    private func readLink(_ path: String) throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = try systemCall("readlink", path) { readlink(path, &buffer, buffer.count - 1) }
        return String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

extension Duration {
    var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}

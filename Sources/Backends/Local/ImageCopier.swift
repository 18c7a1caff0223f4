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
    var entryHook: LocalBackend.EntryHook?
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
    ///
    /// Every entry is opened relative to its directory's descriptor, without following symlinks and without
    /// blocking, and the opened descriptor must be the very entry `lstat` described (same type, device and inode):
    /// an entry swapped meanwhile (a FIFO, a symlink out of the tree) fails the copy instead of blocking it or
    /// leading it elsewhere. The target itself is the one place a symlink is followed (documented).
    func copy() throws -> Outcome {
        let target = manifest.target
        guard let info = try fileStatus(target, followSymlinks: true) else {
            throw LocalCopyError("\(target) does not exist any more")
        }
        entryHook?(.init(image: manifest.name, path: target, relativePath: ""))
        try removeTree(partialPath)
        try removeTree(dataPath)
        var outcome: Outcome
        if info.isRegularFile {
            let input = try openEntry(AT_FDCWD, EntryName(target), path: target, expected: info, followSymlink: true)
            defer { closeQuietly(input) }
            let output = try systemCall("open", partialPath) {
                open(partialPath, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
            }
            defer { closeQuietly(output) }
            let file = try copyFile(
                input: input, before: info, output: output, sourcePath: target, destinationPath: partialPath,
                current: { try fileStatus(target, followSymlinks: true) })
            outcome = Outcome(
                kind: "file", size: file.size, allocated: file.allocated, digest: file.sha256,
                digestAlgorithm: "sha256", method: file.method, copyDuration: file.copyDuration)
        } else if info.isDirectory {
            let root = try openEntry(AT_FDCWD, EntryName(target), path: target, expected: info, followSymlink: true)
            defer { closeQuietly(root) }
            try systemCall("mkdir", partialPath) { mkdir(partialPath, 0o700) }
            let destination = try systemCall("open", partialPath) {
                open(partialPath, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
            }
            defer { closeQuietly(destination) }
            let clock = ContinuousClock()
            var tree = TreeCopy(copier: self, imagesDirectory: try fileStatus(imagesDirectory, followSymlinks: true))
            let duration = try clock.measure {
                try tree.copyDirectory(
                    source: root, sourcePath: target, destination: destination, destinationPath: partialPath,
                    relative: "", info: info)
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

    /// Copies one open regular file (reflink, else sparse-aware) into the open, empty `output`, keeps its mode,
    /// owner and times, fsyncs, and hashes the copy.
    ///
    /// - Parameters:
    ///   - before: the `stat` the entry was found with (checked against `input` by ``openEntry``).
    ///   - current: the entry's `stat` as its name reads now, nil when it is gone; a different inode afterwards
    ///     means the source was replaced during the copy.
    func copyFile(
        input: Int32, before: stat, output: Int32, sourcePath source: String, destinationPath destination: String,
        current: () throws -> stat?
    ) throws -> FileCopy {
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
        guard let now = try current(), now.st_dev == before.st_dev, now.st_ino == before.st_ino else {
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

/// A name as the kernel has it: the bytes for system calls (NUL-terminated), and text for paths in messages and
/// the tree digest.
struct EntryName {
    /// The name's bytes followed by a NUL.
    var bytes: [CChar]

    init(bytes name: [UInt8]) {
        bytes = name.map { CChar(bitPattern: $0) } + [0]
    }

    init(_ text: String) {
        self.init(bytes: Array(text.utf8))
    }

    var text: String {
        String(decoding: bytes.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func withCString<T>(_ body: (UnsafePointer<CChar>) throws -> T) rethrows -> T {
        try bytes.withUnsafeBufferPointer { try body($0.baseAddress!) }
    }
}

/// Opens the entry `name` of the directory `directory` (or `AT_FDCWD`) that `expected` describes, for reading,
/// and checks that what was opened is that entry.
///
/// `O_NOFOLLOW` (unless `followSymlink`) keeps a symlink swapped in from being followed, `O_NONBLOCK` keeps a FIFO
/// swapped in from blocking the open, and the `fstat` of the descriptor must match `expected` in type, device and
/// inode. A mismatch throws ``LocalCopyError`` naming both types.
func openEntry(
    _ directory: Int32, _ name: EntryName, path: String, expected: stat, followSymlink: Bool = false
) throws -> Int32 {
    var flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY
    if !followSymlink { flags |= O_NOFOLLOW }
    if expected.isDirectory { flags |= O_DIRECTORY }
    var descriptor: Int32
    repeat {
        descriptor = name.withCString { openat(directory, $0, flags) }
    } while descriptor < 0 && errno == EINTR
    if descriptor < 0 {
        let code = errno
        // What the name is now, to say what it became.
        var now = stat()
        let found = name.withCString { fstatat(directory, $0, &now, followSymlink ? 0 : AT_SYMLINK_NOFOLLOW) } == 0
        if code == ENOENT || !found {
            throw LocalCopyError("\(path) was removed during the copy")
        }
        if (now.st_mode & S_IFMT) != (expected.st_mode & S_IFMT) {
            throw LocalCopyError(
                "\(path) changed during the copy: it was a \(expected.kindName) and is now a \(now.kindName)")
        }
        throw SystemCallError(call: "open", path: path, code: code)
    }
    do {
        let opened = try fileStatus(descriptor: descriptor, path: path)
        guard (opened.st_mode & S_IFMT) == (expected.st_mode & S_IFMT) else {
            throw LocalCopyError(
                "\(path) changed during the copy: it was a \(expected.kindName) and is now a \(opened.kindName)")
        }
        guard opened.st_dev == expected.st_dev, opened.st_ino == expected.st_ino else {
            throw LocalCopyError("\(path) was replaced during the copy")
        }
        return descriptor
    } catch {
        closeQuietly(descriptor)
        throw error
    }
}

/// The names in an open directory (without `.` and `..`), in ascending byte order.
func directoryEntries(_ directory: Int32, path: String) throws -> [[UInt8]] {
    // fdopendir takes the descriptor over; give it a duplicate so the caller's stays open.
    let duplicate = try systemCall("dup", path) { fcntl(directory, F_DUPFD_CLOEXEC, 0) }
    guard let stream = fdopendir(duplicate) else {
        let code = errno
        closeQuietly(duplicate)
        throw SystemCallError(call: "fdopendir", path: path, code: code)
    }
    defer { closedir(stream) }
    rewinddir(stream)
    var names: [[UInt8]] = []
    while true {
        errno = 0
        guard let entry = readdir(stream) else {
            if errno != 0 { throw SystemCallError(call: "readdir", path: path, code: errno) }
            break
        }
        let name = withUnsafeBytes(of: entry.pointee.d_name) { Array($0.prefix { $0 != 0 }) }
        if name == [0x2E] || name == [0x2E, 0x2E] { continue }
        names.append(name)
    }
    return names.sorted { $0.lexicographicallyPrecedes($1) }
}

/// The recursive part of a directory copy, collecting digest entries and sizes.
///
/// Both sides are walked by descriptor: a source entry is examined with `fstatat(AT_SYMLINK_NOFOLLOW)` and opened
/// with ``openEntry`` relative to its directory's descriptor; the copy is made with `mkdirat`/`openat`/`symlinkat`
/// relative to the destination directory's descriptor. Symlinks are recreated from `readlinkat`, never followed.
struct TreeCopy {
    let copier: ImageCopier
    /// The image store, skipped if it lies inside the tree (it would copy itself forever).
    let imagesDirectory: stat?
    var entries: [TreeDigest.Entry] = []
    var size: Int64 = 0
    var allocated: Int64 = 0

    mutating func copyDirectory(
        source: Int32, sourcePath: String, destination: Int32, destinationPath: String, relative: String, info: stat
    ) throws {
        if copier.cancel.isCancelled { throw CopyCancelled() }
        for bytes in try directoryEntries(source, path: sourcePath) {
            let name = EntryName(bytes: bytes)
            let childSource = sourcePath + "/" + name.text
            let childDestination = destinationPath + "/" + name.text
            let childRelative = relative.isEmpty ? name.text : relative + "/" + name.text
            var child = stat()
            if name.withCString({ fstatat(source, $0, &child, AT_SYMLINK_NOFOLLOW) }) != 0 {
                let code = errno
                if code == ENOENT { throw LocalCopyError("\(childSource) was removed during the copy") }
                throw SystemCallError(call: "lstat", path: childSource, code: code)
            }
            if child.isDirectory {
                if let store = imagesDirectory, store.st_dev == child.st_dev, store.st_ino == child.st_ino {
                    copier.logger.warning(
                        "Skipping the image store inside the target", metadata: ["path": "\(childSource)"])
                    continue
                }
                copier.entryHook?(.init(image: copier.manifest.name, path: childSource, relativePath: childRelative))
                let input = try openEntry(source, name, path: childSource, expected: child)
                defer { closeQuietly(input) }
                try systemCall("mkdir", childDestination) { name.withCString { mkdirat(destination, $0, 0o700) } }
                let output = try systemCall("open", childDestination) {
                    name.withCString { openat(destination, $0, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) }
                }
                defer { closeQuietly(output) }
                entries.append(.init(kind: .directory, path: childRelative))
                try copyDirectory(
                    source: input, sourcePath: childSource, destination: output, destinationPath: childDestination,
                    relative: childRelative, info: child)
            } else if child.isRegularFile {
                copier.entryHook?(.init(image: copier.manifest.name, path: childSource, relativePath: childRelative))
                let input = try openEntry(source, name, path: childSource, expected: child)
                defer { closeQuietly(input) }
                let output = try systemCall("open", childDestination) {
                    name.withCString {
                        openat(destination, $0, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
                    }
                }
                defer { closeQuietly(output) }
                let file = try copier.copyFile(
                    input: input, before: child, output: output, sourcePath: childSource,
                    destinationPath: childDestination,
                    current: {
                        var now = stat()
                        guard name.withCString({ fstatat(source, $0, &now, AT_SYMLINK_NOFOLLOW) }) == 0 else {
                            return nil
                        }
                        return now
                    })
                entries.append(.init(kind: .file, path: childRelative, size: file.size, detail: file.sha256))
                size += file.size
                allocated += file.allocated
            } else if child.isSymlink {
                copier.entryHook?(.init(image: copier.manifest.name, path: childSource, relativePath: childRelative))
                let text = try readLink(source, name, path: childSource, expected: child)
                try systemCall("symlink", childDestination) {
                    text.withCString { target in name.withCString { symlinkat(target, destination, $0) } }
                }
                _ = name.withCString { fchownat(destination, $0, child.st_uid, child.st_gid, AT_SYMLINK_NOFOLLOW) }
                entries.append(.init(kind: .symlink, path: childRelative, detail: text.text))
            } else {
                copier.logger.warning("Skipping a special file", metadata: ["path": "\(childSource)"])
            }
        }
        try systemCall("fsync", destinationPath) { fsync(destination) }
        // Mode, owner and times last: a read-only directory must stay writable while it is filled.
        try systemCall("chmod", destinationPath) { fchmod(destination, info.permissionBits) }
        _ = fchown(destination, info.st_uid, info.st_gid)
        #if os(Linux)
        var times = [info.st_atim, info.st_mtim]
        _ = futimens(destination, &times)
        #endif
    }

    /// The text of the symlink `name` in `directory`, read without following it.
    private func readLink(_ directory: Int32, _ name: EntryName, path: String, expected: stat) throws -> EntryName {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = name.withCString { readlinkat(directory, $0, &buffer, buffer.count - 1) }
        if count < 0 {
            let code = errno
            if code == ENOENT { throw LocalCopyError("\(path) was removed during the copy") }
            if code == EINVAL {
                var now = stat()
                let kind = name.withCString { fstatat(directory, $0, &now, AT_SYMLINK_NOFOLLOW) } == 0
                    ? now.kindName : "something else"
                throw LocalCopyError(
                    "\(path) changed during the copy: it was a \(expected.kindName) and is now a \(kind)")
            }
            throw SystemCallError(call: "readlink", path: path, code: code)
        }
        return EntryName(bytes: buffer[0..<count].map { UInt8(bitPattern: $0) })
    }
}

extension Duration {
    var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call: which call, on which path, and the errno.
struct SystemCallError: Error, CustomStringConvertible {
    var call: String
    var path: String
    var code: Int32

    var description: String {
        "\(call) \(path): \(String(cString: strerror(code)))"
    }

    /// Whether the condition may clear by itself (full disk after retention, busy, out of descriptors).
    var isTransient: Bool {
        [EAGAIN, EINTR, EBUSY, ENOSPC, EIO, ENOMEM, EMFILE, ENFILE, EDQUOT, ETIMEDOUT].contains(code)
    }
}

/// Runs a system call that returns -1 and sets errno on failure, retrying on EINTR.
@discardableResult
func systemCall<T: BinaryInteger>(_ call: String, _ path: String, _ body: () -> T) throws -> T {
    while true {
        let result = body()
        if result >= 0 { return result }
        let code = errno
        if code == EINTR { continue }
        throw SystemCallError(call: call, path: path, code: code)
    }
}

/// `lstat` of a path, `nil` when it does not exist.
func fileStatus(_ path: String, followSymlinks: Bool = false) throws -> stat? {
    var info = stat()
    let result = followSymlinks ? stat(path, &info) : lstat(path, &info)
    if result == 0 { return info }
    if errno == ENOENT || errno == ENOTDIR { return nil }
    throw SystemCallError(call: followSymlinks ? "stat" : "lstat", path: path, code: errno)
}

/// `fstat` of an open descriptor.
func fileStatus(descriptor: Int32, path: String) throws -> stat {
    var info = stat()
    try systemCall("fstat", path) { fstat(descriptor, &info) }
    return info
}

extension stat {
    var isRegularFile: Bool { (st_mode & S_IFMT) == S_IFREG }
    var isDirectory: Bool { (st_mode & S_IFMT) == S_IFDIR }
    var isSymlink: Bool { (st_mode & S_IFMT) == S_IFLNK }
    /// Bytes the file occupies on disk.
    var allocatedBytes: Int64 { Int64(st_blocks) * 512 }
    var permissionBits: mode_t { st_mode & 0o7777 }

    /// The file type in words, for errors: `regular file`, `directory`, `symbolic link`, `fifo`, ...
    var kindName: String {
        switch st_mode & S_IFMT {
        case S_IFREG: "regular file"
        case S_IFDIR: "directory"
        case S_IFLNK: "symbolic link"
        case S_IFIFO: "fifo"
        case S_IFSOCK: "socket"
        case S_IFCHR: "character device"
        case S_IFBLK: "block device"
        default: "file of unknown type"
        }
    }
}

/// Closes a descriptor, ignoring errors (used on paths where the data was already fsynced or is discarded).
func closeQuietly(_ descriptor: Int32) {
    if descriptor >= 0 { _ = close(descriptor) }
}

/// Opens `path` as a directory and fsyncs it, so a rename or create inside it is durable.
func fsyncDirectory(_ path: String) throws {
    let descriptor = try systemCall("open", path) { open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
    defer { closeQuietly(descriptor) }
    try systemCall("fsync", path) { fsync(descriptor) }
}

/// Writes all of `bytes` to `descriptor`.
func writeAll(_ descriptor: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
    var done = 0
    while done < bytes.count {
        let written = try systemCall("write", path) {
            write(descriptor, bytes.baseAddress! + done, bytes.count - done)
        }
        done += written
    }
}

/// Removes a file, symlink or directory tree; a missing path is not an error.
func removeTree(_ path: String) throws {
    guard let info = try fileStatus(path) else { return }
    if info.isDirectory {
        // Make it writable first: a copied 0555 directory would refuse to lose its entries.
        _ = chmod(path, 0o700)
        for child in try FileManager.default.contentsOfDirectory(atPath: path) {
            try removeTree(path + "/" + child)
        }
        if rmdir(path) != 0 && errno != ENOENT {
            throw SystemCallError(call: "rmdir", path: path, code: errno)
        }
    } else if unlink(path) != 0 && errno != ENOENT {
        throw SystemCallError(call: "unlink", path: path, code: errno)
    }
}

/// A one-way flag the owner of a copy sets to make it stop at the next checkpoint.
final class CancellationFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var cancelled = false

    func cancel() {
        lock.withLock { cancelled = true }
    }

    var isCancelled: Bool {
        lock.withLock { cancelled }
    }
}

/// The copy was stopped because the image is being deleted.
struct CopyCancelled: Error {}

/// Runs blocking work on a thread of its own, so long copies never hold a thread of the cooperative pool.
func runOnOwnThread<T: Sendable>(name: String, _ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        let thread = Thread {
            continuation.resume(returning: body())
        }
        thread.name = name
        thread.start()
    }
}

import Crypto
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Sparse-aware copying and hashing of regular files, driven by `lseek(SEEK_DATA/SEEK_HOLE)`.
///
/// Only data extents are read; holes are recreated by writing nothing and truncating the copy to the source size,
/// and they are hashed as zero bytes from memory, so the digest equals `sha256sum` of the file without reading
/// gigabytes of zeros from disk.
enum SparseFile {
    /// Bytes moved per read/write and per hash update.
    static let chunkSize = 1 << 20

    /// Linux `FICLONE` = `_IOW(0x94, 9, int)`.
    static let ficlone: UInt = 0x4004_9409

    /// Calls `body(offset, length)` for each data extent of an open file, in order, up to `size`.
    static func forEachDataExtent(
        _ descriptor: Int32,
        size: Int64,
        path: String,
        _ body: (_ offset: Int64, _ length: Int64) throws -> Void
    ) throws {
        var offset: Int64 = 0
        while offset < size {
            let dataStart = lseek(descriptor, off_t(offset), seekData)
            if dataStart < 0 {
                let code = errno
                if code == ENXIO { return }  // only a hole is left
                if code == EINVAL && offset == 0 {
                    // The filesystem cannot say where data is: treat the whole file as data.
                    try body(0, size)
                    return
                }
                throw SystemCallError(call: "lseek(SEEK_DATA)", path: path, code: code)
            }
            if Int64(dataStart) >= size { return }
            let holeStart = try systemCall("lseek(SEEK_HOLE)", path) { lseek(descriptor, dataStart, seekHole) }
            let end = min(Int64(holeStart), size)
            if end > Int64(dataStart) {
                try body(Int64(dataStart), end - Int64(dataStart))
            }
            offset = end
        }
    }

    /// Tries a reflink clone (shared extents, instant) of `source` into `destination`.
    ///
    /// Returns `false` where the filesystem or the pair of mounts cannot do it (ext4, overlayfs, across devices).
    static func reflink(from source: Int32, to destination: Int32) -> Bool {
        ioctl(destination, ficlone, source) == 0
    }

    /// Copies the data extents of `source` into the empty `destination` and sets its size, keeping holes.
    ///
    /// `checkpoint` runs before each extent (a test hook may block there); `cancel` is checked between chunks.
    static func copyData(
        from source: Int32,
        to destination: Int32,
        size: Int64,
        sourcePath: String,
        destinationPath: String,
        cancel: CancellationFlag,
        checkpoint: (_ index: Int, _ offset: Int64, _ length: Int64) -> Void
    ) throws {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        var index = 0
        try forEachDataExtent(source, size: size, path: sourcePath) { offset, length in
            checkpoint(index, offset, length)
            index += 1
            var position = offset
            let end = offset + length
            while position < end {
                if cancel.isCancelled { throw CopyCancelled() }
                let want = Int(min(Int64(chunkSize), end - position))
                let got = try systemCall("read", sourcePath) {
                    pread(source, buffer.baseAddress, want, off_t(position))
                }
                if got == 0 {
                    throw LocalCopyError("\(sourcePath) shrank during the copy")
                }
                var written = 0
                while written < got {
                    written += try systemCall("write", destinationPath) {
                        pwrite(
                            destination, buffer.baseAddress! + written, got - written, off_t(position) + off_t(written))
                    }
                }
                position += Int64(got)
            }
        }
        // Recreates a trailing hole and makes the logical size exact.
        try systemCall("ftruncate", destinationPath) { ftruncate(destination, off_t(size)) }
    }

    /// The SHA-256 of the first `size` bytes of an open file, reading only its data extents.
    static func sha256(of descriptor: Int32, size: Int64, path: String, cancel: CancellationFlag) throws
        -> SHA256.Digest
    {
        var hasher = SHA256()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        defer { buffer.deallocate() }
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 4096)
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        defer { zeros.deallocate() }

        func hashZeros(_ count: Int64) throws {
            var left = count
            while left > 0 {
                if cancel.isCancelled { throw CopyCancelled() }
                let take = Int(min(Int64(chunkSize), left))
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: zeros[0..<take]))
                left -= Int64(take)
            }
        }

        var hashed: Int64 = 0
        try forEachDataExtent(descriptor, size: size, path: path) { offset, length in
            try hashZeros(offset - hashed)
            var position = offset
            let end = offset + length
            while position < end {
                if cancel.isCancelled { throw CopyCancelled() }
                let want = Int(min(Int64(chunkSize), end - position))
                let got = try systemCall("read", path) { pread(descriptor, buffer.baseAddress, want, off_t(position)) }
                if got == 0 { throw LocalCopyError("\(path) shrank while it was hashed") }
                hasher.update(bufferPointer: UnsafeRawBufferPointer(rebasing: buffer[0..<got]))
                position += Int64(got)
            }
            hashed = end
        }
        try hashZeros(size - hashed)
        return hasher.finalize()
    }

    // Linux values; Glibc's module map hides them behind _GNU_SOURCE.
    private static let seekData: Int32 = 3
    private static let seekHole: Int32 = 4
}

/// A copy failed for a reason that is not a single system call (the source changed, an unsupported file).
struct LocalCopyError: Error, CustomStringConvertible {
    var description: String

    init(_ description: String) {
        self.description = description
    }
}

extension SHA256.Digest {
    /// Lowercase hex, as `sha256sum` prints it.
    var hexString: String {
        map { String(format: "%02x", $0) }.joined()
    }
}

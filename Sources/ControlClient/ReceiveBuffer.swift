import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What the client received and has not returned yet, split into lines.
///
/// Reads land in the buffer itself, and a large line (a `jobs` answer is 3 MB for 10,000 jobs) is handed over as
/// `Data` that takes the buffer with it, so its bytes are never copied after the kernel wrote them. Owned by one
/// `ControlClient`, used from one thread at a time.
final class ReceiveBuffer {
    /// Why no line can be taken.
    struct LineTooLong: Error {}

    let maxLineLength: Int
    /// Free space asked for before each read.
    let readSize: Int
    private var storage: UnsafeMutableRawPointer
    private var capacity: Int
    private var start = 0
    private var end = 0
    /// Where the next newline search resumes, so that a line arriving in many reads is scanned once.
    private var scanned = 0
    /// Lines at least this long are handed over with the buffer instead of copied out of it.
    private static let handOverLength = 64 * 1024

    init(maxLineLength: Int, readSize: Int) {
        self.maxLineLength = maxLineLength
        self.readSize = readSize
        capacity = readSize
        storage = Self.allocate(readSize)
    }

    deinit { free(storage) }

    /// The next complete line without its line end (a `\r` before the `\n` is dropped); nil when none is complete.
    func nextLine() throws(LineTooLong) -> Data? {
        guard scanned < end, let found = memchr(storage + scanned, Int32(UInt8(ascii: "\n")), end - scanned) else {
            scanned = end
            if end - start > maxLineLength { throw LineTooLong() }
            return nil
        }
        let newline = storage.distance(to: found)
        var lineEnd = newline
        if lineEnd > start && storage.load(fromByteOffset: lineEnd - 1, as: UInt8.self) == UInt8(ascii: "\r") {
            lineEnd -= 1
        }
        let count = lineEnd - start
        if count > maxLineLength { throw LineTooLong() }
        guard count >= Self.handOverLength else {
            let line = Data(bytes: storage + start, count: count)
            start = newline + 1
            scanned = start
            return line
        }
        // The line takes the buffer; what follows it (usually nothing) moves to a fresh one.
        let base = storage
        let line = Data(bytesNoCopy: base + start, count: count, deallocator: .custom { _, _ in free(base) })
        let rest = end - (newline + 1)
        // Room for another line of this size, so the next answer does not grow the buffer read by read.
        capacity = max(readSize, count + readSize, rest)
        storage = Self.allocate(capacity)
        memcpy(storage, base + newline + 1, rest)
        start = 0
        end = rest
        scanned = 0
        return line
    }

    /// One `recv` from `descriptor` into the free space, made at least `readSize` long; returns what `recv` did.
    func receive(from descriptor: Int32) -> Int {
        if start == end {
            start = 0
            end = 0
            scanned = 0
        }
        if capacity - end < readSize && start > 0 {
            memmove(storage, storage + start, end - start)
            end -= start
            scanned -= start
            start = 0
        }
        if capacity - end < readSize {
            capacity = max(capacity * 2, end + readSize)
            guard let grown = realloc(storage, capacity) else { fatalError("out of memory for a control answer") }
            storage = grown
        }
        let received = recv(descriptor, storage + end, capacity - end, 0)
        if received > 0 { end += received }
        return received
    }

    /// What is left when the peer stops sending: an unterminated last line, if any (then the buffer is empty).
    func finish() throws(LineTooLong) -> Data? {
        guard end > start else { return nil }
        var count = end - start
        if count > maxLineLength { throw LineTooLong() }
        if storage.load(fromByteOffset: end - 1, as: UInt8.self) == UInt8(ascii: "\r") { count -= 1 }
        let rest = Data(bytes: storage + start, count: count)
        start = 0
        end = 0
        scanned = 0
        return rest
    }

    private static func allocate(_ size: Int) -> UnsafeMutableRawPointer {
        guard let pointer = malloc(size) else { fatalError("out of memory for a control answer") }
        return pointer
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Splits a byte stream into lines of at most `maxLength` bytes (JSON-RPC messages are one per line).
///
/// Feed it whatever arrived, in any pieces, with ``append(_:)``; take complete lines with ``nextLine()``. A line
/// ends at `\n`; a `\r` before it is dropped. A line longer than `maxLength` (without its newline) is an error as
/// soon as it is known, without waiting for its end: the caller answers and closes the connection.
public struct LineFramer: Sendable {
    /// Why no line can be taken.
    public enum FramingError: Error, Sendable, Hashable {
        /// A line is longer than the limit; at least `length` bytes of it arrived.
        case lineTooLong(length: Int, limit: Int)
    }

    /// The longest line accepted, in bytes.
    public let maxLength: Int
    private var buffer: [UInt8] = []
    private var start = 0
    /// Where the next newline search resumes, so that a line arriving byte by byte is scanned once.
    private var scanned = 0

    public init(maxLength: Int) {
        self.maxLength = maxLength
    }

    /// Bytes received but not yet returned as a line.
    public var bufferedCount: Int { buffer.count - start }

    /// Whether part of a line is waiting for its end.
    public var hasPartialLine: Bool { bufferedCount > 0 }

    /// Adds received bytes.
    public mutating func append(_ bytes: some Sequence<UInt8>) {
        compact()
        buffer.append(contentsOf: bytes)
    }

    /// Adds received bytes (one memcpy: the path of every socket read).
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compact()
        buffer.append(contentsOf: bytes)
    }

    /// Drops returned lines once they are half the buffer, so it neither grows without end nor shifts often.
    private mutating func compact() {
        guard start > 0 && start >= buffer.count / 2 else { return }
        buffer.removeFirst(start)
        scanned -= start
        start = 0
    }

    /// The next complete line without its line end, nil when none is complete yet.
    public mutating func nextLine() throws(FramingError) -> [UInt8]? {
        let from = max(scanned, start)
        // memchr: a 3 MB answer (10,000 jobs) is scanned at memory speed, not a byte per loop turn.
        let index = buffer.withUnsafeBufferPointer { bytes -> Int in
            guard from < bytes.count, let base = bytes.baseAddress else { return bytes.count }
            guard let found = memchr(base + from, Int32(UInt8(ascii: "\n")), bytes.count - from) else {
                return bytes.count
            }
            return base.distance(to: found.assumingMemoryBound(to: UInt8.self))
        }
        guard index < buffer.count else {
            scanned = index
            if buffer.count - start > maxLength { throw .lineTooLong(length: buffer.count - start, limit: maxLength) }
            return nil
        }
        var end = index
        if end > start, buffer[end - 1] == UInt8(ascii: "\r") { end -= 1 }
        if end - start > maxLength { throw .lineTooLong(length: end - start, limit: maxLength) }
        let line = Array(buffer[start..<end])
        start = index + 1
        scanned = start
        return line
    }

    /// What is left when the peer stops sending: an unterminated last line, if any (then the buffer is empty).
    public mutating func finish() throws(FramingError) -> [UInt8]? {
        guard bufferedCount > 0 else { return nil }
        if bufferedCount > maxLength { throw .lineTooLong(length: bufferedCount, limit: maxLength) }
        let rest = Array(buffer[start...])
        buffer.removeAll()
        start = 0
        scanned = 0
        return rest.last == UInt8(ascii: "\r") ? Array(rest.dropLast()) : rest
    }
}

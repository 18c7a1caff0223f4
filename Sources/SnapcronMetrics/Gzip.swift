import CZlib
import NIOCore

/// gzip (RFC 1952) in one call, at zlib's fastest level: the exposition is repetitive text that shrinks about
/// 13-fold even so, and it is compressed once per publication, not per scrape.
enum Gzip {
    /// The compressed bytes, written in chunks into a buffer sized to the result (not to zlib's worst case).
    static func compress(_ input: [UInt8]) -> ByteBuffer? {
        var stream = z_stream()
        // 15 window bits + 16: a gzip header and trailer instead of zlib's.
        guard deflateInit2_(
            &stream, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK
        else { return nil }
        defer { deflateEnd(&stream) }
        var output = ByteBufferAllocator().buffer(capacity: max(4096, input.count / 8))
        var chunk = [UInt8](repeating: 0, count: 256 * 1024)
        return input.withUnsafeBufferPointer { source -> ByteBuffer? in
            stream.next_in = UnsafeMutablePointer(mutating: source.baseAddress)
            stream.avail_in = uInt(source.count)
            while true {
                let status = chunk.withUnsafeMutableBufferPointer { target -> Int32 in
                    stream.next_out = target.baseAddress
                    stream.avail_out = uInt(target.count)
                    return deflate(&stream, Z_FINISH)
                }
                guard status == Z_OK || status == Z_STREAM_END || status == Z_BUF_ERROR else { return nil }
                output.writeBytes(chunk[..<(chunk.count - Int(stream.avail_out))])
                if status == Z_STREAM_END { return output }
            }
        }
    }
}

import Foundation
import Testing

@testable import ControlClient

#if canImport(Glibc)
    import Glibc
#endif

/// The client's receive buffer on a real socket pair: lines of every size, cut anywhere by the reads.
@Suite struct ReceiveBufferTests {
    /// Writes `chunks` to one end of a socket pair from another thread and returns the other end.
    private func socketFeeding(_ chunks: [[UInt8]], thenClose: Bool = true) throws -> Int32 {
        var pair: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        let writer = pair[1]
        Thread.detachNewThread {
            for chunk in chunks {
                chunk.withUnsafeBytes { raw in
                    var offset = 0
                    while offset < raw.count {
                        let written = send(writer, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                        if written <= 0 { return }
                        offset += written
                    }
                }
            }
            if thenClose { close(writer) }
        }
        return pair[0]
    }

    private func readAll(_ buffer: ReceiveBuffer, from descriptor: Int32) throws -> [Data] {
        var lines: [Data] = []
        while true {
            while let line = try buffer.nextLine() { lines.append(line) }
            let count = buffer.receive(from: descriptor)
            if count == 0 {
                if let rest = try buffer.finish() { lines.append(rest) }
                return lines
            }
            #expect(count > 0, "recv failed: \(errno)")
            if count < 0 { return lines }
        }
    }

    @Test func linesOfEverySizeComeOutWholeAndInOrder() throws {
        // Small lines, a line just under and one over the hand-over length, a 3 MB answer, CRLF, an unterminated end.
        let sizes = [0, 10, 65_535, 65_536, 200_000, 3_000_000, 5, 70_000]
        var expected: [Data] = []
        var stream: [UInt8] = []
        for (index, size) in sizes.enumerated() {
            let line = (0..<size).map { UInt8(ascii: "a") + UInt8(($0 &+ index) % 26) }
            expected.append(Data(line))
            stream += line + (index % 2 == 0 ? [UInt8(ascii: "\n")] : Array("\r\n".utf8))
        }
        stream += Array("tail".utf8)
        expected.append(Data("tail".utf8))
        // Cut into uneven pieces, so lines end anywhere within a read.
        var chunks: [[UInt8]] = []
        var offset = 0
        var step = 1
        while offset < stream.count {
            let end = min(stream.count, offset + step)
            chunks.append(Array(stream[offset..<end]))
            offset = end
            step = step * 7 % 300_007 + 1
        }
        let descriptor = try socketFeeding(chunks)
        defer { close(descriptor) }
        let buffer = ReceiveBuffer(maxLineLength: 8 << 20, readSize: 4096)
        let lines = try readAll(buffer, from: descriptor)
        #expect(lines.count == expected.count)
        for (index, (line, want)) in zip(lines, expected).enumerated() {
            #expect(line == want, "line \(index): \(line.count) bytes, expected \(want.count)")
        }
    }

    @Test func aLineOverTheLimitIsRefusedBeforeItEnds() throws {
        let descriptor = try socketFeeding([Array(repeating: UInt8(ascii: "x"), count: 10_000)], thenClose: false)
        defer { close(descriptor) }
        let buffer = ReceiveBuffer(maxLineLength: 5_000, readSize: 1024)
        var refused = false
        for _ in 0..<100 where !refused {
            do {
                _ = try buffer.nextLine()
                _ = buffer.receive(from: descriptor)
            } catch {
                refused = true
            }
        }
        #expect(refused)
    }
}

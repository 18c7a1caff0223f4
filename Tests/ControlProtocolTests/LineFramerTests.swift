import ControlProtocol
import Testing

@Suite struct LineFramerTests {
    @Test func yieldsTheSameLinesWhenFedByteByByte() throws {
        let stream = Array("{\"a\":1}\n{\"b\":2}\r\n\n{\"c\":3}\n".utf8)
        var whole = LineFramer(maxLength: 100)
        whole.append(stream)
        var expected: [String] = []
        while let line = try whole.nextLine() { expected.append(String(decoding: line, as: UTF8.self)) }

        var framer = LineFramer(maxLength: 100)
        var lines: [String] = []
        for byte in stream {
            framer.append([byte])
            while let line = try framer.nextLine() { lines.append(String(decoding: line, as: UTF8.self)) }
        }
        #expect(lines == expected)
        #expect(lines == ["{\"a\":1}", "{\"b\":2}", "", "{\"c\":3}"])
        #expect(!framer.hasPartialLine)
    }

    @Test func buildsLinesInPlaceFromRawReadsAcrossCompaction() throws {
        // Reads of 7 bytes (like socket reads) cut lines anywhere; lines taken in place are the same as copied ones.
        let lines = (0..<200).map { "{\"line\":\($0),\"pad\":\"\(String(repeating: "x", count: $0 % 13))\"}" }
        let stream = Array(lines.joined(separator: "\n").utf8) + [UInt8(ascii: "\n")]
        var framer = LineFramer(maxLength: 100)
        var taken: [String] = []
        var offset = 0
        while offset < stream.count {
            let end = min(stream.count, offset + 7)
            stream[offset..<end].withUnsafeBytes { framer.append($0) }
            offset = end
            while let line = try framer.nextLine() { taken.append(String(decoding: line, as: UTF8.self)) }
        }
        #expect(taken == lines)
        #expect(framer.bufferedCount == 0)
    }

    @Test func refusesAnOversizeLineBeforeItEnds() {
        var framer = LineFramer(maxLength: 8)
        framer.append(Array("123456789".utf8))
        #expect(throws: LineFramer.FramingError.lineTooLong(length: 9, limit: 8)) { try framer.nextLine() }
    }

    @Test func acceptsALineOfExactlyTheLimit() throws {
        var framer = LineFramer(maxLength: 8)
        framer.append(Array("12345678\r\n".utf8))
        #expect(try framer.nextLine() == Array("12345678".utf8))
    }

    @Test func refusesAnOversizeLineThatArrivesWhole() {
        var framer = LineFramer(maxLength: 4)
        framer.append(Array("12345\n".utf8))
        #expect(throws: LineFramer.FramingError.self) { try framer.nextLine() }
    }

    @Test func finishReturnsTheUnterminatedLastLine() throws {
        var framer = LineFramer(maxLength: 100)
        framer.append(Array("one\ntwo".utf8))
        #expect(try framer.nextLine() == Array("one".utf8))
        #expect(try framer.nextLine() == nil)
        #expect(framer.hasPartialLine)
        #expect(try framer.finish() == Array("two".utf8))
        #expect(try framer.finish() == nil)
    }

    @Test func keepsMemoryBoundedOverManyLines() throws {
        var framer = LineFramer(maxLength: 16)
        for index in 0..<10_000 {
            framer.append(Array("line \(index)\n".utf8))
            #expect(try framer.nextLine() == Array("line \(index)".utf8))
        }
        #expect(framer.bufferedCount == 0)
    }
}

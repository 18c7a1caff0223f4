import Foundation
import Logging
import Testing

@testable import SnapcronSystemd

@Suite struct StderrLogHandlerTests {
    static let nineOClock = Date(timeIntervalSince1970: 1_795_942_800)  // 2026-11-29T09:00:00Z

    @Test func lineIsTimeLevelMessageThenMetadata() {
        let line = StderrLogHandler.line(
            time: Self.nineOClock,
            level: .info,
            message: "run succeeded",
            metadata: ["run": "42", "job": "web", "zone": "Asia/Taipei", "duration_ms": "5120"]
        )
        #expect(line == "2026-11-29T09:00:00Z info run succeeded job=web run=42 duration_ms=5120 zone=Asia/Taipei")
    }

    @Test(arguments: [
        ("web", "web"),
        ("quota exceeded", #""quota exceeded""#),
        ("", #""""#),
        ("a=b", #""a=b""#),
        (#"say "hi""#, #""say \"hi\"""#),
        (#"C:\dir"#, #""C:\\dir""#),
        ("two\nlines", #""two\nlines""#),
    ])
    func valuesAreQuotedOnlyWhenNeeded(_ value: String, _ rendered: String) {
        #expect(StderrLogHandler.quotedIfNeeded(value) == rendered)
    }

    @Test func messageStaysOnOneLine() {
        let line = StderrLogHandler.line(time: Self.nineOClock, level: .error, message: "bad\nthing\t!", metadata: [:])
        #expect(line == #"2026-11-29T09:00:00Z error bad\nthing\t!"#)
    }
}

@Suite struct LogDestinationTests {
    static let stderr = (device: UInt64(64769), inode: UInt64(1234))

    @Test func journalWhenJournalStreamIsStandardError() {
        let environment = ["JOURNAL_STREAM": "64769:1234"]
        #expect(LogDestination.detect(environment: environment, stderrIdentity: Self.stderr) == .journal)
    }

    @Test func stderrWhenJournalStreamIsAnotherFile() {
        // A shell started from a service inherits JOURNAL_STREAM but may have redirected stderr.
        let environment = ["JOURNAL_STREAM": "64769:999"]
        #expect(LogDestination.detect(environment: environment, stderrIdentity: Self.stderr) == .stderr)
    }

    @Test func journalWhenStartedBySystemd() {
        let environment = ["INVOCATION_ID": "161a6e50799c4503947b25c1d016624d"]
        #expect(LogDestination.detect(environment: environment, stderrIdentity: Self.stderr) == .journal)
    }

    @Test(arguments: [[:], ["JOURNAL_STREAM": "garbage"], ["INVOCATION_ID": ""]])
    func stderrOtherwise(_ environment: [String: String]) {
        #expect(LogDestination.detect(environment: environment, stderrIdentity: Self.stderr) == .stderr)
    }

    @Test func standardErrorHasAnIdentity() {
        #expect(LogDestination.standardErrorIdentity() != nil)
    }
}

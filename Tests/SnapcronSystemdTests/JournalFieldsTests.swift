import Logging
import Testing

@testable import SnapcronSystemd

@Suite struct JournalFieldsTests {
    struct NameRow: Sendable, CustomStringConvertible {
        var key: String
        var field: String
        var description: String { "\(key) -> \(field)" }
    }

    static let names: [NameRow] = [
        // The documented keys (DESIGN.md "systemd")
        NameRow(key: "job", field: "SNAPCRON_JOB"),
        NameRow(key: "run", field: "SNAPCRON_RUN"),
        NameRow(key: "target", field: "SNAPCRON_TARGET"),
        NameRow(key: "image", field: "SNAPCRON_IMAGE"),
        NameRow(key: "state", field: "SNAPCRON_STATE"),
        NameRow(key: "scheduled", field: "SNAPCRON_SCHEDULED"),
        NameRow(key: "duration_ms", field: "SNAPCRON_DURATION_MS"),
        NameRow(key: "error", field: "SNAPCRON_ERROR"),
        NameRow(key: "backend", field: "SNAPCRON_BACKEND"),
        NameRow(key: "event", field: "SNAPCRON_EVENT"),
        // Derived: upper snake case, invalid characters become one underscore
        NameRow(key: "job.id", field: "SNAPCRON_JOB_ID"),
        NameRow(key: "retryCount", field: "SNAPCRON_RETRY_COUNT"),
        NameRow(key: "x-request-id", field: "SNAPCRON_X_REQUEST_ID"),
        NameRow(key: "a..b", field: "SNAPCRON_A_B"),
        NameRow(key: "__padded__", field: "SNAPCRON_PADDED"),
        NameRow(key: "9lives", field: "SNAPCRON_9LIVES"),
        NameRow(key: "naïve key", field: "SNAPCRON_NA_VE_KEY"),
        NameRow(key: "", field: "SNAPCRON_UNNAMED"),
        NameRow(key: "…", field: "SNAPCRON_UNNAMED"),
    ]

    @Test(arguments: names) func fieldName(_ row: NameRow) {
        #expect(JournalFields.fieldName(forKey: row.key) == row.field)
    }

    @Test func fieldNamesAreValidJournalNamesForAnyKey() {
        let keys = Self.names.map(\.key) + [String(repeating: "verylongkey", count: 10), "a\nb", "A_B", "ÄÖÜ", "k=v"]
        for key in keys {
            let name = JournalFields.fieldName(forKey: key)
            #expect(name.count <= 64, "\(key)")
            #expect(name.first?.isLetter == true, "\(key)")
            #expect(name.allSatisfy { ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }, "\(key)")
        }
    }

    @Test(arguments: [
        (Logger.Level.trace, 7), (.debug, 7), (.info, 6), (.notice, 5), (.warning, 4), (.error, 3), (.critical, 2),
    ])
    func priority(_ level: Logger.Level, _ syslog: Int) {
        #expect(JournalFields.priority(for: level) == syslog)
    }

    @Test func recordHasStandardFieldsThenSortedMetadata() {
        let fields = JournalFields.fields(
            level: .warning,
            message: "Run failed",
            metadata: ["run": "42", "job": "web", "event": "run.failed", "error": "quota exceeded"],
            identifier: "snapcrond",
            file: "SnapcronCore/RunExecutor.swift",
            function: "finish(_:)",
            line: 120
        )
        #expect(
            fields == [
                "MESSAGE=Run failed",
                "PRIORITY=4",
                "SYSLOG_IDENTIFIER=snapcrond",
                "CODE_FILE=SnapcronCore/RunExecutor.swift",
                "CODE_LINE=120",
                "CODE_FUNC=finish(_:)",
                "MESSAGE_ID=5f3b69d0fa4f403f9e2d21e4569daf9e",
                "SNAPCRON_ERROR=quota exceeded",
                "SNAPCRON_EVENT=run.failed",
                "SNAPCRON_JOB=web",
                "SNAPCRON_RUN=42",
            ]
        )
    }

    @Test func eventGivenAsValueMapsToMessageID() {
        let fields = record(["event": .stringConvertible(SnapcronEvent.imageDeleted)])
        #expect(fields.contains("MESSAGE_ID=\(SnapcronEvent.imageDeleted.messageID)"))
    }

    @Test func unknownEventKeepsItsNameButHasNoMessageID() {
        let fields = record(["event": "run.exploded"])
        #expect(!fields.contains { $0.hasPrefix("MESSAGE_ID=") })
        #expect(fields.contains("SNAPCRON_EVENT=run.exploded"))
    }

    @Test func containerValuesUseSwiftLogNotation() {
        let tags: Logger.MetadataValue = ["a", "b"]
        let fields = record(["tags": tags, "count": .stringConvertible(3)])
        #expect(fields.contains("SNAPCRON_TAGS=\(tags.description)"))
        #expect(fields.contains("SNAPCRON_COUNT=3"))
    }

    @Test func multilineValuesAreKeptWhole() {
        // libsystemd frames values with newlines itself; the handler must not cut them.
        let fields = record(["error": "line one\nline two"])
        #expect(fields.contains("SNAPCRON_ERROR=line one\nline two"))
    }

    private func record(_ metadata: Logger.Metadata) -> [String] {
        JournalFields.fields(
            level: .info, message: "m", metadata: metadata, identifier: "t", file: "f", function: "g", line: 1)
    }
}

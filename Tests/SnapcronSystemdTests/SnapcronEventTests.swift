import Foundation
import TestThreads
import Testing

@testable import SnapcronSystemd

@Suite(.onOwnThreads) struct SnapcronEventTests {
    static let kinds = [
        "run.fired", "run.succeeded", "run.failed", "run.timed_out", "run.missed", "run.skipped",
        "image.deleted", "retention.kept", "schedule.loaded", "schedule.reload_failed", "hook.finished",
        "daemon.started", "daemon.stopping",
    ]

    static let catalog = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("systemd/snapcron.catalog")

    @Test func tableHasEveryEventKindOnce() {
        #expect(SnapcronEvent.all.map(\.name) == Self.kinds)
        #expect(Set(SnapcronEvent.all.map(\.messageID)).count == Self.kinds.count, "duplicate MESSAGE_ID")
    }

    @Test(arguments: kinds) func eventHasA128BitID(_ name: String) throws {
        let event = try #require(SnapcronEvent(named: name))
        #expect(event.name == name)
        #expect(event.description == name)
        #expect(event.messageID.count == 32)
        #expect(event.messageID.allSatisfy { $0.isHexDigit && !$0.isUppercase })
    }

    @Test func unknownNameHasNoEvent() {
        #expect(SnapcronEvent(named: "run.exploded") == nil)
    }

    @Test func catalogExplainsEveryMessageIDAndNothingElse() throws {
        let text = try String(contentsOf: Self.catalog, encoding: .utf8)
        var entries: [String: [String]] = [:]
        var current: String?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("-- ") {
                current = String(line.dropFirst(3))
                #expect(entries[current!] == nil, "entry \(current!) appears twice")
                entries[current!] = []
            } else if let current {
                entries[current]!.append(String(line))
            }
        }
        #expect(Set(entries.keys) == Set(SnapcronEvent.all.map(\.messageID)))
        for (id, lines) in entries {
            #expect(lines.contains { $0.hasPrefix("Subject: ") && $0.count > 12 }, "\(id) has no Subject")
            #expect(lines.contains("Defined-By: snapcron"), "\(id) has no Defined-By")
            #expect(lines.contains { $0.hasPrefix("Documentation: ") }, "\(id) has no Documentation")
            let body = lines.drop { !$0.isEmpty }.filter { !$0.isEmpty }
            #expect(body.count >= 2, "\(id) explains too little: what happened and what to do")
        }
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/journalctl")))
    func journalctlAcceptsTheCatalog() throws {
        // Builds the binary catalog database as `journalctl --update-catalog` would, under a private root.
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("snapcron-catalog-\(UUID())")
        defer { try? FileManager.default.removeItem(at: root) }
        let folder = root.appendingPathComponent("usr/lib/systemd/catalog")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: Self.catalog, to: folder.appendingPathComponent("snapcron.catalog"))
        #expect(try journalctl(["--root=\(root.path)", "--update-catalog"]).status == 0)
        let listed = try journalctl(["--root=\(root.path)", "--list-catalog"])
        #expect(listed.status == 0)
        for event in SnapcronEvent.all {
            #expect(listed.output.contains("\(event.messageID) snapcron: "), "\(event.name) missing from the database")
        }
    }

    private func journalctl(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/journalctl")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }
}

import Foundation
internal import Glibc
public import Logging

/// A swift-log handler that writes one readable line per record to standard error, for runs outside systemd.
///
/// `2026-11-29T09:00:00Z info Run succeeded event=run.succeeded job=web run=42 duration_ms=5120`: UTC time,
/// level, message, then metadata as `key=value` (well-known keys first, the rest sorted; values with spaces
/// or quotes are quoted).
public struct StderrLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info

    /// Makes a handler; `LoggingSystem.bootstrap { _ in StderrLogHandler() }`.
    public init(metadataProvider: Logger.MetadataProvider? = nil) {
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = event.mergedMetadata(handler: metadata, provider: metadataProvider)
        Self.write(Self.line(time: .now, level: event.level, message: event.message.description, metadata: merged))
    }

    /// The order of keys that lead the metadata, as in the journal field list.
    static let leadingKeys = [
        "event", "job", "run", "target", "backend", "image", "state", "scheduled", "duration_ms", "error",
    ]

    /// One record as one line, without the newline.
    static func line(time: Date, level: Logger.Level, message: String, metadata: Logger.Metadata) -> String {
        var line = time.formatted(.iso8601) + " \(level) " + escaped(message)
        let leading = leadingKeys.filter { metadata[$0] != nil }
        let rest = metadata.keys.filter { !leadingKeys.contains($0) }.sorted()
        for key in leading + rest {
            line += " \(key)=" + quotedIfNeeded(JournalFields.render(metadata[key]!))
        }
        return line
    }

    /// Keeps a record on one line: control characters become escapes.
    static func escaped(_ text: String) -> String {
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case _ where scalar.properties.generalCategory == .control:
                result += "\\u{\(String(scalar.value, radix: 16))}"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    /// A value as it appears after `key=`: bare when unambiguous, else in double quotes with `\\` and `\"`.
    static func quotedIfNeeded(_ value: String) -> String {
        let plain =
            !value.isEmpty
            && value.unicodeScalars.allSatisfy { scalar in
                !scalar.properties.isWhitespace && scalar.properties.generalCategory != .control
                    && !"\"=\\".unicodeScalars.contains(scalar)
            }
        if plain { return value }
        let inner = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        return "\"" + escaped(inner) + "\""
    }

    /// Writes the line and its newline with one `write(2)`, so concurrent records do not interleave.
    static func write(_ line: String) {
        var bytes = Array((line + "\n").utf8)
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeMutableBytes {
                Glibc.write(STDERR_FILENO, $0.baseAddress! + offset, $0.count - offset)
            }
            if written < 0 {
                if errno == EINTR { continue }
                return  // Nowhere left to report to.
            }
            offset += written
        }
    }
}

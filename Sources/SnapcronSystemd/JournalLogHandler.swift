internal import CSystemd
internal import Glibc
public import Logging

/// A swift-log handler that writes structured entries to the systemd journal with `sd_journal_sendv(3)`.
///
/// Each record carries `MESSAGE`, `PRIORITY` (the syslog level), `SYSLOG_IDENTIFIER`, `CODE_FILE`,
/// `CODE_LINE`, `CODE_FUNC`, and its metadata as `SNAPCRON_*` fields (`job` → `SNAPCRON_JOB`, `job.id` →
/// `SNAPCRON_JOB_ID`); the key `event` also sets `MESSAGE_ID` from ``SnapcronEvent``. When the journal
/// cannot be reached the record goes to standard error instead, so nothing is lost silently.
public struct JournalLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info

    /// The `SYSLOG_IDENTIFIER` of every entry, e.g. `snapcrond`.
    public let identifier: String

    /// Makes a handler; `LoggingSystem.bootstrap { _ in JournalLogHandler(identifier: "snapcrond") }`.
    public init(identifier: String, metadataProvider: Logger.MetadataProvider? = nil) {
        self.identifier = identifier
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let merged = event.mergedMetadata(handler: metadata, provider: metadataProvider)
        let fields = JournalFields.fields(
            level: event.level,
            message: event.message.description,
            metadata: merged,
            identifier: identifier,
            file: event.file,
            function: event.function,
            line: event.line
        )
        if Self.send(fields) < 0 {
            StderrLogHandler.write(
                StderrLogHandler.line(
                    time: .now,
                    level: event.level,
                    message: event.message.description,
                    metadata: merged
                )
            )
        }
    }

    /// Sends one entry, each `NAME=value` field as one iovec; returns `sd_journal_sendv`'s result (< 0: error).
    static func send(_ fields: [String]) -> Int32 {
        // One buffer for all fields keeps every iovec's pointer valid for the whole call.
        var bytes: [UInt8] = []
        var spans: [(offset: Int, count: Int)] = []
        for field in fields {
            spans.append((bytes.count, field.utf8.count))
            bytes.append(contentsOf: field.utf8)
        }
        return bytes.withUnsafeMutableBytes { buffer -> Int32 in
            guard let base = buffer.baseAddress else { return -EINVAL }
            // Values with newlines are fine: libsystemd switches such fields to the journal's binary framing.
            let vectors = spans.map { iovec(iov_base: base + $0.offset, iov_len: $0.count) }
            return vectors.withUnsafeBufferPointer { sd_journal_sendv($0.baseAddress, Int32($0.count)) }
        }
    }
}

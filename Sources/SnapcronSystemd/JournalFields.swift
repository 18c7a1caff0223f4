import Logging

/// How a swift-log record becomes journal fields; pure, so it is tested without a journal.
enum JournalFields {
    /// Metadata keys with a documented field (DESIGN.md "systemd"); other keys are derived by ``fieldName(forKey:)``.
    static let wellKnown: [String: String] = [
        "job": "SNAPCRON_JOB",
        "run": "SNAPCRON_RUN",
        "target": "SNAPCRON_TARGET",
        "image": "SNAPCRON_IMAGE",
        "state": "SNAPCRON_STATE",
        "scheduled": "SNAPCRON_SCHEDULED",
        "duration_ms": "SNAPCRON_DURATION_MS",
        "error": "SNAPCRON_ERROR",
        "backend": "SNAPCRON_BACKEND",
        "event": "SNAPCRON_EVENT",
    ]

    /// The journal's limit on field names.
    static let maximumNameLength = 64

    /// The journal field for a metadata key: `job` → `SNAPCRON_JOB`, `job.id` → `SNAPCRON_JOB_ID`,
    /// `retryCount` → `SNAPCRON_RETRY_COUNT`.
    ///
    /// Journal field names allow only `A-Z`, `0-9` and `_`, at most 64 characters; anything else becomes `_`.
    static func fieldName(forKey key: String) -> String {
        if let name = wellKnown[key] { return name }
        var snake = ""
        var previous: Character?
        for character in key {
            if character.isASCII, character.isLetter || character.isNumber {
                // A lower-to-upper step is a camelCase word boundary.
                if character.isUppercase, let previous, previous.isLowercase || previous.isNumber {
                    snake.append("_")
                }
                snake.append(Character(character.uppercased()))
            } else if !snake.hasSuffix("_") {
                snake.append("_")
            }
            previous = character
        }
        while snake.hasPrefix("_") { snake.removeFirst() }
        while snake.hasSuffix("_") { snake.removeLast() }
        return String(("SNAPCRON_" + (snake.isEmpty ? "UNNAMED" : snake)).prefix(maximumNameLength))
    }

    /// The syslog priority (`PRIORITY=`) for a swift-log level.
    static func priority(for level: Logger.Level) -> Int {
        switch level {
        case .trace, .debug: 7  // LOG_DEBUG
        case .info: 6  // LOG_INFO
        case .notice: 5  // LOG_NOTICE
        case .warning: 4  // LOG_WARNING
        case .error: 3  // LOG_ERR
        case .critical: 2  // LOG_CRIT
        }
    }

    /// All fields of one record as `NAME=value` strings, trusted-order first, then metadata sorted by field name.
    static func fields(
        level: Logger.Level,
        message: String,
        metadata: Logger.Metadata,
        identifier: String,
        file: String,
        function: String,
        line: UInt
    ) -> [String] {
        var fields = [
            "MESSAGE=" + message,
            "PRIORITY=\(priority(for: level))",
            "SYSLOG_IDENTIFIER=" + identifier,
            "CODE_FILE=" + file,
            "CODE_LINE=\(line)",
            "CODE_FUNC=" + function,
        ]
        if let value = metadata["event"], let event = SnapcronEvent(named: render(value)) {
            fields.append("MESSAGE_ID=" + event.messageID)
        }
        var named: [String: String] = [:]
        // Sorted keys make a collision (`job` and `JOB`) resolve the same way every time.
        for key in metadata.keys.sorted() {
            named[fieldName(forKey: key)] = render(metadata[key]!)
        }
        for name in named.keys.sorted() {
            fields.append(name + "=" + named[name]!)
        }
        return fields
    }

    /// A metadata value as text: strings as they are, containers in swift-log's own notation.
    static func render(_ value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let string): string
        case .stringConvertible(let convertible): convertible.description
        case .array, .dictionary: value.description
        }
    }
}

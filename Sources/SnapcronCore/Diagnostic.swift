import Foundation

/// One line of an edited file, as needed to point a diagnostic at it.
public struct SourceLine: Sendable, Hashable, Codable {
    /// The file name as the user should see it (e.g. `etc/schedule`).
    public var file: String
    /// The line number, 1-based.
    public var number: Int
    /// The text of the line, without its newline.
    public var text: String

    public init(file: String, number: Int, text: String) {
        self.file = file
        self.number = number
        self.text = text
    }
}

/// A compiler-style error, warning or note about the schedule or config file.
///
/// Messages are lowercase without a final period and name what is wrong and why, e.g.
/// `day-of-week: value 8 out of range 0-7`. A diagnostic without a line (a config key path error)
/// renders as `file: error: message`.
public struct Diagnostic: Sendable, Hashable, Codable, CustomStringConvertible {
    /// How serious a diagnostic is.
    public enum Severity: String, Sendable, Hashable, Codable, CaseIterable {
        case error
        case warning
        case note
    }

    /// The file name as the user should see it.
    public var file: String
    /// The line, 1-based; `nil` when the problem has no line (e.g. a config key path).
    public var line: Int?
    /// The columns, 1-based and half-open; `nil` when only the line is known.
    public var columns: Range<Int>?
    public var severity: Severity
    public var message: String
    /// A fix-it or explanation shown as a `note:` after the diagnostic.
    public var note: String?
    /// The text of the line, shown under the message with a caret.
    public var sourceLine: String?

    public init(
        file: String,
        line: Int? = nil,
        columns: Range<Int>? = nil,
        severity: Severity,
        message: String,
        note: String? = nil,
        sourceLine: String? = nil
    ) {
        self.file = file
        self.line = line
        self.columns = columns
        self.severity = severity
        self.message = message
        self.note = note
        self.sourceLine = sourceLine
    }

    /// An error at `columns` of a source line.
    public static func error(_ message: String, at line: SourceLine, columns: Range<Int>, note: String? = nil)
        -> Diagnostic
    {
        Diagnostic(
            file: line.file, line: line.number, columns: columns, severity: .error,
            message: message, note: note, sourceLine: line.text)
    }

    /// A warning at `columns` of a source line.
    public static func warning(_ message: String, at line: SourceLine, columns: Range<Int>, note: String? = nil)
        -> Diagnostic
    {
        Diagnostic(
            file: line.file, line: line.number, columns: columns, severity: .warning,
            message: message, note: note, sourceLine: line.text)
    }

    /// An error about a whole file, such as a config key path.
    public static func error(_ message: String, file: String, note: String? = nil) -> Diagnostic {
        Diagnostic(file: file, severity: .error, message: message, note: note)
    }

    /// `file:line:col:`, as much of it as is known.
    public var location: String {
        var text = file
        if let line {
            text += ":\(line)"
            if let columns { text += ":\(columns.lowerBound)" }
        }
        return text + ":"
    }

    /// The diagnostic rendered like a compiler: header, source line with gutter, caret line, note.
    public var description: String {
        var lines = ["\(location) \(severity.rawValue): \(message)"]
        if let line, let sourceLine {
            let number = String(line)
            let gutter = String(repeating: " ", count: number.count)
            lines.append("\(number) | \(sourceLine)".trimmingTrailingSpaces())
            if let columns {
                lines.append("\(gutter) | \(Self.caretLine(for: columns, under: sourceLine))")
            }
        }
        if let note {
            lines.append("\(location) note: \(note)")
        }
        return lines.joined(separator: "\n")
    }

    /// Spaces (and the source's own TABs, so carets line up) up to the range, then `^~~~`.
    static func caretLine(for columns: Range<Int>, under source: String) -> String {
        let start = max(columns.lowerBound, 1)
        let width = max(columns.upperBound - start, 1)
        var padding = ""
        var column = 1
        for character in source where column < start {
            padding.append(character == "\t" ? "\t" : " ")
            column += 1
        }
        // A range past the end of the line (e.g. "missing value") still gets its caret.
        if column < start { padding += String(repeating: " ", count: start - column) }
        return padding + "^" + String(repeating: "~", count: width - 1)
    }
}

/// All diagnostics of one check, rendered at once with a summary line.
public struct DiagnosticList: Error, Sendable, Hashable, Codable, RandomAccessCollection, ExpressibleByArrayLiteral,
    CustomStringConvertible
{
    public private(set) var diagnostics: [Diagnostic]
    /// Kept up to date on every append: parsers ask it once per line, so counting each time would be quadratic.
    public private(set) var errorCount: Int

    private enum CodingKeys: String, CodingKey { case diagnostics }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(try container.decode([Diagnostic].self, forKey: .diagnostics))
    }

    public init(_ diagnostics: [Diagnostic] = []) {
        self.diagnostics = diagnostics
        errorCount = diagnostics.count { $0.severity == .error }
    }

    public init(arrayLiteral elements: Diagnostic...) {
        self.init(elements)
    }

    public var startIndex: Int { diagnostics.startIndex }
    public var endIndex: Int { diagnostics.endIndex }
    public subscript(position: Int) -> Diagnostic { diagnostics[position] }

    public mutating func append(_ diagnostic: Diagnostic) {
        diagnostics.append(diagnostic)
        if diagnostic.severity == .error { errorCount += 1 }
    }

    public mutating func append(contentsOf other: some Sequence<Diagnostic>) {
        for diagnostic in other { append(diagnostic) }
    }

    /// Whether any diagnostic is an error (warnings and notes alone do not stop a load).
    public var hasErrors: Bool { errorCount > 0 }
    public var warningCount: Int { diagnostics.count { $0.severity == .warning } }

    /// `2 errors, 1 warning`, or `no errors`.
    public var summary: String {
        func counted(_ count: Int, _ noun: String) -> String { "\(count) \(noun)\(count == 1 ? "" : "s")" }
        var parts: [String] = []
        if errorCount > 0 { parts.append(counted(errorCount, "error")) }
        if warningCount > 0 { parts.append(counted(warningCount, "warning")) }
        return parts.isEmpty ? "no errors" : parts.joined(separator: ", ")
    }

    /// Every diagnostic in order, then the summary line.
    public var description: String {
        (diagnostics.map(\.description) + [summary]).joined(separator: "\n")
    }
}

extension String {
    func trimmingTrailingSpaces() -> String {
        var text = Substring(self)
        while text.last == " " { text.removeLast() }
        return String(text)
    }
}

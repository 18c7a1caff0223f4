/// Why a cron expression was rejected, and where.
///
/// `columns` are 1-based character columns of the expression text, half-open, so a renderer can put a caret
/// under the offending token. `message` is lowercase with no final period and names the field, the token and the
/// problem, e.g. `day-of-week: value 8 out of range 0-7`.
public struct CronParseError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The field the error is in, when it is in one.
    public var field: CronField?
    /// The reason, including the field name prefix when there is a field.
    public var message: String
    /// 1-based columns of the offending text, half-open.
    public var columns: Range<Int>

    public init(field: CronField?, message: String, columns: Range<Int>) {
        self.field = field
        self.message = message
        self.columns = columns
    }

    /// The first column, for `file:line:col` locations.
    public var column: Int { columns.lowerBound }

    public var description: String { message }

    /// Renders the error like a compiler would, for an expression that sits at `column` offset `columnOffset`
    /// (0 for a bare expression) in line `line` of `source`:
    /// ```
    /// schedule:12:9: error: day-of-week: value 8 out of range 0-7
    /// 12 | 0 3 * * 8
    ///    |         ^
    /// ```
    public func rendered(source: String = "<expression>", line: Int = 1, lineText: String, columnOffset: Int = 0)
        -> String
    {
        let start = columns.lowerBound + columnOffset
        return DiagnosticRenderer.render(
            location: "\(source):\(line):\(start)", severity: "error", message: message, line: line,
            lineText: lineText, columns: (columns.lowerBound + columnOffset)..<(columns.upperBound + columnOffset))
    }
}

/// A note about a valid expression that probably does not do what its author meant (Debian's day rule, D7).
public struct CronWarning: Hashable, Sendable, CustomStringConvertible {
    public var field: CronField
    public var message: String
    public var columns: Range<Int>
    public var description: String { message }
}

/// Compiler-style rendering of one diagnostic with its source line and a caret line.
public enum DiagnosticRenderer {
    /// `location: severity: message`, then `N | line` and `  | ^~~` under `columns` (1-based, half-open).
    /// TABs in the source line are kept in the caret padding so the caret lines up in a terminal.
    public static func render(
        location: String, severity: String, message: String, line: Int, lineText: String, columns: Range<Int>
    ) -> String {
        let gutter = String(line)
        let blank = String(repeating: " ", count: gutter.count)
        let scalars = Array(lineText.unicodeScalars)
        var padding = ""
        for index in 0..<max(0, columns.lowerBound - 1) {
            padding.append(index < scalars.count && scalars[index] == "\t" ? "\t" : " ")
        }
        let width = max(1, columns.count)
        let marker = "^" + String(repeating: "~", count: width - 1)
        return "\(location): \(severity): \(message)\n\(gutter) | \(lineText)\n\(blank) | \(padding)\(marker)"
    }
}

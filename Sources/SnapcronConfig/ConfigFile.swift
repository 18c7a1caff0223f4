import BackendTypes
import Foundation
import LocalDescriptor
public import SnapcronCore
import TOMLKit

extension SnapcronConfig {
    /// The embedded default: no config file, one built-in `local` backend storing images under `stateDir`.
    public static func `default`(stateDir: String = defaultStateDirectory) -> SnapcronConfig {
        SnapcronConfig(
            file: nil, stateDirectory: stateDir,
            backends: ["local": LocalBackendDescriptor.builtIn(stateDirectory: stateDir)])
    }

    /// Loads `path`, reporting a missing file as an error. `stateDirectory` (`snapcrond --state-dir`) replaces the
    /// file's `state_dir`, and so moves what defaults to a place under it (the local image store).
    public static func load(path: String, stateDirectory: String? = nil) throws(DiagnosticList) -> SnapcronConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw [.error("cannot read config: \(fileErrorDescription(path: path))", file: path)]
        }
        return try parse(text, file: path, stateDirectory: stateDirectory)
    }

    /// Loads `path`, or returns the embedded default when there is no such file.
    public static func loadIfPresent(
        path: String = defaultPath, stateDirectory: String? = nil
    ) throws(DiagnosticList) -> SnapcronConfig {
        guard FileManager.default.fileExists(atPath: path) else {
            return .default(stateDir: stateDirectory ?? defaultStateDirectory)
        }
        return try load(path: path, stateDirectory: stateDirectory)
    }

    /// Reads the TOML text of a config file named `file`, reporting every problem at once.
    ///
    /// A file without any `[backends.*]` table gets the built-in `local` backend; a file with backends has
    /// exactly those, each read by its type's descriptor. Paths must be absolute. An `api_key_file` is checked on
    /// disk here: it must exist and must not be world-readable.
    public static func parse(
        _ text: String, file: String, stateDirectory: String? = nil
    ) throws(DiagnosticList) -> SnapcronConfig {
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw [syntaxDiagnostic(error, text: text, file: file)]
        } catch {
            throw [.error("cannot parse config: \(error)", file: file)]
        }
        var reader = ConfigReader(file: file)
        let config = reader.read(ConfigValue(root).table ?? [:], stateDirectory: stateDirectory)
        if reader.diagnostics.hasErrors { throw reader.diagnostics }
        return config
    }

    static func syntaxDiagnostic(_ error: TOMLParseError, text: String, file: String) -> Diagnostic {
        let begin = error.source.begin
        let end = error.source.end
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let sourceLine = begin.line >= 1 && begin.line <= lines.count ? String(lines[begin.line - 1]) : nil
        let endColumn = end.line == begin.line && end.column > begin.column ? end.column : begin.column + 1
        var message = error.description.trimmingCharacters(in: .whitespacesAndNewlines)
        if message.hasSuffix(".") { message.removeLast() }
        if let first = message.first { message = first.lowercased() + message.dropFirst() }
        // toml++ says "Error while parsing value: …"; after "error:" lead with the reason instead.
        if message.hasPrefix("error while "), let colon = message.firstIndex(of: ":") {
            let context = message[message.index(message.startIndex, offsetBy: 6)..<colon]
            let reason = message[message.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            if !reason.isEmpty { message = "\(reason) (\(context))" }
        }
        return Diagnostic(
            file: file, line: max(begin.line, 1), columns: max(begin.column, 1)..<max(endColumn, 2),
            severity: .error, message: message, sourceLine: sourceLine?.trimmingCharacters(in: ["\r"]))
    }
}

extension ConfigValue {
    init(_ toml: any TOMLValueConvertible) {
        switch toml.type {
        case .string: self = .string(toml.string ?? "")
        case .int: self = .integer(toml.int ?? 0)
        case .double: self = .float(toml.double ?? 0)
        case .bool: self = .bool(toml.bool ?? false)
        case .array: self = .array(toml.array.map { $0.map { ConfigValue($0) } } ?? [])
        case .table:
            var table: [String: ConfigValue] = [:]
            for (key, value) in toml.table ?? TOMLTable() { table[key] = ConfigValue(value) }
            self = .table(table)
        case .date, .time, .dateTime: self = .dateTime(toml.debugDescription)
        }
    }
}

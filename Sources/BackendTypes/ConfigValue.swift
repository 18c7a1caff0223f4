/// A value of the config file (a TOML value), kept typed so that each backend type reads its own keys.
public enum ConfigValue: Sendable, Hashable, CustomStringConvertible {
    case string(String)
    case integer(Int)
    case float(Double)
    case bool(Bool)
    case array([ConfigValue])
    case table([String: ConfigValue])
    /// A TOML date, time or date-time, as written.
    case dateTime(String)

    public var string: String? { if case .string(let value) = self { value } else { nil } }
    public var integer: Int? { if case .integer(let value) = self { value } else { nil } }
    public var bool: Bool? { if case .bool(let value) = self { value } else { nil } }
    public var array: [ConfigValue]? { if case .array(let value) = self { value } else { nil } }
    public var table: [String: ConfigValue]? { if case .table(let value) = self { value } else { nil } }

    /// An integer or a float as a `Double`.
    public var number: Double? {
        switch self {
        case .integer(let value): Double(value)
        case .float(let value): value
        default: nil
        }
    }

    /// An array of strings (e.g. an argv template), or `nil` if anything else.
    public var strings: [String]? {
        guard let array else { return nil }
        let strings = array.compactMap(\.string)
        return strings.count == array.count ? strings : nil
    }

    /// The TOML type name used in messages.
    public var typeName: String {
        switch self {
        case .string: "string"
        case .integer: "integer"
        case .float: "float"
        case .bool: "boolean"
        case .array: "array"
        case .table: "table"
        case .dateTime: "date-time"
        }
    }

    public var description: String {
        switch self {
        case .string(let value): "\"\(value)\""
        case .integer(let value): String(value)
        case .float(let value): String(value)
        case .bool(let value): String(value)
        case .array(let values): "[\(values.map(\.description).joined(separator: ", "))]"
        case .table(let table):
            "{ \(table.sorted { $0.key < $1.key }.map { "\($0.key) = \($0.value)" }.joined(separator: ", ")) }"
        case .dateTime(let value): value
        }
    }
}

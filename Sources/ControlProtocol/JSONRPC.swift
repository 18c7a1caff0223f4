import Foundation

/// The id of a JSON-RPC request: a number, a string, or null (JSON-RPC 2.0, section 4).
public enum RequestID: Sendable, Hashable, Codable, CustomStringConvertible {
    case number(Int64)
    case string(String)
    case null

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let number = try? container.decode(Int64.self) {
            self = .number(number)
        } else {
            self = .string(try container.decode(String.self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .number(let number): try container.encode(number)
        case .string(let string): try container.encode(string)
        case .null: try container.encodeNil()
        }
    }

    public var description: String {
        switch self {
        case .number(let number): String(number)
        case .string(let string): "\"\(string)\""
        case .null: "null"
        }
    }
}

/// Any JSON value; used where the shape is not known in advance (a request before it is validated, `--json`).
public enum JSONValue: Sendable, Hashable, Codable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let bool = try? container.decode(Bool.self) {
            self = .bool(bool)
        } else if let number = try? container.decode(Double.self) {
            self = .number(number)
        } else if let string = try? container.decode(String.self) {
            self = .string(string)
        } else if let array = try? container.decode([JSONValue].self) {
            self = .array(array)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .null: try container.encodeNil()
        case .bool(let value): try container.encode(value)
        case .number(let value):
            if value.rounded() == value, abs(value) < 9e15 {
                try container.encode(Int64(value))
            } else {
                try container.encode(value)
            }
        case .string(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        }
    }

    /// The member `key` of an object, or nil.
    public subscript(key: String) -> JSONValue? {
        if case .object(let members) = self { members[key] } else { nil }
    }

    /// The JSON type's name, for error messages.
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }
}

/// A JSON-RPC error code: the standard ones and snapcron's own (-32000 to -32099, "server error").
public struct RPCErrorCode: RawRepresentable, Sendable, Hashable, Codable, CustomStringConvertible {
    public var rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// The line is not valid JSON.
    public static let parseError = RPCErrorCode(rawValue: -32700)
    /// Valid JSON but not a JSON-RPC 2.0 request object (or a batch, which snapcron does not accept).
    public static let invalidRequest = RPCErrorCode(rawValue: -32600)
    /// No method of that name.
    public static let methodNotFound = RPCErrorCode(rawValue: -32601)
    /// A parameter is missing, unknown or of the wrong type.
    public static let invalidParams = RPCErrorCode(rawValue: -32602)
    /// The daemon failed while answering (e.g. the store could not be read).
    public static let internalError = RPCErrorCode(rawValue: -32603)
    /// The caller may read but not change: not root, not the daemon's user, not in the socket's group.
    public static let notPermitted = RPCErrorCode(rawValue: -32001)
    /// No job, run or image of that name or id.
    public static let notFound = RPCErrorCode(rawValue: -32002)
    /// The request conflicts with the current state (e.g. the job's target is still being imaged).
    public static let conflict = RPCErrorCode(rawValue: -32003)
    /// The schedule has errors; `data.diagnostics` lists them with line and column.
    public static let invalidSchedule = RPCErrorCode(rawValue: -32004)
    /// The request line exceeded the maximum length; the connection is closed.
    public static let lineTooLong = RPCErrorCode(rawValue: -32005)
    /// The server is at its connection limit, or the connection idled or stalled; it is closed.
    public static let unavailable = RPCErrorCode(rawValue: -32006)

    public var description: String { String(rawValue) }
}

/// The `error` member of a JSON-RPC response.
public struct RPCError: Error, Sendable, Hashable, Codable, CustomStringConvertible {
    public var code: RPCErrorCode
    public var message: String
    public var data: ErrorData?

    public init(_ code: RPCErrorCode, _ message: String, data: ErrorData? = nil) {
        self.code = code
        self.message = message
        self.data = data
    }

    public var description: String { message }
}

/// Structured detail of an error.
public struct ErrorData: Sendable, Hashable, Codable {
    /// Schedule errors and warnings, for `reload` and `edit`.
    public var diagnostics: [DiagnosticInfo]?
    /// The method that was refused, for `notPermitted`.
    public var method: String?

    public init(diagnostics: [DiagnosticInfo]? = nil, method: String? = nil) {
        self.diagnostics = diagnostics
        self.method = method
    }
}

/// A request as sent by a client: `{"jsonrpc":"2.0","id":1,"method":"status","params":{}}`.
public struct RPCRequest<Params: Encodable & Sendable>: Encodable, Sendable {
    public var jsonrpc = "2.0"
    public var id: RequestID
    public var method: String
    public var params: Params

    public init(id: RequestID, method: String, params: Params) {
        self.id = id
        self.method = method
        self.params = params
    }
}

/// A response as a client decodes it: a result or an error, never both.
public struct RPCResponse<Result: Decodable & Sendable>: Decodable, Sendable {
    public var jsonrpc: String
    public var id: RequestID
    public var result: Result?
    public var error: RPCError?
}

/// The envelope of a response with the result left as bytes; the server writes cached results this way.
public enum ResponseWriter {
    /// One response line: `{"jsonrpc":"2.0","id":…,"result":…}` and a newline.
    public static func result(id: RequestID, encodedResult: Data) -> Data {
        let prefix = resultPrefix(id: id)
        var line = Data()
        line.reserveCapacity(prefix.count + encodedResult.count + resultSuffix.count)
        line.append(contentsOf: prefix)
        line.append(encodedResult)
        line.append(contentsOf: resultSuffix)
        return line
    }

    /// What comes before the result in a result line: a server can write a large cached result between this and
    /// ``resultSuffix`` without copying it.
    public static func resultPrefix(id: RequestID) -> [UInt8] {
        Array("{\"jsonrpc\":\"2.0\",\"id\":\(id.jsonText),\"result\":".utf8)
    }

    /// What follows the result in a result line, with the newline.
    public static let resultSuffix: [UInt8] = Array("}\n".utf8)

    /// One error line; `id` is null when the request's id could not be read.
    public static func error(id: RequestID, _ error: RPCError) -> Data {
        struct Envelope: Encodable {
            var jsonrpc = "2.0"
            var id: RequestID
            var error: RPCError
        }
        var line =
            (try? ControlCoding.encoder.encode(Envelope(id: id, error: error)))
            ?? Data(
                "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32603,\"message\":\"encoding failed\"}}".utf8)
        line.append(UInt8(ascii: "\n"))
        return line
    }
}

extension RequestID {
    /// The id as JSON text.
    var jsonText: String {
        switch self {
        case .number(let number): String(number)
        case .null: "null"
        case .string(let string):
            (try? String(decoding: ControlCoding.encoder.encode(string), as: UTF8.self)) ?? "null"
        }
    }
}

/// The one JSON configuration of both sides: snake_case keys, ISO 8601 dates in UTC.
public enum ControlCoding {
    /// Shared by every request: JSONEncoder and JSONDecoder are safe to use from several threads once configured,
    /// and making one per message costs more than answering `status`.
    nonisolated(unsafe) private static let sharedEncoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.withoutEscapingSlashes, .sortedKeys]
        return encoder
    }()

    nonisolated(unsafe) private static let sharedDecoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()

    /// Encodes with snake_case keys and ISO 8601 dates, slashes unescaped, keys sorted; do not reconfigure it.
    public static var encoder: JSONEncoder { sharedEncoder }

    /// Decodes snake_case keys and ISO 8601 dates; do not reconfigure it.
    public static var decoder: JSONDecoder { sharedDecoder }
}

import Foundation

/// A request line that passed the envelope checks; its parameters are decoded per method.
public struct ParsedRequest: Sendable {
    /// nil for a notification (no `id` member): it is carried out but not answered.
    public var id: RequestID?
    public var method: ControlMethod
    private var params: JSONValue?

    /// Whether this call may change state: the method's own rule, except that `prune` and `prune_orphans` with
    /// `dry_run` read.
    public var changesState: Bool {
        if method == .prune || method == .pruneOrphans, case .bool(true)? = params?["dry_run"] { return false }
        return method.changesState
    }

    /// The id to answer with (null for a notification).
    public var responseID: RequestID { id ?? .null }

    /// Decodes the parameters as `P`; a missing member, an unknown member or a wrong type is `invalidParams`.
    public func decodeParams<P: ControlParams>(_ type: P.Type) throws(RPCError) -> P {
        let object: [String: JSONValue]
        switch params {
        case nil, .null?: object = [:]
        case .object(let members)?: object = members
        default:
            throw RPCError(.invalidParams, "params of \(method.rawValue) must be an object, not \(params!.typeName)")
        }
        if object.isEmpty, let none = NoParams() as? P { return none }  // the common case costs no decoding
        let names = P.members.map(\.name)
        if let unknown = object.keys.sorted().first(where: { !names.contains($0) }) {
            let expected = names.isEmpty ? "it takes none" : "expected: " + names.joined(separator: ", ")
            throw RPCError(.invalidParams, "unknown parameter '\(unknown)' for \(method.rawValue) (\(expected))")
        }
        // Types first: the decoder's own errors for 1e20, 1.5 or a bad time do not say which parameter.
        for member in P.members {
            guard let value = object[member.name], value != .null, !member.type.accepts(value) else { continue }
            throw RPCError(
                .invalidParams,
                "\(method.rawValue): parameter '\(member.name)' must be \(member.type) (got \(Self.preview(value)))")
        }
        do {
            let data = try ControlCoding.encoder.encode(JSONValue.object(object))
            return try ControlCoding.decoder.decode(P.self, from: data)
        } catch let error as DecodingError {
            throw RPCError(.invalidParams, "\(method.rawValue): \(Self.describe(error))")
        } catch {
            throw RPCError(.invalidParams, "\(method.rawValue): \(error)")
        }
    }

    /// A decoding error in words: which parameter and what was wrong with it.
    static func describe(_ error: DecodingError) -> String {
        func path(_ codingPath: [any CodingKey]) -> String {
            codingPath.map { key in key.intValue.map { "[\($0)]" } ?? snakeCase(key.stringValue) }
                .joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let parent = path(context.codingPath)
            return "missing parameter '\(parent.isEmpty ? "" : parent + ".")\(snakeCase(key.stringValue))'"
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            return "parameter '\(path(context.codingPath))' must be \(typeName(type))"
        case .dataCorrupted(let context):
            let name = path(context.codingPath)
            return name.isEmpty
                ? context.debugDescription : "parameter '\(name)' is invalid: \(context.debugDescription.lowercased())"
        @unknown default:
            return "\(error)"
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: ParamType.string.description
        case is Bool.Type: ParamType.boolean.description
        case is Int.Type, is Int64.Type: ParamType.integer.description
        case is Date.Type: ParamType.time.description
        default: "a \(type)"
        }
    }

    /// A value as JSON, cut to 40 characters: enough to recognise it in an error.
    static func preview(_ value: JSONValue) -> String {
        guard let data = try? ControlCoding.encoder.encode(value) else { return value.typeName }
        let text = String(decoding: data, as: UTF8.self)
        return text.count > 40 ? text.prefix(39) + "…" : text
    }

    private static func snakeCase(_ name: String) -> String {
        var result = ""
        for character in name {
            if character.isUppercase {
                result += "_" + character.lowercased()
            } else {
                result.append(character)
            }
        }
        return result
    }

    init(id: RequestID?, method: ControlMethod, params: JSONValue?) {
        self.id = id
        self.method = method
        self.params = params
    }
}

/// Turns one request line into a ``ParsedRequest`` or the error to answer with (JSON-RPC 2.0, section 5.1).
public enum RequestParser {
    /// A line that cannot be answered with a result, and the id to answer its error with.
    public struct Failure: Error, Sendable {
        public var id: RequestID
        public var error: RPCError
    }

    /// The members of a request object, each decoded with its expected type first (a failed guess costs a thrown
    /// error, and `status` must stay cheap).
    private struct Envelope: Decodable {
        var jsonrpc: JSONValue?
        var id: JSONValue?
        var method: JSONValue?
        var params: JSONValue?

        private struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            func value(_ name: String, guess: (KeyedDecodingContainer<Key>, Key) throws -> JSONValue?) throws -> JSONValue? {
                let key = Key(stringValue: name)
                guard container.contains(key) else { return nil }
                if let guessed = try? guess(container, key) { return guessed }
                return try container.decode(JSONValue.self, forKey: key)
            }
            jsonrpc = try value("jsonrpc") { .string(try $0.decode(String.self, forKey: $1)) }
            method = try value("method") { .string(try $0.decode(String.self, forKey: $1)) }
            id = try value("id") { container, key in
                if try container.decodeNil(forKey: key) { return .null }
                return .number(Double(try container.decode(Int64.self, forKey: key)))
            }
            params = try value("params") { .object(try $0.decode([String: JSONValue].self, forKey: $1)) }
        }
    }

    /// Parses one line (without its newline).
    public static func parse(_ line: some Collection<UInt8>) -> Result<ParsedRequest, Failure> {
        let data = Data(line)
        if let envelope = try? ControlCoding.decoder.decode(Envelope.self, from: data) {
            var members: [String: JSONValue] = [:]
            members["jsonrpc"] = envelope.jsonrpc
            members["id"] = envelope.id
            members["method"] = envelope.method
            members["params"] = envelope.params
            return check(members)
        }
        let value: JSONValue
        do {
            value = try ControlCoding.decoder.decode(JSONValue.self, from: data)
        } catch {
            let preview = String(decoding: data.prefix(40), as: UTF8.self)
                .unicodeScalars.map {
                    $0.properties.isWhitespace || $0.value >= 0x20 && $0.value != 0xFFFD ? String($0) : "?"
                }
                .joined()
            return .failure(Failure(id: .null, error: RPCError(.parseError, "not valid JSON: \(preview)")))
        }
        return check(value)
    }

    /// Checks the envelope of a parsed JSON value.
    private static func check(_ members: [String: JSONValue]) -> Result<ParsedRequest, Failure> {
        check(JSONValue.object(members))
    }

    private static func check(_ value: JSONValue) -> Result<ParsedRequest, Failure> {
        guard case .object(let members) = value else {
            let message =
                if case .array = value { "batch requests are not supported; send one request object per line" } else {
                    "a request must be a JSON object, not \(value.typeName)"
                }
            return .failure(Failure(id: .null, error: RPCError(.invalidRequest, message)))
        }
        var id: RequestID?
        switch members["id"] {
        case nil: id = nil
        case .null?: id = .null
        case .string(let string)?: id = .string(string)
        case .number(let number)? where number.rounded() == number && abs(number) < 9e15: id = .number(Int64(number))
        case let other?:
            return .failure(
                Failure(
                    id: .null,
                    error: RPCError(.invalidRequest, "id must be an integer or a string, not \(other.typeName)")))
        }
        let answerID = id ?? .null
        guard members["jsonrpc"] == .string("2.0") else {
            return .failure(Failure(id: answerID, error: RPCError(.invalidRequest, "jsonrpc must be \"2.0\"")))
        }
        guard case .string(let name)? = members["method"] else {
            return .failure(Failure(id: answerID, error: RPCError(.invalidRequest, "method must be a string")))
        }
        guard let method = ControlMethod(rawValue: name) else {
            let known = ControlMethod.allCases.map(\.rawValue).joined(separator: ", ")
            return .failure(
                Failure(id: answerID, error: RPCError(.methodNotFound, "unknown method '\(name)' (known: \(known))")))
        }
        return .success(ParsedRequest(id: id, method: method, params: members["params"]))
    }
}

/// A placeholder of an argv template, written `{target}`, `{name}`, `{image}`, `{job}`, `{description}` (the exec
/// backend's commands), or `{run}`, `{state}`, `{error}` (hook commands, with some of the former).
public struct Placeholder: Hashable, Sendable, CustomStringConvertible {
    public var name: String

    public init(_ name: String) {
        self.name = name
    }

    /// The backend-specific part of a job's target (`ID` of `BACKEND:ID`).
    public static let target = Placeholder("target")
    /// The image name snapcron chose, e.g. `snapcron-web-20261129T010000Z`.
    public static let name = Placeholder("name")
    /// The image id the create command printed (or the `image_id` template made).
    public static let image = Placeholder("image")
    /// The job name, read from the description's `snapcron:job=` marker; empty when there is none.
    public static let job = Placeholder("job")
    /// The image description with snapcron's marker.
    public static let description = Placeholder("description")

    /// The run's id (hooks).
    public static let run = Placeholder("run")
    /// The run's state when it ended (hooks).
    public static let state = Placeholder("state")
    /// The run's error, if it failed (hooks).
    public static let error = Placeholder("error")

    public static let all: [Placeholder] = [.target, .name, .image, .job, .description, .run, .state, .error]

    public var description: String { "{\(name)}" }
}

/// One argv template: literal text with placeholders, expanded per call into one argument each, never a shell.
///
/// `{{` and `}}` stand for literal braces. A placeholder may sit inside a longer argument (`{target}@{name}`).
public struct CommandTemplate: Hashable, Sendable, CustomStringConvertible {
    /// The template as configured.
    public let argv: [String]
    private let parsed: [[Piece]]

    enum Piece: Hashable, Sendable {
        case literal(String)
        case placeholder(Placeholder)
    }

    /// A problem with a template, worded for the operator.
    public struct Problem: Error, Hashable, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    /// Parses `argv`, allowing only `allowed` placeholders.
    public init(_ argv: [String], allowed: [Placeholder]) throws(Problem) {
        guard let command = argv.first, !command.isEmpty else {
            throw Problem(message: "expected a non-empty argv whose first element is the command")
        }
        var parsed: [[Piece]] = []
        for argument in argv {
            parsed.append(try Self.parse(argument, allowed: allowed))
        }
        if parsed[0].contains(where: { if case .placeholder = $0 { true } else { false } }) {
            throw Problem(message: "the command itself (\(command)) must not contain a placeholder")
        }
        self.argv = argv
        self.parsed = parsed
    }

    /// Parses one template string (also used for the `image_id` template).
    static func parse(_ text: String, allowed: [Placeholder]) throws(Problem) -> [Piece] {
        var pieces: [Piece] = []
        var literal = ""
        var index = text.startIndex
        while index < text.endIndex {
            let character = text[index]
            let next = text.index(after: index)
            if character == "{", next < text.endIndex, text[next] == "{" {
                literal.append("{")
                index = text.index(after: next)
            } else if character == "}", next < text.endIndex, text[next] == "}" {
                literal.append("}")
                index = text.index(after: next)
            } else if character == "{" {
                guard let close = text[next...].firstIndex(of: "}") else {
                    throw Problem(message: "unclosed '{' in '\(text)' (write '{{' for a literal brace)")
                }
                let placeholder = Placeholder(String(text[next..<close]))
                guard allowed.contains(placeholder) else {
                    let names = allowed.map(\.description).joined(separator: ", ")
                    throw Problem(
                        message: Placeholder.all.contains(placeholder)
                            ? "placeholder \(placeholder) is not available here (available: \(names))"
                            : "unknown placeholder \(placeholder) in '\(text)' (available: \(names))")
                }
                if !literal.isEmpty { pieces.append(.literal(literal)) }
                literal = ""
                pieces.append(.placeholder(placeholder))
                index = text.index(after: close)
            } else if character == "}" {
                throw Problem(message: "stray '}' in '\(text)' (write '}}' for a literal brace)")
            } else {
                literal.append(character)
                index = next
            }
        }
        if !literal.isEmpty || pieces.isEmpty { pieces.append(.literal(literal)) }
        return pieces
    }

    /// The placeholders this template uses.
    public var placeholders: Set<Placeholder> {
        Set(parsed.joined().compactMap { if case .placeholder(let placeholder) = $0 { placeholder } else { nil } })
    }

    /// The argv with every placeholder replaced by its value (a missing value expands to nothing).
    public func expand(_ values: [Placeholder: String]) -> [String] {
        parsed.map { Self.expand($0, values) }
    }

    static func expand(_ pieces: [Piece], _ values: [Placeholder: String]) -> String {
        pieces.map { piece in
            switch piece {
            case .literal(let text): text
            case .placeholder(let placeholder): values[placeholder] ?? ""
            }
        }.joined()
    }

    /// A short name for messages: the command's file name and its first literal word, e.g. `qemu-snapshot create`.
    public var label: String {
        let command = argv[0].split(separator: "/").last.map(String.init) ?? argv[0]
        if argv.count > 1, case .literal(let word)? = parsed[1].first, parsed[1].count == 1, !word.hasPrefix("-"),
            !word.isEmpty, !word.contains("/")
        {
            return "\(command) \(word)"
        }
        return command
    }

    public var description: String { argv.description }
}

/// A template for a single string, such as the `image_id` fallback `{target}@{name}`.
public struct StringTemplate: Hashable, Sendable, CustomStringConvertible {
    /// The template as configured.
    public let text: String
    private let pieces: [CommandTemplate.Piece]

    /// Parses `text`, allowing only `allowed` placeholders.
    public init(_ text: String, allowed: [Placeholder]) throws(CommandTemplate.Problem) {
        self.text = text
        self.pieces = try CommandTemplate.parse(text, allowed: allowed)
    }

    /// The text with every placeholder replaced by its value (a missing value expands to nothing).
    public func expand(_ values: [Placeholder: String]) -> String {
        CommandTemplate.expand(pieces, values)
    }

    public var description: String { text }
}

import Foundation

/// The methods of the control socket.
public enum ControlMethod: String, Sendable, CaseIterable, Codable {
    case status, jobs, job, next, history, images, orphans, run, freshness
    case trigger, pause, resume, pin, unpin, reload, check, prune
    case pruneOrphans = "prune_orphans"

    /// Whether the method can change the daemon's state: only root, the daemon's user and the socket's group
    /// may call it. `prune` and `prune_orphans` with `dry_run` only read (see ``ParsedRequest/changesState``).
    public var changesState: Bool {
        switch self {
        case .status, .jobs, .job, .next, .history, .images, .orphans, .run, .freshness, .check: false
        case .trigger, .pause, .resume, .pin, .unpin, .reload, .prune, .pruneOrphans: true
        }
    }
}

/// The parameters of one method; its JSON members are the snake_case names of its properties.
public protocol ControlParams: Codable, Sendable {
    /// The JSON members accepted, each with the type of its value; anything else is refused as a likely typo.
    static var members: [ParamMember] { get }
}

/// One JSON member of a method's parameters and the type its value must have.
public struct ParamMember: Sendable, Hashable {
    /// The snake_case member name, e.g. `dry_run`.
    public var name: String
    public var type: ParamType

    public init(_ name: String, _ type: ParamType) {
        self.name = name
        self.type = type
    }

    public static func string(_ name: String) -> ParamMember { ParamMember(name, .string) }
    public static func boolean(_ name: String) -> ParamMember { ParamMember(name, .boolean) }
    public static func integer(_ name: String) -> ParamMember { ParamMember(name, .integer) }
    public static func time(_ name: String) -> ParamMember { ParamMember(name, .time) }
}

/// The JSON type of a parameter, checked before decoding so that every type error names the parameter.
public struct ParamType: Sendable, Hashable, CustomStringConvertible {
    /// The type in words for errors, e.g. `an integer`.
    public let description: String
    private let accepts: @Sendable (JSONValue) -> Bool

    private init(_ description: String, accepts: @escaping @Sendable (JSONValue) -> Bool) {
        self.description = description
        self.accepts = accepts
    }

    /// Whether `value` has this type; `null` is left to the decoder (it means "not given" for optional members).
    public func accepts(_ value: JSONValue) -> Bool { accepts(value) }

    public static let string = ParamType("a string") { if case .string = $0 { true } else { false } }
    public static let boolean = ParamType("a boolean") { if case .bool = $0 { true } else { false } }
    /// A whole number that JSON numbers (doubles) carry exactly, as ``JSONValue`` writes integers.
    public static let integer = ParamType("an integer") { value in
        guard case .number(let number) = value else { return false }
        return number.rounded() == number && abs(number) < 9e15
    }
    /// A time as ``ControlCoding`` reads it: RFC 3339 with `Z` or an offset, whole seconds.
    public static let time = ParamType("an RFC 3339 time such as 2026-11-29T09:00:00Z") { value in
        guard case .string(let text) = value, let json = try? ControlCoding.encoder.encode(text) else { return false }
        return (try? ControlCoding.decoder.decode(Date.self, from: json)) != nil
    }

    public static func == (lhs: ParamType, rhs: ParamType) -> Bool { lhs.description == rhs.description }
    public func hash(into hasher: inout Hasher) { hasher.combine(description) }
}

/// No parameters (`status`, `jobs`, `orphans`, `reload`).
public struct NoParams: ControlParams, Hashable {
    public static let members: [ParamMember] = []
    public init() {}
}

/// A job name (`job`, `images`, `trigger`, `pause`, `resume`).
public struct JobParams: ControlParams, Hashable {
    public static let members: [ParamMember] = [.string("job")]
    public var job: String
    public init(job: String) { self.job = job }
}

/// `next`: the fires of a job, or of an expression in a zone.
public struct NextParams: ControlParams, Hashable {
    public static let members: [ParamMember] = [
        .string("job"), .string("expression"), .string("zone"), .integer("count"),
    ]
    public var job: String?
    public var expression: String?
    /// IANA zone for `expression` (default UTC).
    public var zone: String?
    /// How many fires, 1-1000 (default 5).
    public var count: Int?
    public init(job: String? = nil, expression: String? = nil, zone: String? = nil, count: Int? = nil) {
        self.job = job
        self.expression = expression
        self.zone = zone
        self.count = count
    }
}

/// `history`: runs, newest first, filtered.
public struct HistoryParams: ControlParams, Hashable {
    public static let members: [ParamMember] = [
        .string("job"), .string("state"), .time("since"), .integer("limit"), .boolean("verbose"),
    ]
    public var job: String?
    /// A run state: claimed, creating, waiting, succeeded, failed, timed_out, missed, skipped, cancelled.
    public var state: String?
    /// Only fires at or after this instant.
    public var since: Date?
    /// At most this many runs, 1-10000 (default 50).
    public var limit: Int?
    /// Each run's hook commands too (`hooks`).
    public var verbose: Bool?
    public init(job: String? = nil, state: String? = nil, since: Date? = nil, limit: Int? = nil, verbose: Bool? = nil) {
        self.job = job
        self.state = state
        self.since = since
        self.limit = limit
        self.verbose = verbose
    }
}

/// `run`: one run by id (what `trigger --wait` polls).
public struct RunParams: ControlParams, Hashable {
    public static let members: [ParamMember] = [.integer("id")]
    public var id: Int64
    public init(id: Int64) { self.id = id }
}

/// `pin` / `unpin`: an image by its backend id, optionally within one job.
public struct PinParams: ControlParams, Hashable {
    public static let members: [ParamMember] = [.string("image"), .string("job")]
    public var image: String
    public var job: String?
    public init(image: String, job: String? = nil) {
        self.image = image
        self.job = job
    }
}

/// `check`: schedule text to validate against the daemon's config and backends, without applying it.
public struct CheckParams: ControlParams, Hashable {
    public static let members: [ParamMember] = [.string("text"), .string("file")]
    public var text: String
    /// The name shown in diagnostics (default `<schedule>`).
    public var file: String?
    public init(text: String, file: String? = nil) {
        self.text = text
        self.file = file
    }
}

/// `prune`: apply retention to a job now, or with `dry_run` only show the plan.
public struct PruneParams: ControlParams, Hashable {
    public static let members: [ParamMember] = [.string("job"), .boolean("dry_run")]
    public var job: String
    public var dryRun: Bool?
    public init(job: String, dryRun: Bool? = nil) {
        self.job = job
        self.dryRun = dryRun
    }
}

/// `prune_orphans`: delete the orphaned images (see ``OrphansResult``), or with `dry_run` only show which.
public struct PruneOrphansParams: ControlParams, Hashable {
    public static let members: [ParamMember] = [.boolean("dry_run")]
    public var dryRun: Bool?
    public init(dryRun: Bool? = nil) { self.dryRun = dryRun }
}

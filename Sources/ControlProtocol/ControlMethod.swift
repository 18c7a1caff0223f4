import Foundation

/// The methods of the control socket.
public enum ControlMethod: String, Sendable, CaseIterable, Codable {
    case status, jobs, job, next, history, images, run, freshness
    case trigger, pause, resume, pin, unpin, reload, check, prune

    /// Whether the method can change the daemon's state: only root, the daemon's user and the socket's group
    /// may call it. `prune` with `dry_run` only reads (see ``ParsedRequest/changesState``).
    public var changesState: Bool {
        switch self {
        case .status, .jobs, .job, .next, .history, .images, .run, .freshness, .check: false
        case .trigger, .pause, .resume, .pin, .unpin, .reload, .prune: true
        }
    }
}

/// The parameters of one method; its JSON members are the snake_case names of its properties.
public protocol ControlParams: Codable, Sendable {
    /// The JSON member names accepted; anything else is refused as a likely typo.
    static var members: [String] { get }
}

/// No parameters (`status`, `jobs`, `reload`).
public struct NoParams: ControlParams, Hashable {
    public static let members: [String] = []
    public init() {}
}

/// A job name (`job`, `images`, `trigger`, `pause`, `resume`).
public struct JobParams: ControlParams, Hashable {
    public static let members = ["job"]
    public var job: String
    public init(job: String) { self.job = job }
}

/// `next`: the fires of a job, or of an expression in a zone.
public struct NextParams: ControlParams, Hashable {
    public static let members = ["job", "expression", "zone", "count"]
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
    public static let members = ["job", "state", "since", "limit"]
    public var job: String?
    /// A run state: claimed, creating, waiting, succeeded, failed, timed_out, missed, skipped, cancelled.
    public var state: String?
    /// Only fires at or after this instant.
    public var since: Date?
    /// At most this many runs, 1-10000 (default 50).
    public var limit: Int?
    public init(job: String? = nil, state: String? = nil, since: Date? = nil, limit: Int? = nil) {
        self.job = job
        self.state = state
        self.since = since
        self.limit = limit
    }
}

/// `run`: one run by id (what `trigger --wait` polls).
public struct RunParams: ControlParams, Hashable {
    public static let members = ["id"]
    public var id: Int64
    public init(id: Int64) { self.id = id }
}

/// `pin` / `unpin`: an image by its backend id, optionally within one job.
public struct PinParams: ControlParams, Hashable {
    public static let members = ["image", "job"]
    public var image: String
    public var job: String?
    public init(image: String, job: String? = nil) {
        self.image = image
        self.job = job
    }
}

/// `check`: schedule text to validate against the daemon's config and backends, without applying it.
public struct CheckParams: ControlParams, Hashable {
    public static let members = ["text", "file"]
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
    public static let members = ["job", "dry_run"]
    public var job: String
    public var dryRun: Bool?
    public init(job: String, dryRun: Bool? = nil) {
        self.job = job
        self.dryRun = dryRun
    }
}

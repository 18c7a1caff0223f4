import BackendTypes
import Foundation

/// A GFS tier of retention: the calendar period whose newest image a `keep-<period>=N` rule keeps.
public enum RetentionPeriod: String, Sendable, Hashable, Codable, CaseIterable {
    case hourly
    case daily
    case weekly
    case monthly
    case yearly

    /// The schedule-file option, e.g. `keep-daily`.
    public var optionName: String { "keep-\(rawValue)" }

    /// The period `date` falls in, as a label such as `2026-11-27` or `2026-W48` (ISO week), in `calendar`'s zone.
    func label(of date: Date, in calendar: Calendar) -> String {
        func pad(_ value: Int?, _ width: Int = 2) -> String {
            let text = String(value ?? 0)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        switch self {
        case .weekly:
            let parts = calendar.dateComponents([.yearForWeekOfYear, .weekOfYear], from: date)
            return "\(pad(parts.yearForWeekOfYear, 4))-W\(pad(parts.weekOfYear))"
        default:
            let parts = calendar.dateComponents([.year, .month, .day, .hour], from: date)
            let year = pad(parts.year, 4)
            switch self {
            case .hourly: return "\(year)-\(pad(parts.month))-\(pad(parts.day)) \(pad(parts.hour)):00"
            case .daily: return "\(year)-\(pad(parts.month))-\(pad(parts.day))"
            case .monthly: return "\(year)-\(pad(parts.month))"
            default: return year
            }
        }
    }
}

/// One image of a job as retention sees it.
public struct RetentionImage: Sendable, Hashable, Codable {
    public var id: String
    public var createdAt: Date
    /// The backend state as stored (`queued`, `saving`, `active`, `error`, `gone`); compared case-insensitively.
    public var state: String
    public var pinned: Bool
    /// Whether the store records that snapcron created this image (and its name and description agree).
    public var recordedAsOurs: Bool

    public init(id: String, createdAt: Date, state: String, pinned: Bool = false, recordedAsOurs: Bool = true) {
        self.id = id
        self.createdAt = createdAt
        self.state = state
        self.pinned = pinned
        self.recordedAsOurs = recordedAsOurs
    }

    public var isActive: Bool { state.lowercased() == "active" }
}

/// What retention would do to each image of a job, and why; the data behind `prune --dry-run`.
public struct RetentionPlan: Sendable, Hashable, Codable, CustomStringConvertible {
    public enum Action: String, Sendable, Hashable, Codable {
        case keep
        case delete
    }

    /// The fate of one image with every reason for it.
    public struct Decision: Sendable, Hashable, Codable, CustomStringConvertible {
        public var id: String
        public var createdAt: Date
        public var state: String
        public var action: Action
        /// Every rule that keeps the image, e.g. `keep-daily 3/14 (2026-11-27)`; `outside every rule` for a delete.
        public var reasons: [String]

        /// `keep: newest active, keep 1/7`.
        public var description: String { "\(action.rawValue): \(reasons.joined(separator: ", "))" }
    }

    public var now: Date
    /// The zone identifier GFS periods were computed in.
    public var timeZone: String
    /// The policy in schedule-file syntax.
    public var policy: String
    /// One decision per image, newest first.
    public var decisions: [Decision]

    public var deletions: [Decision] { decisions.filter { $0.action == .delete } }
    public var keeps: [Decision] { decisions.filter { $0.action == .keep } }

    /// One line per image: `id  created  state  keep: reasons`.
    public var description: String {
        let stamp = Date.ISO8601FormatStyle()
        return decisions.map { "\($0.id)  \($0.createdAt.formatted(stamp))  \($0.state)  \($0)" }
            .joined(separator: "\n")
    }
}

/// Decides which images of one job retention keeps and deletes; pure.
///
/// Rules (the borg/restic rule for GFS tiers): ACTIVE images recorded as ours are walked newest first; `keep=N`
/// keeps the first N, `keep-within=DUR` those created after `now - DUR`, and each `keep-<period>=N` tier keeps
/// the newest image of each distinct period until N periods are kept. Periods are calendar periods in the job's
/// zone; weeks are ISO weeks. One image may satisfy several tiers. Pinned images count toward the rules like any
/// other (pinning protects an image, it does not make the job keep more).
///
/// Hard rules no policy overrides: never delete the newest ACTIVE image, an image that is not ACTIVE, a pinned
/// image, or one not recorded as ours; with no retention rule at all, delete nothing.
public struct RetentionPlanner: Sendable {
    public var policy: RetentionPolicy
    public var timeZone: TimeZone

    public init(policy: RetentionPolicy, timeZone: TimeZone) {
        self.policy = policy
        self.timeZone = timeZone
    }

    /// How far after `now` an image's date may lie before it counts as made under a wrong clock.
    public static let futureTolerance: TimeInterval = 300

    /// The plan for `images` at `now`.
    public func plan(for images: [RetentionImage], now: Date) -> RetentionPlan {
        let ordered = images.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }
        var reasons: [String: [String]] = [:]
        func add(_ reason: String, to image: RetentionImage) { reasons[image.id, default: []].append(reason) }

        // An image dated after now was made while the clock was wrong (a forward step later corrected): it is kept
        // and counts for nothing, or it would stand in for a real newest image and let older ones go.
        let latestTrusted = now.addingTimeInterval(Self.futureTolerance)
        let candidates = ordered.filter { $0.isActive && $0.recordedAsOurs && $0.createdAt <= latestTrusted }
        if let newest = candidates.first { add("newest active", to: newest) }
        for image in ordered {
            if image.createdAt > latestTrusted { add("dated in the future (clock step?): kept, not counted", to: image) }
            if !image.isActive { add("not active (\(image.state.lowercased()))", to: image) }
            if image.pinned { add("pinned", to: image) }
            if !image.recordedAsOurs { add("not created by snapcron", to: image) }
        }

        if policy.keepsEverything {
            for image in ordered { add("no retention option (keeps everything)", to: image) }
        } else {
            if let keepLast = policy.keepLast {
                for (index, image) in candidates.prefix(max(keepLast, 0)).enumerated() {
                    add("keep \(index + 1)/\(keepLast)", to: image)
                }
            }
            if let keepWithin = policy.keepWithin {
                let cutoff = now.addingTimeInterval(-keepWithin.timeInterval)
                for image in candidates where image.createdAt > cutoff {
                    add("keep-within \(keepWithin.optionDescription)", to: image)
                }
            }
            var calendar = Calendar(identifier: .gregorian)
            calendar.timeZone = timeZone
            // ISO 8601 weeks: start on Monday, week 1 holds the year's first Thursday.
            calendar.firstWeekday = 2
            calendar.minimumDaysInFirstWeek = 4
            for (period, count) in policy.tiers {
                var seen: Set<String> = []
                for image in candidates where seen.count < count {
                    let label = period.label(of: image.createdAt, in: calendar)
                    // A set, not "differs from the previous label": a repeated hour at a DST fall-back is one period.
                    guard seen.insert(label).inserted else { continue }
                    add("\(period.optionName) \(seen.count)/\(count) (\(label))", to: image)
                }
            }
        }

        let decisions = ordered.map { image in
            let kept = reasons[image.id] ?? []
            return RetentionPlan.Decision(
                id: image.id, createdAt: image.createdAt, state: image.state,
                action: kept.isEmpty ? .delete : .keep,
                reasons: kept.isEmpty ? ["outside every rule"] : kept)
        }
        return RetentionPlan(now: now, timeZone: timeZone.identifier, policy: policy.description, decisions: decisions)
    }
}

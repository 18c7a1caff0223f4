import Foundation

/// An IANA time zone as a table of UTC-offset intervals, so that the fire search does integer arithmetic
/// instead of calling Foundation's calendar for every candidate.
///
/// The table is read once per zone from Foundation's `TimeZone` (all transitions from 1900 to 2200) and shared.
/// Before 1900 the 1900 offset applies, after 2200 the last offset: the engine searches at most 50 years ahead.
public struct CronTimeZone: Sendable, Hashable, CustomStringConvertible {
    /// The IANA name, e.g. `Asia/Taipei`.
    public let identifier: String
    let table: OffsetTable

    /// UTC, which never changes offset.
    public static let utc = CronTimeZone(identifier: "UTC", table: OffsetTable(starts: [Int64.min], offsets: [0]))

    /// The zone named `identifier`, or nil when the system's time zone database does not know it.
    public init?(identifier: String) {
        if identifier == "UTC" || identifier == "Etc/UTC" {
            self = CronTimeZone(identifier: identifier, table: Self.utc.table)
            return
        }
        guard let table = OffsetTable.cached(identifier) else { return nil }
        self.init(identifier: identifier, table: table)
    }

    /// The zone this machine runs in.
    public static var current: CronTimeZone {
        CronTimeZone(identifier: TimeZone.current.identifier) ?? .utc
    }

    init(identifier: String, table: OffsetTable) {
        self.identifier = identifier
        self.table = table
    }

    public var description: String { identifier }

    public static func == (lhs: CronTimeZone, rhs: CronTimeZone) -> Bool { lhs.identifier == rhs.identifier }
    public func hash(into hasher: inout Hasher) { hasher.combine(identifier) }

    /// Seconds east of UTC at `date`.
    public func secondsFromGMT(for date: Date) -> Int {
        let instant = Int64(date.timeIntervalSince1970.rounded(.down))
        return Int(table.offsets[table.interval(containing: instant)])
    }

    /// The wall-clock fields of `date` in this zone.
    public func localTime(of date: Date) -> LocalTime {
        let instant = Int64(date.timeIntervalSince1970.rounded(.down))
        let wall = instant + Int64(table.offsets[table.interval(containing: instant)])
        return LocalTime(wallSeconds: wall)
    }
}

/// A wall-clock minute (no zone): the nominal time a schedule names.
public struct LocalTime: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var year: Int
    public var month: Int
    public var day: Int
    public var hour: Int
    public var minute: Int
    public var second: Int

    init(wallSeconds: Int64) {
        let days = CivilCalendar.floorDivide(wallSeconds, 86_400)
        let secondOfDay = Int(wallSeconds - days * 86_400)
        (year, month, day) = CivilCalendar.date(fromDayNumber: Int(days))
        hour = secondOfDay / 3600
        minute = secondOfDay % 3600 / 60
        second = secondOfDay % 60
    }

    var wallSeconds: Int64 {
        Int64(CivilCalendar.dayNumber(year: year, month: month, day: day)) * 86_400
            + Int64(hour * 3600 + minute * 60 + second)
    }

    public static func < (lhs: LocalTime, rhs: LocalTime) -> Bool { lhs.wallSeconds < rhs.wallSeconds }

    /// `2024-03-10 02:30`.
    public var description: String {
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(year)-\(two(month))-\(two(day)) \(two(hour)):\(two(minute))"
    }
}

/// Intervals of constant UTC offset: offset `offsets[i]` holds from `starts[i]` (inclusive, Unix seconds) to
/// `starts[i + 1]` (exclusive). `starts[0]` is `Int64.min`.
final class OffsetTable: Sendable {
    let starts: [Int64]
    let offsets: [Int32]

    init(starts: [Int64], offsets: [Int32]) {
        self.starts = starts
        self.offsets = offsets
    }

    var isFixed: Bool { starts.count == 1 }

    /// End of interval `i` (exclusive); `Int64.max` for the last.
    @inline(__always)
    func end(of i: Int) -> Int64 { i + 1 < starts.count ? starts[i + 1] : Int64.max }

    @inline(__always)
    func interval(containing instant: Int64) -> Int {
        var low = 0
        var high = starts.count - 1
        while low < high {
            let mid = (low + high + 1) / 2
            if starts[mid] <= instant { low = mid } else { high = mid - 1 }
        }
        return low
    }

    private static let lock = NSLock()
    nonisolated(unsafe) private static var cache: [String: OffsetTable] = [:]

    static func cached(_ identifier: String) -> OffsetTable? {
        lock.lock()
        defer { lock.unlock() }
        if let table = cache[identifier] { return table }
        guard let zone = TimeZone(identifier: identifier) else { return nil }
        let table = build(zone)
        cache[identifier] = table
        return table
    }

    private static func build(_ zone: TimeZone) -> OffsetTable {
        let first = Date(timeIntervalSince1970: -2_208_988_800)  // 1900-01-01
        let last = Date(timeIntervalSince1970: 7_258_118_400)  // 2200-01-01
        var starts: [Int64] = [Int64.min]
        var offsets: [Int32] = [Int32(zone.secondsFromGMT(for: first))]
        var cursor = first
        while let transition = zone.nextDaylightSavingTimeTransition(after: cursor), transition < last {
            let offset = Int32(zone.secondsFromGMT(for: transition))
            if offset != offsets[offsets.count - 1] {
                starts.append(Int64(transition.timeIntervalSince1970.rounded(.down)))
                offsets.append(offset)
            }
            cursor = transition
        }
        return OffsetTable(starts: starts, offsets: offsets)
    }
}

extension LocalTime {
    /// 0 = Sunday ... 6 = Saturday.
    public var weekday: Int { CivilCalendar.weekday(dayNumber: CivilCalendar.dayNumber(year: year, month: month, day: day)) }
}

extension CronTimeZone {
    /// The instants in `range` where the UTC offset changes, with the offsets before and after.
    public func transitions(in range: Range<Date>) -> [(date: Date, offsetBefore: Int, offsetAfter: Int)] {
        let low = Int64(range.lowerBound.timeIntervalSince1970.rounded(.down))
        let high = Int64(range.upperBound.timeIntervalSince1970.rounded(.up))
        var result: [(date: Date, offsetBefore: Int, offsetAfter: Int)] = []
        var i = max(1, table.interval(containing: low))
        while i < table.starts.count, table.starts[i] < high {
            if table.starts[i] >= low {
                result.append(
                    (Date(timeIntervalSince1970: TimeInterval(table.starts[i])), Int(table.offsets[i - 1]),
                     Int(table.offsets[i])))
            }
            i += 1
        }
        return result
    }
}

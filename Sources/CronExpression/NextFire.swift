import Foundation

/// One fire of a schedule: the instant, and whether DST moved or repeated it.
public struct CronFire: Sendable, Hashable {
    /// The instant to fire at (compare instants, never wall times).
    public var date: Date
    /// How a DST change shaped this fire.
    public var adjustment: DSTAdjustment
}

/// How a daylight-saving change shaped one fire (rules D11 and D12 of docs/cron-syntax.md).
public enum DSTAdjustment: Sendable, Hashable {
    /// An ordinary fire.
    case none
    /// A fixed job's wall time did not exist (spring forward): it fires once at the first instant after the gap.
    /// `nominal` is the first skipped wall time; `coalesced` counts the skipped wall times merged into this fire.
    case shiftedFromGap(nominal: LocalTime, coalesced: Int)
    /// The wall time occurs twice (fall back); a fixed job fires at this first pass only.
    case firstOfRepeatedTime
    /// The wall time occurs twice; a wildcard job fires at both passes and this is the first.
    case repeatedTimeFirstPass
    /// The wall time occurs twice; a wildcard job fires at both passes and this is the second.
    case repeatedTimeSecondPass
}

extension CronExpression {
    /// The horizon of every search (D15): no fire more than this many years after the start means "never".
    public static let horizonYears = 50

    /// The first fire instant strictly after `date` in `zone` (D13), or nil if none within 50 years.
    public func nextDate(after date: Date, in zone: CronTimeZone = .utc) -> Date? {
        var search = FireSearch(expression: self, table: zone.table, after: date)
        return search.next(annotate: false).map { Date(timeIntervalSince1970: TimeInterval($0.instant)) }
    }

    /// Like `nextDate(after:in:)`, with the DST adjustment of that fire.
    public func nextFire(after date: Date, in zone: CronTimeZone = .utc) -> CronFire? {
        var search = FireSearch(expression: self, table: zone.table, after: date)
        return search.next(annotate: true).map {
            CronFire(date: Date(timeIntervalSince1970: TimeInterval($0.instant)), adjustment: $0.adjustment)
        }
    }

    /// Successive fires strictly after `date`, each strictly after the one before.
    public func fires(after date: Date, in zone: CronTimeZone = .utc) -> CronFireSequence {
        CronFireSequence(search: FireSearch(expression: self, table: zone.table, after: date))
    }
}

/// Successive fires of one expression in one zone; iterating is the cheap way to get many.
public struct CronFireSequence: Sequence, IteratorProtocol, Sendable {
    var search: FireSearch

    public mutating func next() -> CronFire? {
        search.next(annotate: true).map {
            CronFire(date: Date(timeIntervalSince1970: TimeInterval($0.instant)), adjustment: $0.adjustment)
        }
    }

    /// The next fire instant only, skipping the DST annotation.
    public mutating func nextDate() -> Date? {
        search.next(annotate: false).map { Date(timeIntervalSince1970: TimeInterval($0.instant)) }
    }
}

/// The search state: the next instant to consider (whole Unix seconds) and the offset interval it lies in.
struct FireSearch: Sendable {
    let expression: CronExpression
    let table: OffsetTable
    private(set) var cursor: Int64
    private var interval: Int
    private var finished = false

    init(expression: CronExpression, table: OffsetTable, after date: Date) {
        self.expression = expression
        self.table = table
        let seconds = date.timeIntervalSince1970.rounded(.down)
        // Clamp to ±10^12 s (tens of thousands of years) so that Int64 math never overflows.
        cursor = Int64(max(-1e12, min(1e12, seconds))) + 1
        interval = table.isFixed ? 0 : table.interval(containing: cursor)
    }

    @inline(__always)
    private static func ceilToMinute(_ seconds: Int64) -> Int64 {
        CivilCalendar.floorDivide(seconds + 59, 60) * 60
    }

    /// The next fire at or after `cursor`, advancing the cursor past it.
    mutating func next(annotate: Bool) -> (instant: Int64, adjustment: DSTAdjustment)? {
        guard !finished else { return nil }
        guard let found = find(annotate: annotate) else {
            finished = true
            return nil
        }
        cursor = found.instant + 1
        return found
    }

    private mutating func find(annotate: Bool) -> (instant: Int64, adjustment: DSTAdjustment)? {
        let start = cursor
        let starts = table.starts
        let offsets = table.offsets
        var i = interval
        while table.end(of: i) <= start { i += 1 }
        let limitYear =
            CivilCalendar.date(
                fromDayNumber: Int(CivilCalendar.floorDivide(start + Int64(offsets[i]), 86_400))
            ).year + CronExpression.horizonYears
        let wildcard = expression.isWildcardForDST

        while true {
            let intervalStart = starts[i]
            let intervalEnd = table.end(of: i)
            let offset = Int64(offsets[i])
            let previousOffset = i > 0 ? Int64(offsets[i - 1]) : offset

            // D11: a fixed job whose wall time fell into the gap that opens this interval fires at its start.
            if !wildcard, offset > previousOffset, intervalStart >= start {
                let gapLow = Self.ceilToMinute(intervalStart + previousOffset)
                let gapHigh = intervalStart + offset
                if let nominal = expression.nextMatch(atOrAfter: gapLow, limitYear: limitYear), nominal < gapHigh {
                    interval = i
                    guard annotate else { return (intervalStart, .none) }
                    var count = 1
                    var probe = nominal + 60
                    while let more = expression.nextMatch(atOrAfter: probe, limitYear: limitYear), more < gapHigh {
                        count += 1
                        probe = more + 60
                    }
                    return (intervalStart, .shiftedFromGap(nominal: LocalTime(wallSeconds: nominal), coalesced: count))
                }
            }

            var low = max(start, intervalStart) + offset
            // D12: a fixed job already had its chance at wall times repeated from the previous interval.
            if !wildcard, previousOffset > offset { low = max(low, intervalStart + previousOffset) }
            low = Self.ceilToMinute(low)
            let highWall = intervalEnd == Int64.max ? Int64.max : intervalEnd + offset
            if low < highWall {
                guard let wall = expression.nextMatch(atOrAfter: low, limitYear: limitYear) else { return nil }
                if wall < highWall {
                    interval = i
                    guard annotate else { return (wall - offset, .none) }
                    return (wall - offset, adjustment(wall: wall, interval: i, wildcard: wildcard))
                }
            }
            guard i + 1 < starts.count else { return nil }
            i += 1
        }
    }

    private func adjustment(wall: Int64, interval i: Int, wildcard: Bool) -> DSTAdjustment {
        let offset = Int64(table.offsets[i])
        if i + 1 < table.starts.count {
            let nextOffset = Int64(table.offsets[i + 1])
            if nextOffset < offset, wall >= table.starts[i + 1] + nextOffset {
                return wildcard ? .repeatedTimeFirstPass : .firstOfRepeatedTime
            }
        }
        if i > 0, wildcard {
            let previousOffset = Int64(table.offsets[i - 1])
            if previousOffset > offset, wall < table.starts[i] + previousOffset { return .repeatedTimeSecondPass }
        }
        return .none
    }
}

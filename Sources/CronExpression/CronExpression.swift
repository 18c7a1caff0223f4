/// A parsed cron schedule: which wall-clock minutes match, and how the schedule behaves across DST changes.
///
/// Semantics are Debian cron's (vixie cron 3.0pl1) with strict errors where Debian silently misbehaves, plus the
/// `L`, `LW`, `nL`, `n#k` and hashed `H` extensions; see `docs/cron-syntax.md`. The value is small (a few machine
/// words, no heap) so that a daemon can hold 100,000 of them. Parse with `CronExpression(_:hashSeed:)`.
public struct CronExpression: Sendable, Hashable {
    /// Bit n set: minute n matches.
    public internal(set) var minutes: UInt64
    /// Bit n set: hour n matches.
    public internal(set) var hours: UInt32
    /// Bit n set: day n of the month matches (bits 1...31).
    public internal(set) var daysOfMonth: UInt32
    /// Bit n set: month n matches (bits 1...12).
    public internal(set) var months: UInt16
    /// Bit n set: weekday n matches (0 = Sunday ... 6 = Saturday; 7 is folded into 0).
    public internal(set) var daysOfWeek: UInt8
    /// `nL` items: bit n set means "the last weekday n of the month".
    public internal(set) var lastWeekdays: UInt8
    /// `n#k` items: bit `(k - 1) * 8 + n` set means "the k-th weekday n of the month".
    public internal(set) var nthWeekdays: UInt64
    var flags: Flags

    struct Flags: OptionSet, Hashable, Sendable {
        let rawValue: UInt8
        /// The minute field's text starts with `*` (a wildcard job for DST, D11).
        static let minuteStar = Flags(rawValue: 1 << 0)
        /// The hour field's text starts with `*`.
        static let hourStar = Flags(rawValue: 1 << 1)
        /// The day-of-month field's text starts with `*` (Debian's day rule, D7).
        static let dayOfMonthStar = Flags(rawValue: 1 << 2)
        /// The day-of-week field's text starts with `*`.
        static let dayOfWeekStar = Flags(rawValue: 1 << 3)
        /// `L`: the last day of the month.
        static let lastDayOfMonth = Flags(rawValue: 1 << 4)
        /// `LW`: the last weekday (Monday to Friday) of the month.
        static let lastWeekdayOfMonth = Flags(rawValue: 1 << 5)
        /// The month field's text starts with `*` (kept for the normalized form only).
        static let monthStar = Flags(rawValue: 1 << 6)
    }

    /// Whether DST treats this as a wildcard job (minute or hour field starts with `*`): it skips wall times
    /// that do not exist and fires at every real instant of a repeated wall time (D11, D12). Otherwise the job is
    /// fixed: a nonexistent wall time fires once right after the gap, a repeated one only at its first pass.
    public var isWildcardForDST: Bool { !flags.isDisjoint(with: [.minuteStar, .hourStar]) }

    /// Debian's day rule (D7): when either day field starts with `*`, a day must match both; otherwise either.
    public var requiresBothDayFields: Bool { !flags.isDisjoint(with: [.dayOfMonthStar, .dayOfWeekStar]) }

    /// Parses a 5-field expression or a macro. `hashSeed` (the job name) is required when the text uses `H`.
    public init(_ text: String, hashSeed: String? = nil) throws(CronParseError) {
        self = try CronParser(text: text, hashSeed: hashSeed).parse().expression
    }

    /// Parses and also returns warnings about surprising but valid forms (Debian's day rule).
    public static func parseWithWarnings(_ text: String, hashSeed: String? = nil) throws(CronParseError)
        -> (expression: CronExpression, warnings: [CronWarning])
    {
        try CronParser(text: text, hashSeed: hashSeed).parse()
    }

    init() {
        minutes = 0
        hours = 0
        daysOfMonth = 0
        months = 0
        daysOfWeek = 0
        lastWeekdays = 0
        nthWeekdays = 0
        flags = []
    }

    /// The matching days of one month as bits 1...31, after Debian's day rule.
    @inline(__always)
    func dayMask(year: Int, month: Int) -> UInt32 {
        let length = CivilCalendar.daysInMonth(year: year, month: month)
        let monthBits: UInt32 = (UInt32.max >> (31 - length)) & ~1  // bits 1...length
        let firstWeekday = CivilCalendar.weekday(dayNumber: CivilCalendar.dayNumber(year: year, month: month, day: 1))

        var byDayOfMonth = daysOfMonth
        if flags.contains(.lastDayOfMonth) { byDayOfMonth |= 1 << UInt32(length) }
        if flags.contains(.lastWeekdayOfMonth) {
            let lastWeekday = (firstWeekday + length - 1) % 7
            let back = lastWeekday == 6 ? 1 : lastWeekday == 0 ? 2 : 0
            byDayOfMonth |= 1 << UInt32(length - back)
        }

        // Rotate the weekday set so bit i means "day i + 1 of this month", then repeat it over five weeks.
        let weekdays = UInt32(daysOfWeek)
        let rotated = ((weekdays >> UInt32(firstWeekday)) | (weekdays << UInt32(7 - firstWeekday))) & 0x7F
        var byDayOfWeek = (rotated | rotated << 7 | rotated << 14 | rotated << 21 | rotated << 28) << 1
        if lastWeekdays != 0 || nthWeekdays != 0 {
            byDayOfWeek |= extendedWeekdayMask(length: length, firstWeekday: firstWeekday)
        }

        let combined =
            requiresBothDayFields ? (byDayOfMonth & byDayOfWeek) : (byDayOfMonth | byDayOfWeek)
        return combined & monthBits
    }

    private func extendedWeekdayMask(length: Int, firstWeekday: Int) -> UInt32 {
        var mask: UInt32 = 0
        for weekday in 0..<7 {
            let firstDay = 1 + (weekday - firstWeekday + 7) % 7
            if lastWeekdays & (1 << UInt8(weekday)) != 0 {
                mask |= 1 << UInt32(firstDay + (length - firstDay) / 7 * 7)
            }
            for k in 0..<5 where nthWeekdays & (1 << UInt64(k * 8 + weekday)) != 0 {
                let day = firstDay + 7 * k
                if day <= length { mask |= 1 << UInt32(day) }
            }
        }
        return mask
    }

    /// Whether the wall-clock minute matches (ignoring DST: a plain calendar test).
    public func matches(year: Int, month: Int, day: Int, hour: Int, minute: Int) -> Bool {
        guard (1...12).contains(month), (1...31).contains(day), (0...23).contains(hour), (0...59).contains(minute)
        else { return false }
        return months & (1 << UInt16(month)) != 0
            && dayMask(year: year, month: month) & (1 << UInt32(day)) != 0
            && hours & (1 << UInt32(hour)) != 0
            && minutes & (1 << UInt64(minute)) != 0
    }

    /// The first matching wall-clock minute at or after `wall` (seconds of local time since 1970-01-01T00:00,
    /// a multiple of 60), or nil if none before `limitYear` ends.
    @inline(__always)
    func nextMatch(atOrAfter wall: Int64, limitYear: Int) -> Int64? {
        let dayNumber = CivilCalendar.floorDivide(wall, 86_400)
        let secondOfDay = Int(wall - dayNumber * 86_400)
        var hour = secondOfDay / 3600
        var minute = (secondOfDay % 3600) / 60
        var (year, month, day) = CivilCalendar.date(fromDayNumber: Int(dayNumber))
        var cachedMonthKey = -1
        var cachedDays: UInt32 = 0

        while true {
            if months & (1 << UInt16(month)) == 0 {
                let later = months & (UInt16.max << UInt16(month + 1))
                if later == 0 {
                    year += 1
                    month = months.trailingZeroBitCount
                } else {
                    month = later.trailingZeroBitCount
                }
                if year > limitYear { return nil }
                day = 1
                hour = 0
                minute = 0
            }
            let monthKey = year &* 16 &+ month
            if monthKey != cachedMonthKey {
                cachedDays = dayMask(year: year, month: month)
                cachedMonthKey = monthKey
            }
            let candidateDays = day > 31 ? 0 : cachedDays & (UInt32.max << UInt32(day))
            if candidateDays == 0 {
                if month == 12 {
                    year += 1
                    month = 1
                    if year > limitYear { return nil }
                } else {
                    month += 1
                }
                day = 1
                hour = 0
                minute = 0
                continue
            }
            let nextDay = candidateDays.trailingZeroBitCount
            if nextDay != day {
                day = nextDay
                hour = 0
                minute = 0
            }
            let candidateHours = hour > 23 ? 0 : hours & (UInt32.max << UInt32(hour))
            if candidateHours == 0 {
                day += 1
                hour = 0
                minute = 0
                continue
            }
            let nextHour = candidateHours.trailingZeroBitCount
            if nextHour != hour {
                hour = nextHour
                minute = 0
            }
            let candidateMinutes = minute > 59 ? 0 : minutes & (UInt64.max << UInt64(minute))
            if candidateMinutes == 0 {
                hour += 1
                minute = 0
                continue
            }
            minute = candidateMinutes.trailingZeroBitCount
            let days = Int64(CivilCalendar.dayNumber(year: year, month: month, day: day))
            return days * 86_400 + Int64(hour * 3600 + minute * 60)
        }
    }
}

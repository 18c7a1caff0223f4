import Foundation

extension CronExpression {
    /// The canonical 5-field text: numbers instead of names, sorted, runs compressed (`1-5`, `0-45/15`), and
    /// every field's leading `*` kept, since it decides Debian's day rule and the DST class. Parsing the result
    /// gives back an equal expression (a fixed point), and macros normalize to their 5-field form.
    public var normalized: String {
        var fields: [String] = []
        fields.append(Self.render(values(minutes, 0...59), star: flags.contains(.minuteStar), field: .minute))
        fields.append(Self.render(values(UInt64(hours), 0...23), star: flags.contains(.hourStar), field: .hour))
        var dayOfMonth = Self.render(
            values(UInt64(daysOfMonth), 1...31), star: flags.contains(.dayOfMonthStar), field: .dayOfMonth)
        for (present, item) in [
            (flags.contains(.lastDayOfMonth), "L"), (flags.contains(.lastWeekdayOfMonth), "LW"),
        ] where present {
            dayOfMonth = dayOfMonth.isEmpty ? item : dayOfMonth + "," + item
        }
        fields.append(dayOfMonth)
        fields.append(Self.render(values(UInt64(months), 1...12), star: flags.contains(.monthStar), field: .month))
        var dayOfWeek = Self.render(
            values(UInt64(daysOfWeek), 0...6), star: flags.contains(.dayOfWeekStar), field: .dayOfWeek)
        var extras: [String] = []
        for weekday in 0..<7 where lastWeekdays & (1 << UInt8(weekday)) != 0 { extras.append("\(weekday)L") }
        for k in 0..<5 {
            for weekday in 0..<7 where nthWeekdays & (1 << UInt64(k * 8 + weekday)) != 0 {
                extras.append("\(weekday)#\(k + 1)")
            }
        }
        for item in extras { dayOfWeek = dayOfWeek.isEmpty ? item : dayOfWeek + "," + item }
        fields.append(dayOfWeek)
        return fields.joined(separator: " ")
    }

    func values(_ mask: UInt64, _ range: ClosedRange<Int>) -> [Int] {
        range.filter { mask & (1 << UInt64($0)) != 0 }
    }

    /// The values a `*/step` item produces in `field` (day-of-week's 7 folded into 0).
    static func starProgression(_ field: CronField, step: Int) -> Set<Int> {
        Set(stride(from: field.lowerBound, through: field.upperBound, by: step).map { field == .dayOfWeek ? $0 % 7 : $0 })
    }

    private static func render(_ values: [Int], star: Bool, field: CronField) -> String {
        guard star else { return compress(values) }
        let set = Set(values)
        let span = field.upperBound - field.lowerBound
        for step in 1...span {
            let progression = starProgression(field, step: step)
            guard progression.isSubset(of: set) else { continue }
            let head = step == 1 ? "*" : "*/\(step)"
            let rest = compress(values.filter { !progression.contains($0) })
            return rest.isEmpty ? head : head + "," + rest
        }
        return compress(values)  // unreachable for parsed input: a `*` field always holds its progression
    }

    /// Sorted values as items: runs of three or more with one step become `a-b` or `a-b/s`.
    static func compress(_ values: [Int]) -> String {
        compressedRuns(values).map { run in
            switch run.count {
            case 1: "\(run.first)"
            case _ where run.step == 1: "\(run.first)-\(run.last)"
            default: "\(run.first)-\(run.last)/\(run.step)"
            }
        }.joined(separator: ",")
    }

    struct Run {
        var first: Int
        var last: Int
        var step: Int
        var count: Int
    }

    static func compressedRuns(_ values: [Int]) -> [Run] {
        var runs: [Run] = []
        var i = 0
        while i < values.count {
            if i + 2 < values.count {
                let step = values[i + 1] - values[i]
                var j = i + 1
                while j + 1 < values.count && values[j + 1] - values[j] == step { j += 1 }
                if j - i + 1 >= 3 {
                    runs.append(Run(first: values[i], last: values[j], step: step, count: j - i + 1))
                    i = j + 1
                    continue
                }
            }
            runs.append(Run(first: values[i], last: values[i], step: 1, count: 1))
            i += 1
        }
        return runs
    }
}

/// Text forms of instants for people and scripts.
public enum CronFormat {
    /// ISO 8601 with the zone's UTC offset at that instant: `2024-03-10T03:00:00-04:00`.
    public static func iso8601(_ date: Date, in zone: CronTimeZone) -> String {
        let offset = zone.secondsFromGMT(for: date)
        let local = zone.localTime(of: date)
        func pad(_ n: Int, _ width: Int = 2) -> String {
            let text = String(n)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        let sign = offset < 0 ? "-" : "+"
        let magnitude = abs(offset)
        var zoneText = "\(sign)\(pad(magnitude / 3600)):\(pad(magnitude % 3600 / 60))"
        if magnitude % 60 != 0 { zoneText += ":\(pad(magnitude % 60))" }
        return "\(pad(local.year, 4))-\(pad(local.month))-\(pad(local.day))T\(pad(local.hour)):\(pad(local.minute)):"
            + "\(pad(local.second))\(zoneText)"
    }
}

extension CronFormat {
    /// Parses `2024-03-10T01:30:00Z`, `...+08:00`, or a wall time without offset (`2024-03-10T01:30` or
    /// `2024-03-10 01:30:00`), which is read in `zone` at its first occurrence. Nil when malformed.
    public static func parseInstant(_ text: String, in zone: CronTimeZone) -> Date? {
        var bytes = Array(text.utf8)
        var offsetSeconds: Int?
        if bytes.last == UInt8(ascii: "Z") || bytes.last == UInt8(ascii: "z") {
            offsetSeconds = 0
            bytes.removeLast()
        } else if bytes.count >= 6, bytes[bytes.count - 3] == UInt8(ascii: ":"),
            bytes[bytes.count - 6] == UInt8(ascii: "+") || bytes[bytes.count - 6] == UInt8(ascii: "-")
        {
            let sign = bytes[bytes.count - 6] == UInt8(ascii: "-") ? -1 : 1
            guard let hours = Int(String(decoding: bytes[(bytes.count - 5)..<(bytes.count - 3)], as: UTF8.self)),
                let minutes = Int(String(decoding: bytes[(bytes.count - 2)...], as: UTF8.self)),
                hours <= 23, minutes <= 59
            else { return nil }
            offsetSeconds = sign * (hours * 3600 + minutes * 60)
            bytes.removeLast(6)
        }
        let parts = String(decoding: bytes, as: UTF8.self).split(whereSeparator: { $0 == "T" || $0 == " " })
        guard (1...2).contains(parts.count) else { return nil }
        let date = parts[0].split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
        let time = parts.count == 2 ? parts[1].split(separator: ":", omittingEmptySubsequences: false).map { Int($0) } : [0, 0]
        guard date.count == 3, (2...3).contains(time.count), let year = date[0], let month = date[1],
            let day = date[2], let hour = time[0], let minute = time[1], let second = time.count == 3 ? time[2] : 0,
            (1...12).contains(month), (1...CivilCalendar.daysInMonth(year: year, month: month)).contains(day),
            (0...23).contains(hour), (0...59).contains(minute), (0...59).contains(second)
        else { return nil }
        let wall = Int64(CivilCalendar.dayNumber(year: year, month: month, day: day)) * 86_400
            + Int64(hour * 3600 + minute * 60 + second)
        if let offsetSeconds { return Date(timeIntervalSince1970: TimeInterval(wall - Int64(offsetSeconds))) }
        // A wall time: the first instant whose local time is at or after it (a time in a gap maps past the gap).
        let table = zone.table
        for i in 0..<table.starts.count {
            let offset = Int64(table.offsets[i])
            let instant = max(wall - offset, table.starts[i])
            if instant < table.end(of: i) && instant + offset >= wall {
                return Date(timeIntervalSince1970: TimeInterval(instant))
            }
        }
        return nil
    }
}

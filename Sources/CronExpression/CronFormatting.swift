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

extension CronExpression {
    /// A plain-English description: `at 01:00 every day`,
    /// `every 15 minutes from 0 through 45 past hours 9-17 on Monday through Friday`.
    public var englishDescription: String {
        let time = timePhrase
        var day = dayPhrase
        // "every day" reads well after clock times ("at 01:00 every day"), not after "every 15 minutes".
        if day == "every day" && !time.hasPrefix("at ") || time.hasPrefix("at minute") && day == "every day" {
            day = ""
        }
        return [time, day, monthPhrase].filter { !$0.isEmpty }.joined(separator: " ")
    }

    private var timePhrase: String {
        let minuteValues = values(minutes, 0...59)
        let hourValues = values(UInt64(hours), 0...23)
        if minuteValues.count == 1, hourValues.count <= 4 {
            let times = hourValues.map { Self.twoDigits($0) + ":" + Self.twoDigits(minuteValues[0]) }
            return "at " + Self.list(times)
        }
        let minutePart: String
        let runs = Self.compressedRuns(minuteValues)
        if minuteValues.count == 60 {
            minutePart = "every minute"
        } else if runs.count == 1, let run = runs.first, run.count >= 3 {
            let every = run.step == 1 ? "every minute" : "every \(run.step) minutes"
            let coversHour = run.first == 0 && run.last + run.step > 59
            minutePart = coversHour ? every : "\(every) from \(run.first) through \(run.last)"
        } else if minuteValues.count == 1 {
            minutePart = "at minute \(minuteValues[0])"
        } else {
            minutePart = "at minutes " + Self.list(minuteValues.map(String.init))
        }
        if hourValues.count == 24 {
            return minuteValues.count == 60 ? minutePart : minutePart + " past every hour"
        }
        let hourRuns = Self.compressedRuns(hourValues)
        if hourRuns.count == 1, let run = hourRuns.first, run.count >= 3, run.step > 1, run.first < run.step,
            run.last + run.step > 23
        {
            return minutePart + " past every \(run.step) hours"
        }
        if hourValues.count == 1 { return minutePart + " past hour \(hourValues[0])" }
        return minutePart + " past hours " + Self.list(hourRuns.flatMap(Self.itemsOf))
    }

    private var dayPhrase: String {
        let allDays: UInt32 = 0xFFFF_FFFE
        let everyDayOfMonth =
            daysOfMonth == allDays && flags.contains(.dayOfMonthStar)
        let everyDayOfWeek =
            daysOfWeek == 0x7F && flags.contains(.dayOfWeekStar)
        switch (everyDayOfMonth, everyDayOfWeek) {
        case (true, true): return "every day"
        case (false, true): return dayOfMonthPhrase
        case (true, false): return dayOfWeekPhrase
        case (false, false):
            if requiresBothDayFields {
                return dayOfMonthPhrase + " if it is also " + dayOfWeekPhrase.dropFirst("on ".count)
            }
            return dayOfMonthPhrase + " or " + dayOfWeekPhrase
        }
    }

    private var dayOfMonthPhrase: String {
        var parts: [String] = []
        let days = values(UInt64(daysOfMonth), 1...31)
        let runs = Self.compressedRuns(days)
        if flags.contains(.dayOfMonthStar), runs.count == 1, let run = runs.first, run.step > 1, run.first == 1 {
            parts.append("every \(Self.numericOrdinal(run.step)) day of the month")
        } else if days.count == 1 {
            parts.append("day \(days[0]) of the month")
        } else if !days.isEmpty {
            parts.append("days " + Self.list(runs.flatMap(Self.itemsOf)) + " of the month")
        }
        if flags.contains(.lastDayOfMonth) { parts.append("the last day of the month") }
        if flags.contains(.lastWeekdayOfMonth) { parts.append("the last weekday of the month") }
        return "on " + Self.list(parts)
    }

    private var dayOfWeekPhrase: String {
        var parts: [String] = []
        let weekdays = values(UInt64(daysOfWeek), 0...6)
        // Weekday runs read better starting on Monday: Monday through Sunday, Saturday and Sunday.
        let mondayFirst = weekdays.map { $0 == 0 ? 7 : $0 }.sorted()
        for run in Self.compressedRuns(mondayFirst) {
            let name = { (day: Int) in EnglishNames.weekdays[day % 7] }
            if run.step == 1, run.count >= 3 {
                parts.append("\(name(run.first)) through \(name(run.last))")
            } else {
                parts.append(contentsOf: stride(from: run.first, through: run.last, by: run.step).map(name))
            }
        }
        for weekday in 0..<7 where lastWeekdays & (1 << UInt8(weekday)) != 0 {
            parts.append("the last \(EnglishNames.weekdays[weekday]) of the month")
        }
        for k in 0..<5 {
            for weekday in 0..<7 where nthWeekdays & (1 << UInt64(k * 8 + weekday)) != 0 {
                parts.append("the \(Self.ordinal(k + 1)) \(EnglishNames.weekdays[weekday]) of the month")
            }
        }
        return "on " + Self.list(parts)
    }

    private var monthPhrase: String {
        let chosen = values(UInt64(months), 1...12)
        guard chosen.count < 12 else { return "" }
        var parts: [String] = []
        for run in Self.compressedRuns(chosen) {
            if run.step == 1, run.count >= 3 {
                parts.append("\(EnglishNames.months[run.first - 1]) through \(EnglishNames.months[run.last - 1])")
            } else {
                parts.append(
                    contentsOf: stride(from: run.first, through: run.last, by: run.step).map {
                        EnglishNames.months[$0 - 1]
                    })
            }
        }
        return "in " + Self.list(parts)
    }

    private static func itemsOf(_ run: Run) -> [String] {
        if run.step == 1 && run.count >= 3 { return ["\(run.first)-\(run.last)"] }
        return stride(from: run.first, through: run.last, by: run.step).map(String.init)
    }

    static func list(_ items: [String]) -> String {
        switch items.count {
        case 0: ""
        case 1: items[0]
        default: items.dropLast().joined(separator: ", ") + " and " + items[items.count - 1]
        }
    }

    static func twoDigits(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }

    /// `first` ... `fifth`, for `n#k`.
    static func ordinal(_ n: Int) -> String {
        let words = ["", "first", "second", "third", "fourth", "fifth"]
        return n < words.count ? words[n] : numericOrdinal(n)
    }

    /// `2nd`, `11th`, `23rd`, for steps.
    static func numericOrdinal(_ n: Int) -> String {
        let suffix = (11...13).contains(n % 100) ? "th" : ["th", "st", "nd", "rd", "th", "th", "th", "th", "th", "th"][n % 10]
        return "\(n)\(suffix)"
    }
}

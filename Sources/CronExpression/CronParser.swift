/// The hand-written parser behind `CronExpression.init`. Works on ASCII bytes; builds message strings only on
/// the error path so that parsing stays cheap.
struct CronParser {
    let text: String
    let hashSeed: String?

    private static let macros: [(name: String, expansion: String)] = [
        ("yearly", "0 0 1 1 *"), ("annually", "0 0 1 1 *"), ("monthly", "0 0 1 * *"),
        ("weekly", "0 0 * * 0"), ("daily", "0 0 * * *"), ("midnight", "0 0 * * *"), ("hourly", "0 * * * *"),
    ]

    /// The five-field form a macro stands for, or nil when `text` is not a known macro.
    static func expansion(ofMacro text: String) -> String? {
        let name = text.hasPrefix("@") ? String(text.dropFirst()).lowercased() : ""
        return macros.first { $0.name == name }?.expansion
    }

    func parse() throws(CronParseError) -> (expression: CronExpression, warnings: [CronWarning]) {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var column = 1
        for scalar in text.unicodeScalars {
            let value = scalar.value
            guard value == 0x09 || (0x20...0x7E).contains(value) else {
                let hex = String(value, radix: 16, uppercase: true)
                let code = String(repeating: "0", count: max(0, 4 - hex.count)) + hex
                throw CronParseError(
                    field: nil, message: "unexpected character U+\(code) at column \(column)",
                    columns: column..<(column + 1))
            }
            bytes.append(UInt8(value))
            column += 1
        }
        var tokens = Self.splitFields(bytes)
        guard let first = tokens.first else {
            throw CronParseError(field: nil, message: "empty schedule", columns: 1..<(max(bytes.count, 1) + 1))
        }
        let firstText = bytes[first]
        if firstText.starts(with: "CRON_TZ=".utf8) || firstText.starts(with: "TZ=".utf8) {
            throw CronParseError(
                field: nil,
                message: "TZ=/CRON_TZ= prefixes are not accepted in the expression; "
                    + "put a CRON_TZ= line before the job in the schedule file",
                columns: Self.columns(first))
        }
        if firstText.first == UInt8(ascii: "@") {
            let expansion = try macroExpansion(bytes: bytes, tokens: tokens)
            tokens = Self.splitFields(Array(expansion.utf8))
            return (try CronParser(text: expansion, hashSeed: nil).parseFields(Array(expansion.utf8), tokens), [])
        }
        guard tokens.count == 5 else {
            var message =
                "expected 5 fields (minute hour day-of-month month day-of-week), found \(tokens.count)"
            if tokens.count == 6 || tokens.count == 7 {
                message += "; seconds/year fields (Quartz/Spring style) are not supported"
            } else if tokens.count > 7 {
                message += "; give only the schedule, not a command"
            }
            let columns =
                tokens.count > 5
                ? Self.columns(tokens[5].lowerBound..<tokens[tokens.count - 1].upperBound)
                : (bytes.count + 1)..<(bytes.count + 2)
            throw CronParseError(field: nil, message: message, columns: columns)
        }
        let expression = try parseFields(bytes, tokens)
        return (expression, Self.warnings(bytes, tokens, expression))
    }

    // MARK: Macros

    private func macroExpansion(bytes: [UInt8], tokens: [Range<Int>]) throws(CronParseError) -> String {
        let token = tokens[0]
        let name = String(decoding: bytes[(token.lowerBound + 1)..<token.upperBound], as: UTF8.self)
        if name.isEmpty {
            throw CronParseError(
                field: nil, message: "unexpected text after @",
                columns: Self.columns(tokens.count > 1 ? tokens[1] : token))
        }
        let lowered = name.lowercased()
        if lowered == "reboot" {
            throw CronParseError(
                field: nil, message: "@reboot is not supported (snapshot jobs need a calendar schedule)",
                columns: Self.columns(token))
        }
        guard let expansion = Self.macros.first(where: { $0.name == lowered })?.expansion else {
            let message =
                lowered == "every"
                ? "@every is not supported; write a step such as '*/15 * * * *'"
                : "unknown macro '@\(name)' (use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
            throw CronParseError(field: nil, message: message, columns: Self.columns(token))
        }
        if tokens.count > 1 {
            throw CronParseError(
                field: nil, message: "unexpected text after @\(name)",
                columns: Self.columns(tokens[1].lowerBound..<tokens[tokens.count - 1].upperBound))
        }
        return expansion
    }

    // MARK: Fields

    private func parseFields(_ bytes: [UInt8], _ tokens: [Range<Int>]) throws(CronParseError) -> CronExpression {
        var expression = CronExpression()
        for field in CronField.allCases {
            let token = tokens[field.rawValue]
            let parsed = try parseField(field, bytes, token)
            switch field {
            case .minute:
                expression.minutes = parsed.values
                if parsed.star { expression.flags.insert(.minuteStar) }
            case .hour:
                expression.hours = UInt32(truncatingIfNeeded: parsed.values)
                if parsed.star { expression.flags.insert(.hourStar) }
            case .dayOfMonth:
                expression.daysOfMonth = UInt32(truncatingIfNeeded: parsed.values)
                if parsed.star { expression.flags.insert(.dayOfMonthStar) }
                if parsed.lastDay { expression.flags.insert(.lastDayOfMonth) }
                if parsed.lastWeekday { expression.flags.insert(.lastWeekdayOfMonth) }
            case .month:
                expression.months = UInt16(truncatingIfNeeded: parsed.values)
                if parsed.star { expression.flags.insert(.monthStar) }
            case .dayOfWeek:
                // 7 is Sunday: fold bit 7 into bit 0.
                let folded = (parsed.values & 0x7F) | ((parsed.values >> 7) & 1)
                expression.daysOfWeek = UInt8(truncatingIfNeeded: folded)
                expression.lastWeekdays = parsed.lastWeekdays
                expression.nthWeekdays = parsed.nthWeekdays
                if parsed.star { expression.flags.insert(.dayOfWeekStar) }
            }
        }
        try Self.checkFires(expression, bytes, tokens)
        return expression
    }

    private struct ParsedField {
        var values: UInt64 = 0
        var star = false
        var lastDay = false
        var lastWeekday = false
        var lastWeekdays: UInt8 = 0
        var nthWeekdays: UInt64 = 0
    }

    private func parseField(_ field: CronField, _ bytes: [UInt8], _ token: Range<Int>) throws(CronParseError)
        -> ParsedField
    {
        var result = ParsedField()
        result.star = bytes[token.lowerBound] == UInt8(ascii: "*")
        var itemStart = token.lowerBound
        for index in token.lowerBound...token.upperBound {
            guard index == token.upperBound || bytes[index] == UInt8(ascii: ",") else { continue }
            let item = itemStart..<index
            if item.isEmpty {
                let at = index < token.upperBound ? index : index - 1
                throw error(
                    field, "empty list element in '\(string(bytes, token))'", at..<(at + 1))
            }
            try parseItem(field, bytes, item, into: &result)
            itemStart = index + 1
        }
        return result
    }

    private func parseItem(
        _ field: CronField, _ bytes: [UInt8], _ item: Range<Int>, into result: inout ParsedField
    ) throws(CronParseError) {
        let slash = bytes[item].firstIndex(of: UInt8(ascii: "/"))
        let base = item.lowerBound..<(slash ?? item.upperBound)
        let stepText = slash.map { ($0 + 1)..<item.upperBound }
        let baseBytes = bytes[base]

        if baseBytes.elementsEqual("?".utf8) {
            throw error(field, "'?' is Quartz syntax; use '*'", base)
        }
        if baseBytes.isEmpty {
            throw error(field, "empty value", item.lowerBound..<(item.lowerBound + 1))
        }

        // Day-of-month and day-of-week extensions, never with a step.
        if field == .dayOfMonth, let special = try dayOfMonthSpecial(bytes, base), stepText == nil {
            if special == .last { result.lastDay = true } else { result.lastWeekday = true }
            return
        }
        if field == .dayOfWeek, try weekdaySpecial(bytes, base, stepText, into: &result) { return }
        if baseBytes.contains(UInt8(ascii: "#")) {
            throw error(field, "'#' is only allowed in day-of-week ('\(string(bytes, item))')", item)
        }

        let low: Int
        var high: Int
        var stepStartsFromFieldEnd = false
        let hashed = baseBytes.first == UInt8(ascii: "H")
        if baseBytes.elementsEqual("*".utf8) {
            (low, high) = (field.lowerBound, field.upperBound)
        } else if hashed {
            (low, high) = try hashedRange(field, bytes, base, stepped: stepText != nil)
        } else if baseBytes.first == UInt8(ascii: "-") {
            throw error(field, "negative values are not allowed ('\(string(bytes, base))')", base)
        } else if let dash = baseBytes.firstIndex(of: UInt8(ascii: "-")) {
            let left = base.lowerBound..<dash
            let right = (dash + 1)..<base.upperBound
            if bytes[right].contains(UInt8(ascii: "-")) {
                throw error(field, "malformed range '\(string(bytes, base))'", base)
            }
            if right.isEmpty { throw error(field, "empty value", dash..<(dash + 1)) }
            low = try value(field, bytes, left)
            high = try value(field, bytes, right)
            if field == .dayOfWeek && high == 0 && low > 0 { high = 7 }  // `fri-sun` means 5-7
            if low > high {
                let top = field == .dayOfWeek ? 6 : field.upperBound
                let bottom = field.lowerBound
                let upper = low == top ? "\(top)" : "\(low)-\(top)"
                let lower = high == bottom ? "\(bottom)" : "\(bottom)-\(high)"
                throw error(
                    field,
                    "range '\(string(bytes, base))' wraps around (\(low) > \(high)); "
                        + "wrap-around ranges are not supported, write '\(upper),\(lower)'",
                    base)
            }
        } else {
            low = try value(field, bytes, base)
            high = low
            stepStartsFromFieldEnd = true
        }

        var step = 1
        if let stepText {
            step = try stepValue(field, bytes, stepText)
            if stepStartsFromFieldEnd { high = field.upperBound }  // `N/s` means `N-max/s`
            let span = field.upperBound - field.lowerBound
            if step > span {
                throw error(
                    field,
                    "step \(step) is larger than the field span (\(field.lowerBound)-\(field.upperBound)); "
                        + "'\(string(bytes, item))' would match only \(low)",
                    stepText)
            }
        }
        var start = low
        if hashed, stepText != nil {
            start = low + Int(hash(for: field) % UInt64(step))
        } else if hashed {
            start = low + Int(hash(for: field) % UInt64(high - low + 1))
            high = start
        }
        var v = start
        while v <= high {
            result.values |= 1 << UInt64(v)
            v += step
        }
    }

    private enum DayOfMonthSpecial { case last, lastWeekday }

    private func dayOfMonthSpecial(_ bytes: [UInt8], _ base: Range<Int>) throws(CronParseError)
        -> DayOfMonthSpecial?
    {
        let upper = bytes[base].map { $0 & ~0x20 }  // ASCII upper case
        if upper.elementsEqual("L".utf8) { return .last }
        if upper.elementsEqual("LW".utf8) { return .lastWeekday }
        if upper.first == UInt8(ascii: "L"), upper.count > 1, bytes[base.lowerBound + 1] == UInt8(ascii: "-") {
            throw error(.dayOfMonth, "'L-n' (offset from last day) is not supported", base)
        }
        if upper.last == UInt8(ascii: "W"), upper.count > 1, bytes[base.lowerBound].isDigit {
            throw error(
                .dayOfMonth, "'\(string(bytes, base))' (nearest weekday, 'W') is not supported", base)
        }
        return nil
    }

    /// `nL` and `n#k`; returns true when the item was one of them.
    private func weekdaySpecial(
        _ bytes: [UInt8], _ base: Range<Int>, _ stepText: Range<Int>?, into result: inout ParsedField
    ) throws(CronParseError) -> Bool {
        if let hashIndex = bytes[base].firstIndex(of: UInt8(ascii: "#")) {
            let left = base.lowerBound..<hashIndex
            let right = (hashIndex + 1)..<base.upperBound
            if left.isEmpty { throw error(.dayOfWeek, "empty value", base) }
            let ordinal = bytes[right]
            guard ordinal.count == 1, let digit = ordinal.first, (UInt8(ascii: "1")...UInt8(ascii: "5")).contains(digit),
                stepText == nil
            else {
                let item = base.lowerBound..<(stepText?.upperBound ?? base.upperBound)
                throw error(.dayOfWeek, "'#' must be followed by 1-5 in '\(string(bytes, item))'", item)
            }
            let weekday = try value(.dayOfWeek, bytes, left) % 7
            let k = Int(digit - UInt8(ascii: "1"))
            result.nthWeekdays |= 1 << UInt64(k * 8 + weekday)
            return true
        }
        let last = bytes[base.upperBound - 1]
        guard base.count >= 2, last == UInt8(ascii: "L") || last == UInt8(ascii: "l") else { return false }
        let left = base.lowerBound..<(base.upperBound - 1)
        // Only a lone value before L (`5L`, `friL`); anything else is an ordinary (bad) token.
        guard bytes[left].allSatisfy({ $0.isDigit }) || bytes[left].allSatisfy({ $0.isLetter }) else { return false }
        if bytes[left].allSatisfy({ $0.isLetter }), CronField.dayOfWeek.names.contains(lowercased(bytes, base)) {
            return false  // a name that happens to end in l; none do today, but keep names first
        }
        if let stepText {
            throw error(.dayOfWeek, "'L' cannot take a step", stepText)
        }
        let weekday = try value(.dayOfWeek, bytes, left) % 7
        result.lastWeekdays |= 1 << UInt8(weekday)
        return true
    }

    private func hashedRange(_ field: CronField, _ bytes: [UInt8], _ base: Range<Int>, stepped: Bool)
        throws(CronParseError) -> (Int, Int)
    {
        guard hashSeed?.isEmpty == false else {
            throw error(field, "'H' needs a job name to hash (give the job a name, or --job NAME)", base)
        }
        if base.count == 1 {
            switch field {
            case .dayOfMonth: return stepped ? (1, 31) : (1, 28)
            case .dayOfWeek: return (0, 6)
            default: return (field.lowerBound, field.upperBound)
            }
        }
        let inner = (base.lowerBound + 2)..<(base.upperBound - 1)
        guard base.count > 3, bytes[base.lowerBound + 1] == UInt8(ascii: "("),
            bytes[base.upperBound - 1] == UInt8(ascii: ")"),
            let dash = bytes[inner].firstIndex(of: UInt8(ascii: "-"))
        else {
            throw error(field, "malformed hash '\(string(bytes, base))' (use H, H(a-b), H/s or H(a-b)/s)", base)
        }
        let low = try value(field, bytes, inner.lowerBound..<dash)
        let high = try value(field, bytes, (dash + 1)..<inner.upperBound)
        guard low <= high else {
            throw error(field, "range in '\(string(bytes, base))' must go upwards (\(low) > \(high))", base)
        }
        return (low, field == .dayOfWeek && high == 7 && low > 0 ? 7 : high)
    }

    /// The documented hash (docs/cron-syntax.md): FNV-1a 64 over the job name's UTF-8 bytes, a 0 byte and the
    /// field number (0 = minute ... 4 = day-of-week), then the SplitMix64 finalizer to spread the bits.
    func hash(for field: CronField) -> UInt64 {
        Self.hash(seed: hashSeed ?? "", field: field)
    }

    static func hash(seed: String, field: CronField) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in seed.utf8 + [0, UInt8(field.rawValue)] {
            h ^= UInt64(byte)
            h = h &* 0x0000_0100_0000_01B3
        }
        h = (h ^ (h >> 30)) &* 0xbf58_476d_1ce4_e5b9
        h = (h ^ (h >> 27)) &* 0x94d0_49bb_1331_11eb
        return h ^ (h >> 31)
    }

    private func stepValue(_ field: CronField, _ bytes: [UInt8], _ range: Range<Int>) throws(CronParseError) -> Int {
        let text = bytes[range]
        guard !text.isEmpty, text.count <= 6, text.allSatisfy({ $0.isDigit }), let step = Int(string(bytes, range)),
            step > 0
        else {
            throw error(field, "step must be a positive integer, got '\(string(bytes, range))'", range.isEmpty
                ? (range.lowerBound - 1)..<range.lowerBound : range)
        }
        return step
    }

    /// A number or a three-letter name, range-checked.
    private func value(_ field: CronField, _ bytes: [UInt8], _ range: Range<Int>) throws(CronParseError) -> Int {
        let text = bytes[range]
        if text.isEmpty { throw error(field, "empty value", range.lowerBound..<(range.lowerBound + 1)) }
        if text.allSatisfy({ $0.isDigit }) {
            let number = text.count > 9 ? Int.max : text.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
            guard (field.lowerBound...field.upperBound).contains(number) else {
                throw error(
                    field,
                    "value \(text.count > 9 ? string(bytes, range) : String(number)) out of range "
                        + "\(field.lowerBound)-\(field.upperBound)",
                    range)
            }
            return number
        }
        if text.allSatisfy({ $0.isLetter }) {
            let names = field.names
            if names.isEmpty {
                throw error(field, "names are not allowed in this field ('\(string(bytes, range))')", range)
            }
            guard let index = names.firstIndex(of: lowercased(bytes, range)) else {
                throw error(
                    field,
                    "unknown name '\(string(bytes, range))' (use 3-letter names \(names[0])..\(names[names.count - 1]))",
                    range)
            }
            return index + field.lowerBound
        }
        throw error(field, "'\(string(bytes, range))' is not a number", range)
    }

    // MARK: Whole-expression checks

    /// D14: reject schedules that can never fire, with the reason when it is the common day/month mismatch.
    private static func checkFires(_ expression: CronExpression, _ bytes: [UInt8], _ tokens: [Range<Int>])
        throws(CronParseError)
    {
        let plainDayOfWeek = expression.daysOfWeek == 0x7F && expression.lastWeekdays == 0
            && expression.nthWeekdays == 0
        if expression.requiresBothDayFields, plainDayOfWeek,
            !expression.flags.contains(.lastDayOfMonth), !expression.flags.contains(.lastWeekdayOfMonth)
        {
            let smallestDay = expression.daysOfMonth.trailingZeroBitCount
            let chosenMonths = (1...12).filter { expression.months & (1 << UInt16($0)) != 0 }
            let longest: Int = chosenMonths.map { $0 == 2 ? 29 : CivilCalendar.daysInMonth(year: 2001, month: $0) }
                .max() ?? 31
            if smallestDay > longest {
                let names = chosenMonths.map { EnglishNames.shortMonths[$0 - 1] }.joined(separator: ",")
                throw CronParseError(
                    field: .dayOfMonth,
                    message: "schedule never fires: day-of-month \(smallestDay) does not exist in month(s) \(names)",
                    columns: columns(tokens[2].lowerBound..<tokens[3].upperBound))
            }
        }
        // The Gregorian calendar repeats every 400 years, so a schedule with no match in one cycle never fires.
        if expression.nextMatch(atOrAfter: 0, limitYear: 1970 + 400) == nil {
            throw CronParseError(
                field: nil,
                message: "schedule never fires: no day matches both day-of-month and day-of-week in the chosen months",
                columns: columns(tokens[2].lowerBound..<tokens[4].upperBound))
        }
    }

    /// D7: valid but surprising uses of Debian's day rule.
    private static func warnings(_ bytes: [UInt8], _ tokens: [Range<Int>], _ expression: CronExpression)
        -> [CronWarning]
    {
        let dayOfMonthText = String(decoding: bytes[tokens[2]], as: UTF8.self)
        let dayOfWeekText = String(decoding: bytes[tokens[4]], as: UTF8.self)
        let allDays: UInt32 = 0xFFFF_FFFE
        let dowRestricted = dayOfWeekText != "*"
        var result: [CronWarning] = []
        if expression.requiresBothDayFields {
            if dayOfMonthText.hasPrefix("*") && dayOfMonthText != "*" && dowRestricted {
                result.append(
                    CronWarning(
                        field: .dayOfMonth,
                        message: "day-of-month '\(dayOfMonthText)' starts with '*', so a day must match both "
                            + "day-of-month and day-of-week (Debian's rule); to fire on either, write it without "
                            + "'*' (e.g. '1-31\(dayOfMonthText.dropFirst())')",
                        columns: columns(tokens[2])))
            }
            if dayOfWeekText.hasPrefix("*") && dayOfWeekText != "*" && dayOfMonthText != "*" {
                result.append(
                    CronWarning(
                        field: .dayOfWeek,
                        message: "day-of-week '\(dayOfWeekText)' starts with '*', so a day must match both "
                            + "day-of-month and day-of-week (Debian's rule); to fire on either, write it without "
                            + "'*' (e.g. '0-6\(dayOfWeekText.dropFirst())')",
                        columns: columns(tokens[4])))
            }
        } else {
            if expression.daysOfMonth == allDays {
                result.append(
                    CronWarning(
                        field: .dayOfMonth,
                        message: "day-of-month '\(dayOfMonthText)' covers every day and does not start with '*', "
                            + "so with Debian's either-field rule this fires every day; write '*' to fire only on "
                            + "day-of-week '\(dayOfWeekText)'",
                        columns: columns(tokens[2])))
            }
            if expression.daysOfWeek == 0x7F {
                result.append(
                    CronWarning(
                        field: .dayOfWeek,
                        message: "day-of-week '\(dayOfWeekText)' covers every day and does not start with '*', "
                            + "so with Debian's either-field rule this fires every day; write '*' to fire only on "
                            + "day-of-month '\(dayOfMonthText)'",
                        columns: columns(tokens[4])))
            }
        }
        return result
    }

    // MARK: Helpers

    static func splitFields(_ bytes: [UInt8]) -> [Range<Int>] {
        var tokens: [Range<Int>] = []
        var start: Int?
        for (index, byte) in bytes.enumerated() {
            let isSpace = byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t")
            if isSpace, let s = start {
                tokens.append(s..<index)
                start = nil
            } else if !isSpace, start == nil {
                start = index
            }
        }
        if let s = start { tokens.append(s..<bytes.count) }
        return tokens
    }

    /// Byte offsets are 0-based; columns are 1-based.
    static func columns(_ range: Range<Int>) -> Range<Int> { (range.lowerBound + 1)..<(range.upperBound + 1) }

    private func error(_ field: CronField, _ reason: String, _ range: Range<Int>) -> CronParseError {
        CronParseError(field: field, message: "\(field): \(reason)", columns: Self.columns(range))
    }

    private func string(_ bytes: [UInt8], _ range: Range<Int>) -> String {
        String(decoding: bytes[range], as: UTF8.self)
    }

    private func lowercased(_ bytes: [UInt8], _ range: Range<Int>) -> String {
        String(decoding: bytes[range].map { $0 | 0x20 }, as: UTF8.self)
    }
}

extension UInt8 {
    @inline(__always) var isDigit: Bool { self >= UInt8(ascii: "0") && self <= UInt8(ascii: "9") }
    @inline(__always) var isLetter: Bool { (self | 0x20) >= UInt8(ascii: "a") && (self | 0x20) <= UInt8(ascii: "z") }
}

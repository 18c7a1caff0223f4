import Foundation

@testable import CronExpression

/// SplitMix64: a tiny seeded generator so that a failing property prints a seed that reproduces it.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// `SNAPCRON_SEED` when set (to replay a failure), else a fresh seed.
    static func seedFromEnvironment() -> UInt64 {
        if let text = ProcessInfo.processInfo.environment["SNAPCRON_SEED"], let seed = UInt64(text) { return seed }
        return UInt64.random(in: 1...UInt64.max)
    }
}

/// A random valid expression together with the value sets it must mean, computed independently of the parser.
struct GeneratedExpression: CustomStringConvertible {
    var text: String
    var minutes: Set<Int>
    var hours: Set<Int>
    var days: Set<Int>
    var months: Set<Int>
    var weekdays: Set<Int>
    var dayOfMonthStar: Bool
    var dayOfWeekStar: Bool
    var wildcard: Bool

    var description: String { text }

    /// Debian's matching of one wall-clock minute, written from the rules and not from the engine.
    func matches(_ local: LocalTime) -> Bool {
        guard minutes.contains(local.minute), hours.contains(local.hour), months.contains(local.month) else {
            return false
        }
        let dayOK = days.contains(local.day)
        let weekdayOK = weekdays.contains(local.weekday)
        return dayOfMonthStar || dayOfWeekStar ? (dayOK && weekdayOK) : (dayOK || weekdayOK)
    }

    /// A random expression that can fire (impossible day/month combinations are drawn again).
    static func random(using rng: inout SplitMix64) -> GeneratedExpression {
        while true {
            let candidate = anyRandom(using: &rng)
            do {
                _ = try CronExpression(candidate.text)
                return candidate
            } catch where error.message.contains("never fires") {
                continue
            } catch {
                fatalError("generator produced an invalid expression '\(candidate.text)': \(error.message)")
            }
        }
    }

    private static func anyRandom(using rng: inout SplitMix64) -> GeneratedExpression {
        var texts: [String] = []
        var sets: [Set<Int>] = []
        var stars: [Bool] = []
        for field in CronField.allCases {
            let (text, set) = randomField(field, using: &rng)
            texts.append(text)
            sets.append(set)
            stars.append(text.hasPrefix("*"))
        }
        return GeneratedExpression(
            text: texts.joined(separator: " "), minutes: sets[0], hours: sets[1], days: sets[2], months: sets[3],
            weekdays: Set(sets[4].map { $0 % 7 }), dayOfMonthStar: stars[2], dayOfWeekStar: stars[4],
            wildcard: stars[0] || stars[1])
    }

    private static func randomField(_ field: CronField, using rng: inout SplitMix64) -> (String, Set<Int>) {
        let low = field.lowerBound
        let high = field.upperBound
        let span = high - low
        // Mostly dense fields so that fires are near and the brute-force scan stays short.
        let roll = Int.random(in: 0..<100, using: &rng)
        if roll < (field == .minute || field == .hour ? 25 : 45) { return ("*", Set(low...high)) }
        if roll < 55 {
            let step = Int.random(in: 2...max(2, span / 2), using: &rng)
            return ("*/\(step)", Set(stride(from: low, through: high, by: step)))
        }
        let count = Int.random(in: 1...3, using: &rng)
        var items: [String] = []
        var set = Set<Int>()
        for _ in 0..<count {
            let a = Int.random(in: low...high, using: &rng)
            let b = Int.random(in: a...high, using: &rng)
            switch Int.random(in: 0..<4, using: &rng) {
            case 0:
                items.append(name(field, a))
                set.insert(a)
            case 1:
                items.append("\(name(field, a))-\(name(field, b))")
                set.formUnion(a...b)
            case 2:
                let step = Int.random(in: 1...max(1, span), using: &rng)
                items.append("\(a)-\(b)/\(step)")
                set.formUnion(stride(from: a, through: b, by: step))
            default:
                let step = Int.random(in: 1...max(1, span), using: &rng)
                items.append("\(a)/\(step)")
                set.formUnion(stride(from: a, through: high, by: step))
            }
        }
        return (items.joined(separator: ","), set)
    }

    private static func name(_ field: CronField, _ value: Int) -> String {
        let names = field.names
        guard !names.isEmpty, Bool.random(), value - field.lowerBound < names.count else { return String(value) }
        let name = names[value - field.lowerBound]
        return Bool.random() ? name.uppercased() : name
    }
}

/// The reference answer by brute force: walk real instants minute by minute (transitions read from Foundation's
/// TimeZone), applying D11/D12 literally: wildcard jobs fire at every instant whose wall time matches; fixed jobs
/// fire at the first pass of a matching wall time, and once at the end of a gap that swallowed matching times.
enum BruteForce {
    static func nextFire(
        after start: Date, zone: TimeZone, matches: (LocalTime) -> Bool, wildcard: Bool, scanDays: Int
    ) -> Date? {
        let startSecond = Int64(start.timeIntervalSince1970.rounded(.down))
        var instant = (startSecond / 60 - 2 * 1440) * 60  // begin two days early to know which walls were seen
        var maxWallSeen = Int64.min
        let end = startSecond + Int64(scanDays) * 86_400
        while instant <= end {
            let offset = Int64(zone.secondsFromGMT(for: Date(timeIntervalSince1970: TimeInterval(instant))))
            let wall = instant + offset
            var fires = false
            if wildcard {
                fires = matches(LocalTime(wallSeconds: wall))
            } else if wall > maxWallSeen {
                fires = matches(LocalTime(wallSeconds: wall))
                if !fires && maxWallSeen != Int64.min {
                    var skipped = maxWallSeen + 60
                    while skipped < wall && !fires {
                        fires = matches(LocalTime(wallSeconds: skipped))
                        skipped += 60
                    }
                }
            }
            maxWallSeen = max(maxWallSeen, wall)
            if fires && instant > startSecond { return Date(timeIntervalSince1970: TimeInterval(instant)) }
            instant += 60
        }
        return nil
    }
}

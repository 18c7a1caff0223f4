import CronExpression
import Foundation

// cron-bench FILE: the cron engine's speed on the shared expression set (see expressions-README.md).
// One JSON line per expression, then a summary line. Medians of several rounds; release builds only.

struct Row {
    var id: String
    var zone: String
    var iterations: Int
    var expression: String
}

func loadRows(_ path: String) -> [Row] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
        FileHandle.standardError.write(Data("cron-bench: cannot read \(path)\n".utf8))
        exit(2)
    }
    return text.split(separator: "\n").compactMap { line in
        if line.hasPrefix("#") { return nil }
        let columns = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        guard columns.count == 4, let iterations = Int(columns[2]) else { return nil }
        return Row(id: columns[0], zone: columns[1], iterations: iterations, expression: columns[3])
    }
}

/// Runs `body` `rounds` times and returns the median of operations per second.
func measure(rounds: Int = 5, operations: Int, _ body: () -> Int) -> Double {
    var rates: [Double] = []
    var sink = 0
    for _ in 0..<rounds {
        let clock = ContinuousClock()
        let start = clock.now
        sink &+= body()
        let elapsed = clock.now - start
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        rates.append(Double(operations) / max(seconds, 1e-9))
    }
    if sink == 42 { print("") }  // keep the work observable
    rates.sort()
    return rates[rates.count / 2]
}

func residentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kilobytes = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kilobytes * 1024
    }
    return 0
}

func geometricMean(_ values: [Double]) -> Double {
    values.isEmpty ? 0 : exp(values.map { log($0) }.reduce(0, +) / Double(values.count))
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else {
    print("usage: cron-bench FILE   (e.g. Benchmarks/expressions.tsv)")
    exit(2)
}
let rows = loadRows(arguments[1])
let start2000 = Date(timeIntervalSince1970: 946_684_800)
// Seeded uniform instants in 2000..2040 (SplitMix64), the same for every row.
var state: UInt64 = 20_251_129
let oneShotStarts: [Date] = (0..<100_000).map { _ in
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    z ^= z >> 31
    return Date(timeIntervalSince1970: 946_684_800 + Double(z % 1_262_304_000))
}

var utcFires: [Double] = []
var utcOneShot: [Double] = []
var zoneFires: [Double] = []
for row in rows {
    guard let zone = CronTimeZone(identifier: row.zone) else { fatalError("unknown zone \(row.zone)") }
    let expression = try CronExpression(row.expression)
    let parseCount = 200_000
    let parseRate = measure(operations: parseCount) {
        var checksum = 0
        for _ in 0..<parseCount {
            if let parsed = try? CronExpression(row.expression) { checksum &+= Int(parsed.minutes & 1) }
        }
        return checksum
    }
    let fireRate = measure(operations: row.iterations) {
        var sequence = expression.fires(after: start2000, in: zone)
        var checksum = 0
        for _ in 0..<row.iterations {
            guard let date = sequence.nextDate() else { break }
            checksum &+= Int(date.timeIntervalSince1970)
        }
        return checksum
    }
    let oneShotRate = measure(operations: oneShotStarts.count) {
        var checksum = 0
        for start in oneShotStarts {
            if let date = expression.nextDate(after: start, in: zone) { checksum &+= Int(date.timeIntervalSince1970) }
        }
        return checksum
    }
    if row.zone == "UTC" {
        utcFires.append(fireRate)
        utcOneShot.append(oneShotRate)
    } else {
        zoneFires.append(fireRate)
    }
    let line: [String: Any] = [
        "id": row.id, "zone": row.zone, "parse_per_s": Int(parseRate), "fires_per_s": Int(fireRate),
        "oneshot_per_s": Int(oneShotRate), "bytes": MemoryLayout<CronExpression>.stride,
    ]
    let data = try JSONSerialization.data(withJSONObject: line, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

// Memory: hold 100,000 parsed schedules and report the growth of the resident set.
let before = residentBytes()
var held: [CronExpression] = []
held.reserveCapacity(100_000)
for index in 0..<100_000 {
    held.append(try CronExpression("\(index % 60) \(index % 24) * * \(index % 7)"))
}
let after = residentBytes()
let summary: [String: Any] = [
    "summary": true,
    "utc_fires_per_s_geomean": Int(geometricMean(utcFires)),
    "utc_oneshot_per_s_geomean": Int(geometricMean(utcOneShot)),
    "dst_zone_fires_per_s_geomean": Int(geometricMean(zoneFires)),
    "dst_zone_fires_per_s_min": Int(zoneFires.min() ?? 0),
    "bytes_per_expression": MemoryLayout<CronExpression>.stride,
    "rss_bytes_for_100k_expressions": max(0, after - before),
    "held": held.count,
]
let data = try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys])
print(String(decoding: data, as: UTF8.self))

import Foundation

@testable import CronExpression

enum Fixtures {
    static func jsonLines<Row: Decodable>(_ name: String) -> [Row] {
        guard let url = Bundle.module.url(forResource: name, withExtension: "jsonl", subdirectory: "Fixtures"),
            let text = try? String(contentsOf: url, encoding: .utf8)
        else { fatalError("missing fixture \(name).jsonl") }
        let decoder = JSONDecoder()
        return text.split(separator: "\n").map { line in
            do { return try decoder.decode(Row.self, from: Data(line.utf8)) } catch {
                fatalError("bad fixture line in \(name): \(error)")
            }
        }
    }
}

/// ISO 8601 with a numeric UTC offset, as the oracle writes it (`2024-03-10T03:00:00-04:00`).
enum ISO8601 {
    static func parse(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        guard bytes.count == 25 else { return nil }
        func number(_ range: Range<Int>) -> Int? { Int(String(decoding: bytes[range], as: UTF8.self)) }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10),
            let hour = number(11..<13), let minute = number(14..<16), let second = number(17..<19),
            let offsetHours = number(20..<22), let offsetMinutes = number(23..<25)
        else { return nil }
        let sign = bytes[19] == UInt8(ascii: "-") ? -1 : 1
        let days = CivilCalendar.dayNumber(year: year, month: month, day: day)
        let wall = days * 86_400 + hour * 3600 + minute * 60 + second
        return Date(timeIntervalSince1970: TimeInterval(wall - sign * (offsetHours * 3600 + offsetMinutes * 60)))
    }

    static func format(_ date: Date, in zone: CronTimeZone) -> String {
        CronFormat.iso8601(date, in: zone)
    }
}

import CronExpression
import Foundation

extension DSTAdjustment {
    /// How a DST change moved or repeated a fire, for people; `nil` for an ordinary fire.
    var note: String? {
        switch self {
        case .none: nil
        case .shiftedFromGap(let nominal, let coalesced):
            "DST gap: \(nominal) does not exist; fires once right after the gap"
                + (coalesced > 1 ? " (\(coalesced) skipped times merged)" : "")
        case .firstOfRepeatedTime: "DST overlap: this wall time repeats; fires at the first pass only"
        case .repeatedTimeFirstPass: "DST overlap: first of two passes of this wall time"
        case .repeatedTimeSecondPass: "DST overlap: second pass of this wall time"
        }
    }
}

/// Shared text and JSON output of the subcommands.
enum Output {
    static let weekdays = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]

    /// One fire as a line for people: ISO 8601 with offset, weekday, and a DST mark when DST shaped it.
    static func fireLine(_ fire: CronFire, in zone: CronTimeZone) -> String {
        var line = "\(CronFormat.iso8601(fire.date, in: zone))  \(weekdays[zone.localTime(of: fire.date).weekday])"
        if let note = fire.adjustment.note { line += "  * \(note)" }
        return line
    }

    /// Prints `object` as one line of JSON with sorted keys.
    static func printJSON(_ object: [String: Any]) {
        guard
            let data = try? JSONSerialization.data(
                withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        else { return }
        print(String(decoding: data, as: UTF8.self))
    }

    /// Writes `text` and a newline to stderr.
    static func printError(_ text: String) {
        FileHandle.standardError.write(Data((text + "\n").utf8))
    }
}

import CronExpression
import Foundation

/// Warnings for fixed jobs whose wall time falls into a DST gap or a repeated hour soon (rules D11, D12).
///
/// The engine already does the right thing (one fire right after a gap, one fire at the first pass of a repeated
/// time); the advisory tells the operator ahead of time, since a 02:30 job that runs at 03:00 surprises people.
enum DSTAdvisory {
    /// One warning per DST change within `ScheduleFile.advisoryHorizon` after `now` that moves or repeats a fire
    /// of `job`, pointing at `columns` (the expression) of the job's line.
    static func warnings(for job: Job, now: Date, columns: Range<Int>) -> [Diagnostic] {
        // Wildcard jobs skip missing times and fire at both passes: nothing is moved, nothing to say.
        guard !job.expression.isWildcardForDST else { return [] }
        let zone = job.zone
        let end = now.addingTimeInterval(ScheduleFile.advisoryHorizon)
        var messages: [String] = []
        for transition in zone.transitions(in: now..<end) {
            let shift = transition.offsetAfter - transition.offsetBefore
            if shift > 0 {
                // A gap: a moved fire lands exactly on the first instant after it.
                guard
                    let fire = job.expression.nextFire(after: transition.date.addingTimeInterval(-1), in: zone),
                    fire.date == transition.date,
                    case .shiftedFromGap(let nominal, let coalesced) = fire.adjustment
                else { continue }
                let skipped =
                    coalesced == 1
                    ? "\(nominal) does not exist (DST)"
                    : "\(nominal) and \(coalesced - 1) later time\(coalesced == 2 ? "" : "s") do not exist (DST)"
                messages.append(
                    "job '\(job.name)' at \(clock(nominal)) \(zone): \(skipped); it fires once at "
                        + clock(zone.localTime(of: fire.date)))
            } else if shift < 0 {
                // A repeated hour: its first pass runs from `transition + shift` up to the transition.
                var fires = job.expression.fires(
                    after: transition.date.addingTimeInterval(TimeInterval(shift) - 1), in: zone)
                while let fire = fires.next(), fire.date < transition.date {
                    guard fire.adjustment == .firstOfRepeatedTime else { continue }
                    let local = zone.localTime(of: fire.date)
                    messages.append(
                        "job '\(job.name)' at \(clock(local)) \(zone): \(local) occurs twice (DST); it fires once, "
                            + "at the first (\(CronFormat.iso8601(fire.date, in: zone)))")
                    break
                }
            }
        }
        return messages.map { .warning($0, at: job.location, columns: columns) }
    }

    /// `02:30`.
    private static func clock(_ time: LocalTime) -> String {
        let text = time.description
        return String(text[text.index(text.endIndex, offsetBy: -5)...])
    }
}

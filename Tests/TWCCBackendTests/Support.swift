import Foundation
import Logging
import NIOConcurrencyHelpers
import SnapcronCore
import SnapshotBackend
import TWCCBackend
import TWCCStandIn

let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// Virtual time: `sleep` returns at once and moves `now`; every sleep is recorded.
final class VirtualTiming: Sendable {
    private let state = NIOLockedValueBox((now: Duration.zero, sleeps: [Duration]()))

    /// Moves `now` on without recording a sleep.
    func advance(by duration: Duration) {
        state.withLockedValue { $0.now += duration }
    }

    var sleeps: [Duration] { state.withLockedValue { $0.sleeps } }
    var slept: Duration { sleeps.reduce(.zero, +) }

    var timing: TWCCBackend.Timing {
        TWCCBackend.Timing(
            now: { self.state.withLockedValue { $0.now } },
            sleep: { duration in
                self.state.withLockedValue {
                    $0.now += duration
                    $0.sleeps.append(duration)
                }
            })
    }
}

/// Keeps every log line with its metadata, to check what is (and is not) logged.
final class CapturingLogHandler: LogHandler, Sendable {
    private let box: NIOLockedValueBox<[String]>
    var metadata: Logger.Metadata {
        get { [:] }
        set {}
    }
    var logLevel: Logger.Level {
        get { .trace }
        set {}
    }

    init(_ box: NIOLockedValueBox<[String]>) {
        self.box = box
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { nil }
        set {}
    }

    func log(event: LogEvent) {
        box.withLockedValue { $0.append("\(event.level) \(event.message) \(event.metadata ?? [:])") }
    }

    static func logger() -> (Logger, NIOLockedValueBox<[String]>) {
        let box = NIOLockedValueBox<[String]>([])
        return (Logger(label: "capture", factory: { _ in CapturingLogHandler(box) }), box)
    }
}

/// Starts a stand-in (its timed progressions on `now` when given), runs `body`, stops it.
func withStandIn<T>(
    now: (@Sendable () -> Date)? = nil, _ body: (TWCCStandIn) async throws -> T
) async throws -> T {
    let standIn = TWCCStandIn(now: now)
    try await standIn.start()
    do {
        let result = try await body(standIn)
        await standIn.stop()
        return result
    } catch {
        await standIn.stop()
        throw error
    }
}

/// A backend pointed at `standIn`, fast by default: high rate, short back-offs on virtual time.
func makeBackend(
    _ standIn: TWCCStandIn, key: String? = nil, requestsPerSecond: Double = 10_000, inFlight: Int = 8,
    timeout: Duration = .seconds(10), retry: TWCCBackend.RetryPolicy = .init(),
    timing: VirtualTiming = VirtualTiming(), baseURL: String? = nil
) throws -> TWCCBackend {
    TWCCBackend(
        name: "twcc-test",
        configuration: .init(
            baseURL: baseURL ?? standIn.baseURL, platform: standIn.platform, projectID: standIn.projectID,
            apiKey: try APIKey(key ?? standIn.apiKey), requestsPerSecond: requestsPerSecond,
            maxRequestsInFlight: inFlight, requestTimeout: timeout, retry: retry),
        timing: timing.timing)
}

/// Runs `body` and returns the `SnapshotBackendError` it throws (fails the test when it throws none or another).
func backendError(_ body: () async throws -> Void) async -> SnapshotBackendError? {
    do {
        try await body()
        return nil
    } catch let error as SnapshotBackendError {
        return error
    } catch {
        return SnapshotBackendError(
            backend: "?", operation: .init("?"), message: "not a backend error: \(error)", isTransient: false)
    }
}

/// A wall clock that moves only when told: what a benchmark gives the stand-in as its `now`.
final class SimulatedClock: Sendable {
    private let date: NIOLockedValueBox<Date>

    init(_ start: Date = Date(timeIntervalSince1970: 1_893_456_000)) {
        date = NIOLockedValueBox(start)
    }

    func now() -> Date { date.withLockedValue { $0 } }

    func advance(by seconds: TimeInterval) {
        date.withLockedValue { $0 += seconds }
    }
}

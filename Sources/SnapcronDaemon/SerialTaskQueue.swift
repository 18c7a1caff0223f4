import NIOConcurrencyHelpers

/// Runs async operations one after another, in the order they were submitted, even across suspension points.
///
/// An actor does not do this: a method that awaits lets the next call in. Reloads need it: two of them (an `edit`
/// and a SIGHUP, say) must not interleave reading the file and applying it, or an older schedule could end up live.
final class SerialTaskQueue: Sendable {
    private let tail = NIOLockedValueBox<Task<Void, Never>?>(nil)

    /// Runs `operation` after every operation submitted before it has finished, and returns its result.
    func run<Result: Sendable>(_ operation: @escaping @Sendable () async -> Result) async -> Result {
        let task = tail.withLockedValue { tail -> Task<Result, Never> in
            let previous = tail
            let task = Task {
                await previous?.value
                return await operation()
            }
            tail = Task { _ = await task.value }
            return task
        }
        return await task.value
    }
}

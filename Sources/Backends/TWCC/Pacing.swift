extension TWCCBackend {
    /// The backend's view of time: a monotonic `now` and a way to wait. Tests pass a virtual one.
    public struct Timing: Sendable {
        /// Time since some fixed origin; only differences matter.
        public var now: @Sendable () -> Duration
        /// Waits for a duration (throws on cancellation).
        public var sleep: @Sendable (Duration) async throws -> Void

        public init(now: @escaping @Sendable () -> Duration, sleep: @escaping @Sendable (Duration) async throws -> Void)
        {
            self.now = now
            self.sleep = sleep
        }

        /// Real time, from `ContinuousClock`.
        public static let live: Timing = {
            let clock = ContinuousClock()
            let origin = clock.now
            return Timing(now: { origin.duration(to: clock.now) }, sleep: { try await clock.sleep(for: $0) })
        }()
    }
}

/// A token bucket: at most `rate` requests per second on average, bursts of up to `capacity`.
///
/// Callers reserve a token (the count may go negative) and then sleep until their token is due, so the actor is
/// never held across a suspension and waiters are served in arrival order.
actor RateLimiter {
    private let rate: Double
    private let capacity: Double
    private var tokens: Double
    private var updated: Duration
    private let timing: TWCCBackend.Timing

    init(requestsPerSecond: Double, timing: TWCCBackend.Timing) {
        self.rate = max(requestsPerSecond, 0.001)
        self.capacity = max(1, requestsPerSecond.rounded(.down))
        self.tokens = capacity
        self.updated = timing.now()
        self.timing = timing
    }

    /// Takes one token and returns how long the caller must wait before using it.
    func reserve() -> Duration {
        let now = timing.now()
        let elapsed = Double((now - updated).components.seconds) + Double((now - updated).components.attoseconds) / 1e18
        tokens = min(capacity, tokens + elapsed * rate)
        updated = now
        tokens -= 1
        if tokens >= 0 { return .zero }
        return .milliseconds(Int64((-tokens / rate * 1000).rounded(.up)))
    }
}

/// At most `limit` holders at once; the others wait in order.
actor ConcurrencyLimiter {
    private let limit: Int
    private var inUse = 0
    private var waiters: [CheckedContinuation<Void, Never>] = []

    init(limit: Int) {
        self.limit = max(1, limit)
    }

    func acquire() async {
        if inUse < limit {
            inUse += 1
            return
        }
        // The slot is handed over by `release`, so `inUse` stays counted for the waiter.
        await withCheckedContinuation { waiters.append($0) }
    }

    func release() {
        if waiters.isEmpty {
            inUse -= 1
        } else {
            waiters.removeFirst().resume()
        }
    }

    /// How many requests are in flight now (for tests and diagnostics).
    var current: Int { inUse }
}

import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SnapshotBackend

/// What one backend call is about, for errors and logs.
struct CallContext: Sendable {
    var backend: String
    var operation: SnapshotBackendError.Operation
    var target: String?
    var image: ImageRef?

    func permanent(_ message: String, file: String = #fileID, line: Int = #line) -> SnapshotBackendError {
        .permanent(backend: backend, operation, target: target, image: image, message, file: file, line: line)
    }

    func transient(_ message: String, file: String = #fileID, line: Int = #line) -> SnapshotBackendError {
        .transient(backend: backend, operation, target: target, image: image, message, file: file, line: line)
    }
}

/// The retries left to one backend call: every request of the call draws on the same attempts and time.
struct RetryBudget {
    private let policy: TWCCBackend.RetryPolicy
    private let timing: TWCCBackend.Timing
    private let deadline: Duration
    private(set) var failures = 0

    init(policy: TWCCBackend.RetryPolicy, timing: TWCCBackend.Timing) {
        self.policy = policy
        self.timing = timing
        self.deadline = timing.now() + policy.budget
    }

    /// Sleeps before the next attempt, or throws `error` (noting the attempts) when the budget is spent.
    mutating func backOff(after failure: SnapshotBackendError, retryAfter: Duration? = nil) async throws {
        failures += 1
        let exponential = policy.initialBackoff * (1 << min(failures - 1, 20))
        let capped = min(exponential, policy.maxBackoff)
        // Jitter in [capped/2, capped] keeps replicas that failed together from retrying together.
        var delay = capped / 2 + capped / 2 * Double.random(in: 0...1)
        if let retryAfter { delay = max(delay, min(retryAfter, policy.maxBackoff)) }
        guard failures < policy.maxAttempts, timing.now() + delay <= deadline else {
            var given = failure
            given.message += ", gave up after \(failures) attempt\(failures == 1 ? "" : "s")"
            throw given
        }
        do {
            try await timing.sleep(delay)
        } catch {
            var cancelled = failure
            cancelled.message += ", cancelled while waiting to retry"
            throw cancelled
        }
    }
}

/// A reply the caller handles itself: a 2xx, or a 404 when asked for.
struct Reply: Sendable {
    var status: Int
    var body: Data

    var text: String { String(decoding: body, as: UTF8.self) }

    var isNotFound: Bool { status == 404 }
}

/// The HTTP side of the backend: URLs, headers, limits, timeouts, retries and error mapping.
struct APIClient: Sendable {
    let name: String
    let configuration: TWCCBackend.Configuration
    let http: HTTPClient
    let timing: TWCCBackend.Timing
    let rateLimiter: RateLimiter
    let inFlight: ConcurrencyLimiter
    /// Why the key must not go to the base URL (plain http to a remote host), checked before every request in case
    /// the configuration was built in code rather than from settings.
    let baseURLProblem: String?

    init(
        name: String, configuration: TWCCBackend.Configuration, timing: TWCCBackend.Timing,
        http: HTTPClient = APIClient.http
    ) {
        self.name = name
        self.configuration = configuration
        self.http = http
        self.timing = timing
        self.rateLimiter = RateLimiter(requestsPerSecond: configuration.requestsPerSecond, timing: timing)
        self.inFlight = ConcurrencyLimiter(limit: configuration.maxRequestsInFlight)
        self.baseURLProblem = TWCCBackend.Configuration.problem(withBaseURL: configuration.baseURL)
    }

    /// The client every TWCC backend sends with, made for the API key's sake: redirects are never followed (the
    /// shared client follows them to any host and keeps custom headers such as `x-API-KEY`), and responses are
    /// not decompressed. It lives as long as the process, like `HTTPClient.shared`.
    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.decompression = .disabled
        configuration.tlsConfiguration = nil  // the default: certificates verified against the system store
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    /// Whether a failed request may be sent again by `send` itself.
    enum Resend {
        /// Safe to repeat (GET, DELETE).
        case whenTransient
        /// Never repeated here: a lost reply may hide a done PUT; the caller looks before trying again.
        case never
    }

    /// `/api/v3/<platform>/<path>` with `path` like `images/555/save/`.
    func url(_ path: String, query: [(String, String)]) -> String {
        var url = "\(configuration.baseURL)/api/v3/\(configuration.platform)/\(path)"
        if !query.isEmpty {
            url += "?" + query.map { "\($0.0)=\(Self.escape($0.1))" }.joined(separator: "&")
        }
        return url
    }

    private static func escape(_ value: String) -> String {
        value.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~")))
            ?? value
    }

    /// Sends one request with the budget's retries; returns 2xx replies (and 404 when `acceptNotFound`).
    func send(
        _ method: HTTPMethod, _ path: String, query: [(String, String)] = [], body: WireSaveRequest? = nil,
        acceptNotFound: Bool = false, resend: Resend = .whenTransient, call: CallContext,
        budget: inout RetryBudget, logger: Logger
    ) async throws -> Reply {
        if let baseURLProblem {
            throw call.permanent("refusing to send the API key: base_url \(baseURLProblem)")
        }
        var request = HTTPClientRequest(url: url(path, query: query))
        request.method = method
        request.headers.add(name: "x-API-KEY", value: configuration.apiKey.secret)
        request.headers.add(name: "X-API-HOST", value: configuration.platform)
        // twccli sends the JSON content type on every request, GET and DELETE included; so do we.
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "Accept", value: "application/json")
        request.headers.add(name: "User-Agent", value: configuration.userAgent)
        if let body {
            let data = try JSONEncoder().encode(body)
            request.body = .bytes(ByteBuffer(bytes: data))
        }
        let label = "\(method.rawValue) \(path)"
        while true {
            let outcome = await attempt(request, label: label, call: call, logger: logger)
            switch outcome {
            case .reply(let reply):
                if (200..<300).contains(reply.status) || (acceptNotFound && reply.isNotFound) { return reply }
                throw call.permanent(Self.describe(reply, label))
            case .retryable(let error, let retryAfter):
                guard resend == .whenTransient else { throw error }
                logger.debug(
                    "TWCC request failed, retrying",
                    metadata: ["twcc.request": "\(label)", "error": "\(error.message)", "backend": "\(name)"])
                try await budget.backOff(after: error, retryAfter: retryAfter)
            }
        }
    }

    private enum Outcome {
        case reply(Reply)
        case retryable(SnapshotBackendError, retryAfter: Duration?)
    }

    private func attempt(_ request: HTTPClientRequest, label: String, call: CallContext, logger: Logger) async
        -> Outcome
    {
        await inFlight.acquire()
        let outcome = await attemptHoldingSlot(request, label: label, call: call, logger: logger)
        await inFlight.release()
        return outcome
    }

    private func attemptHoldingSlot(
        _ request: HTTPClientRequest, label: String, call: CallContext, logger: Logger
    ) async -> Outcome {
        let wait = await rateLimiter.reserve()
        if wait > .zero {
            do { try await timing.sleep(wait) } catch {
                return .retryable(call.transient("cancelled while rate limited"), retryAfter: nil)
            }
        }
        let timeout = configuration.requestTimeout
        let started = timing.now()
        do {
            let http = self.http
            let deadline = NIODeadline.now() + .milliseconds(timeout.milliseconds)
            // AHC's deadline ends when the response head arrives; a body that trickles in for ever would hold the
            // call (and its in-flight slot) for good, so the whole exchange is bounded here.
            let (code, headers, body) = try await Self.bounded(by: timeout) {
                let response = try await http.execute(request, deadline: deadline)
                let body = try await response.body.collect(upTo: 8 << 20)
                return (response.status.code, response.headers, body)
            }
            let status = Int(code)
            logger.debug(
                "TWCC request",
                metadata: [
                    "twcc.request": "\(label)", "twcc.status": "\(status)", "backend": "\(name)",
                    "twcc.duration_ms": "\((timing.now() - started).milliseconds)",
                ])
            let reply = Reply(status: status, body: Data(body.readableBytesView))
            if status == 429 || (500..<600).contains(status) {
                let retryAfter = headers.first(name: "retry-after").flatMap(Int.init).map {
                    Duration.seconds($0)
                }
                return .retryable(call.transient(Self.describe(reply, label)), retryAfter: retryAfter)
            }
            if (300..<400).contains(status) {
                // Redirects are not followed: the key is sent to base_url and nowhere else.
                let location = headers.first(name: "location").map { " to \($0.prefix(200))" } ?? ""
                return .reply(
                    Reply(
                        status: 0,
                        body: Data(
                            "HTTP \(status) redirect\(location) not followed (the API key goes to base_url only)"
                                .utf8)))
            }
            return .reply(reply)
        } catch let error as HTTPClientError where Self.permanentClientErrors.contains(error) {
            return .reply(Reply(status: 0, body: Data("\(error)".utf8)))
        } catch let error as HTTPClientError where error == .deadlineExceeded || error == .readTimeout {
            return .retryable(
                call.transient("\(label) timed out after \(timeout.milliseconds) ms"), retryAfter: nil)
        } catch is RequestTimedOut {
            return .retryable(
                call.transient("\(label) timed out after \(timeout.milliseconds) ms"), retryAfter: nil)
        } catch is CancellationError {
            return .retryable(call.transient("\(label) cancelled"), retryAfter: nil)
        } catch {
            // Connection refused or reset, TLS and DNS failures: the network, so worth another try.
            return .retryable(call.transient("\(label) failed: \(Self.text(of: error))"), retryAfter: nil)
        }
    }

    /// The whole request took longer than the request timeout.
    private struct RequestTimedOut: Error {}

    /// Runs `work`, cancelling it when `timeout` (real time, like the network it waits for) runs out first.
    ///
    /// Returns at the timeout even if `work` is slow to notice its cancellation (a body read that a trickling
    /// server keeps feeding): a task group would wait for it, and under load that wait took minutes.
    private static func bounded<T: Sendable>(
        by timeout: Duration, _ work: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let outcome = FirstOutcome<T>()
        let worker = Task {
            do {
                outcome.resume(with: .success(try await work()))
            } catch {
                outcome.resume(with: .failure(error))
            }
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            outcome.resume(with: .failure(RequestTimedOut()))
        }
        defer {
            worker.cancel()
            timer.cancel()
        }
        return try await withTaskCancellationHandler {
            try await outcome.value()
        } onCancel: {
            outcome.resume(with: .failure(CancellationError()))
        }
    }

    /// The first of several results, handed to the one waiter.
    private final class FirstOutcome<T: Sendable>: @unchecked Sendable {  // state under `lock`
        private let lock = NSLock()
        private var result: Result<T, any Error>?
        private var waiter: CheckedContinuation<T, any Error>?

        func resume(with outcome: Result<T, any Error>) {
            lock.lock()
            guard result == nil else {
                lock.unlock()
                return
            }
            result = outcome
            let waiting = waiter
            waiter = nil
            lock.unlock()
            waiting?.resume(with: outcome)
        }

        func value() async throws -> T {
            try await withCheckedThrowingContinuation { continuation in
                lock.lock()
                if let result {
                    lock.unlock()
                    continuation.resume(with: result)
                } else {
                    waiter = continuation
                    lock.unlock()
                }
            }
        }
    }

    private static let permanentClientErrors: [HTTPClientError] = [
        .invalidURL, .emptyHost, .emptyScheme,
    ]

    private static func text(of error: any Error) -> String {
        String(describing: error).lowercased()
    }

    /// `HTTP 401 from GET images/: Your request is unauthorized.`, with the API's own `detail` or `message`.
    static func describe(_ reply: Reply, _ label: String) -> String {
        if reply.status == 0 { return "\(label): \(reply.text)" }
        var explanation = ""
        if let error = try? JSONDecoder().decode(WireError.self, from: reply.body),
            let text = error.detail ?? error.message
        {
            explanation = ": " + text
        } else if !reply.body.isEmpty {
            explanation = ": " + String(reply.text.prefix(200))
        }
        return "HTTP \(reply.status) from \(label)\(explanation)"
    }

    /// Decodes a reply body, or throws a permanent error quoting the start of it.
    func decode<T: Decodable>(_ type: T.Type, _ reply: Reply, _ label: String, call: CallContext) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: reply.body)
        } catch {
            let start = String(reply.text.prefix(120))
            throw call.permanent("unexpected reply to \(label): cannot read \(T.self) from '\(start)'")
        }
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    var milliseconds: Int64 {
        components.seconds * 1000 + components.attoseconds / 1_000_000_000_000_000
    }
}

import Foundation
import SnapshotBackend
import TWCCDescriptor

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A typed value of one `[backends.NAME]` setting, as the config reader keeps it.
///
/// The config's `ConfigValue` has these members; `TWCCBackend+Factory.swift` conforms it with an empty extension.
public protocol TWCCSettingValue {
    /// The value if it is a string.
    var string: String? { get }
    /// The value if it is an integer.
    var integer: Int? { get }
    /// An integer or a float as a `Double`.
    var number: Double? { get }
}

extension TWCCBackend {
    /// How often a call is retried after a transient failure, and how long it may take in all.
    public struct RetryPolicy: Sendable, Hashable {
        /// Attempts per HTTP request, the first one included.
        public var maxAttempts: Int
        /// The first back-off; it doubles after every failure (with jitter) up to ``maxBackoff``.
        public var initialBackoff: Duration
        /// The longest single back-off, also the cap on a server's `Retry-After`.
        public var maxBackoff: Duration
        /// The longest a whole backend call (with all its requests and back-offs) may spend retrying.
        public var budget: Duration

        public init(
            maxAttempts: Int = 4, initialBackoff: Duration = .milliseconds(500), maxBackoff: Duration = .seconds(8),
            budget: Duration = .seconds(60)
        ) {
            self.maxAttempts = max(1, maxAttempts)
            self.initialBackoff = initialBackoff
            self.maxBackoff = maxBackoff
            self.budget = budget
        }
    }

    /// Everything the TWCC backend needs to talk to one project on one platform.
    public struct Configuration: Sendable {
        /// The API gateway, without a trailing slash.
        public var baseURL: String
        /// The platform ("site") name, sent in the path and in `X-API-HOST`.
        public var platform: String
        /// The VCS project id (an integer in the API).
        public var projectID: Int
        /// The API key; never printed.
        public var apiKey: APIKey
        /// The most requests per second this backend sends (a token bucket with a burst of one second's worth).
        public var requestsPerSecond: Double
        /// The most requests in flight at once.
        public var maxRequestsInFlight: Int
        /// How long one HTTP request may take, from connecting to the last byte of the reply's body, before it counts
        /// as a (transient) timeout.
        public var requestTimeout: Duration
        /// Retries of transient failures.
        public var retry: RetryPolicy
        /// Sent as `User-Agent`.
        public var userAgent: String
        /// How long the server found for a target (site id or name) is used before it is looked up again; a save
        /// answered 404 drops it at once.
        public var serverLookupLifetime: Duration

        public static let defaultBaseURL = "https://apigateway.twcc.ai"
        public static let defaultPlatform = "openstack-taichung-default-2"

        public init(
            baseURL: String = Self.defaultBaseURL,
            platform: String = Self.defaultPlatform,
            projectID: Int,
            apiKey: APIKey,
            requestsPerSecond: Double = 5,
            maxRequestsInFlight: Int = 4,
            requestTimeout: Duration = .seconds(30),
            retry: RetryPolicy = RetryPolicy(),
            userAgent: String = "snapcron-twcc/1",
            serverLookupLifetime: Duration = .seconds(600)
        ) {
            self.baseURL = String(baseURL.reversed().drop { $0 == "/" }.reversed())
            self.platform = platform
            self.projectID = projectID
            self.apiKey = apiKey
            self.requestsPerSecond = requestsPerSecond
            self.maxRequestsInFlight = max(1, maxRequestsInFlight)
            self.requestTimeout = requestTimeout
            self.retry = retry
            self.userAgent = userAgent
            self.serverLookupLifetime = serverLookupLifetime
        }

        /// Why the API key must not be sent to `baseURL`, or nil when it may: the descriptor's rule
        /// (``TWCCBackendDescriptor/problem(withBaseURL:)``), so `snapcronctl check` and the daemon agree.
        public static func problem(withBaseURL baseURL: String) -> String? {
            TWCCBackendDescriptor.problem(withBaseURL: baseURL)
        }

        /// The keys of a `type = "twcc"` table that this backend reads (besides `api_key_credential`/`api_key_file`,
        /// which ``APIKey/load(settings:environment:)`` reads).
        public static let settingKeys = [
            "base_url", "platform", "project_id", "requests_per_second", "max_requests_in_flight",
            "request_timeout_seconds",
        ]

        /// Builds a configuration from a config file's `[backends.NAME]` settings and an already loaded key.
        ///
        /// Unknown keys are ignored (the config reader rejects them); wrong types and values throw a permanent
        /// ``SnapshotBackendError`` with operation `validate` naming the key.
        public init<Value: TWCCSettingValue>(backend: String, settings: [String: Value], apiKey: APIKey) throws {
            func fail(_ key: String, _ message: String) -> SnapshotBackendError {
                .permanent(backend: backend, .validate, "setting \(key): \(message)")
            }
            func string(_ key: String) throws -> String? {
                guard let value = settings[key] else { return nil }
                guard let string = value.string, !string.isEmpty else { throw fail(key, "expected a non-empty string") }
                return string
            }
            func number(_ key: String) throws -> Double? {
                guard let value = settings[key] else { return nil }
                guard let number = value.number, number > 0 else { throw fail(key, "expected a number greater than 0") }
                return number
            }
            guard let projectValue = settings["project_id"] else { throw fail("project_id", "missing") }
            guard let projectID = projectValue.integer, projectID > 0 else {
                throw fail("project_id", "expected an integer greater than 0")
            }
            let baseURL = try string("base_url") ?? Self.defaultBaseURL
            if let problem = Self.problem(withBaseURL: baseURL) { throw fail("base_url", problem) }
            let platform = try string("platform") ?? Self.defaultPlatform
            guard platform.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
                throw fail("platform", "'\(platform)' is not a platform name")
            }
            var inFlight = 4
            if let value = settings["max_requests_in_flight"] {
                guard let integer = value.integer, integer > 0 else {
                    throw fail("max_requests_in_flight", "expected an integer greater than 0")
                }
                inFlight = integer
            }
            let timeout = try number("request_timeout_seconds") ?? 30
            self.init(
                baseURL: baseURL, platform: platform, projectID: projectID, apiKey: apiKey,
                requestsPerSecond: try number("requests_per_second") ?? 5, maxRequestsInFlight: inFlight,
                requestTimeout: .milliseconds(Int64(timeout * 1000)))
        }
    }
}

import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SnapcronCore

/// Delivers run notifications over HTTP: a JSON `POST` to `notify_url` when a run ends, and healthchecks-style
/// `GET`s to `ping_url` (`/start` when a fire starts, the URL itself on success, `/fail` on failure).
///
/// A delivery that fails (no connection, a timeout, any status but 2xx) is tried again after each of
/// `retryDelays`; then it is given up and logged. Redirects are not followed. Each request is bounded by
/// `requestTimeout`, body included.
public struct HTTPRunNotifier: RunNotifier {
    let logger: Logger
    let retryDelays: [Duration]
    let requestTimeout: Duration

    public init(
        logger: Logger, retryDelays: [Duration] = [.seconds(5), .seconds(30), .seconds(120), .seconds(600)],
        requestTimeout: Duration = .seconds(10)
    ) {
        self.logger = logger
        self.retryDelays = retryDelays
        self.requestTimeout = requestTimeout
    }

    static let http: HTTPClient = {
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }()

    static let encoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys]
        return encoder
    }()

    public func deliver(_ notification: RunNotification, to hooks: HookSet) async {
        await withTaskGroup(of: Void.self) { group in
            if let url = hooks.notifyURL, notification.event == "run.finished",
                let body = try? Self.encoder.encode(notification)
            {
                group.addTask { await send(.POST, url, body: body, notification, kind: "notify") }
            }
            if let base = hooks.pingURL {
                let suffix = notification.event == "run.started" ? "/start" : notification.succeeded ? "" : "/fail"
                let url = base.hasSuffix("/") && !suffix.isEmpty ? String(base.dropLast()) + suffix : base + suffix
                group.addTask { await send(.GET, url, body: nil, notification, kind: "ping") }
            }
        }
    }

    private func send(_ method: HTTPMethod, _ url: String, body: Data?, _ notification: RunNotification, kind: String)
        async
    {
        var metadata: Logger.Metadata = [
            "event": "notify.\(kind)", "job": "\(notification.job)", "run": "\(notification.run)",
            "url": "\(Self.redacted(url))",
        ]
        var lastError = ""
        for attempt in 0...retryDelays.count {
            if attempt > 0 {
                do {
                    try await Task.sleep(for: retryDelays[attempt - 1])
                } catch {
                    break  // the daemon is stopping
                }
            }
            do {
                var request = HTTPClientRequest(url: url)
                request.method = method
                request.headers.add(name: "User-Agent", value: "snapcron")
                if let body {
                    request.headers.add(name: "Content-Type", value: "application/json")
                    request.body = .bytes(ByteBuffer(bytes: body))
                }
                let (seconds, attoseconds) = requestTimeout.components
                let deadline = NIODeadline.now() + .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
                let response = try await Self.http.execute(request, deadline: deadline)
                _ = try? await response.body.collect(upTo: 64 * 1024)
                if (200..<300).contains(Int(response.status.code)) {
                    metadata["attempts"] = "\(attempt + 1)"
                    logger.info("Notification delivered", metadata: metadata)
                    return
                }
                lastError = "HTTP \(response.status.code)"
            } catch {
                lastError = "\(error)"
            }
        }
        metadata["error"] = "\(lastError)"
        metadata["attempts"] = "\(retryDelays.count + 1)"
        logger.error("Notification not delivered; gave up", metadata: metadata)
    }

    /// The URL without its path and query (ping URLs carry their secret in the path).
    static func redacted(_ url: String) -> String {
        guard let components = URLComponents(string: url), let scheme = components.scheme, let host = components.host
        else { return "(invalid URL)" }
        return "\(scheme)://\(host)\(components.port.map { ":\($0)" } ?? "")/…"
    }
}

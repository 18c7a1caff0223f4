public import AsyncHTTPClient
import Foundation
public import Logging
import NIOHTTP1
public import SnapshotBackend
import BackendTypes
import TWCCDescriptor

/// Images of TWCC VCS instances through the TWCC VCS REST API (see `docs/twcc-api.md`).
///
/// A target is a VCS site id (`101`) or site name (`web01`) in the configured project. `create` saves the site's
/// server as a custom image (`PUT images/<server>/save/`), `status` reads `GET images/<id>/`, `list` keeps the
/// project's images of that server, and `delete` removes only images whose description carries
/// ``marker`` and then waits for a 404.
///
/// Every request is paced by a token bucket (`requestsPerSecond`), limited in concurrency
/// (`maxRequestsInFlight`), bounded by `requestTimeout`, and retried on transient failures (connection errors,
/// timeouts, 429, 5xx) within one ``RetryPolicy`` budget per call.
public struct TWCCBackend: SnapshotBackend {
    /// The tag snapcron puts in the `desc` of every image it makes; `delete` refuses images without it.
    public static let marker = "[snapcron]"

    public let name: String
    public let configuration: Configuration
    private let client: APIClient

    /// - Parameters:
    ///   - name: the configured backend name, used in errors and logs.
    ///   - httpClient: the client to send with; the shared one by default (no shutdown needed).
    ///   - timing: real time by default; tests pass a virtual clock.
    public init(
        name: String = "twcc", configuration: Configuration, httpClient: HTTPClient = .shared,
        timing: Timing = .live
    ) {
        self.name = name
        self.configuration = configuration
        self.client = APIClient(
            name: name, configuration: configuration, http: httpClient, timing: timing,
            rateLimiter: RateLimiter(requestsPerSecond: configuration.requestsPerSecond, timing: timing),
            inFlight: ConcurrencyLimiter(limit: configuration.maxRequestsInFlight))
    }

    private func budget() -> RetryBudget {
        RetryBudget(policy: configuration.retry, timing: client.timing)
    }

    // MARK: - SnapshotBackend

    public func validate(target: String) throws {
        try Self.checkTarget(target, call: CallContext(backend: name, operation: .validate, target: target))
    }

    /// A VCS site id or name (``TargetRule/twcc``), refused as a permanent error of `call`.
    private static func checkTarget(_ target: String, call: CallContext) throws {
        if let problem = TargetRule.twcc.problem(with: target) { throw call.permanent(problem) }
    }

    public func create(target: String, name imageName: String, description: String, logger: Logger) async throws
        -> ImageRef
    {
        let call = CallContext(backend: name, operation: .create, target: target)
        try Self.checkTarget(target, call: call)
        guard !imageName.isEmpty else { throw call.permanent("empty image name") }
        var budget = budget()
        while true {
            do {
                let server = try await resolveServer(of: target, call: call, budget: &budget, logger: logger)
                // Idempotent by name: a create whose reply was lost already made the image.
                if let existing = try await images(ofServer: server.id, call: call, budget: &budget, logger: logger)
                    .first(where: { $0.name == imageName })
                {
                    logger.info(
                        "TWCC image exists, not creating again",
                        metadata: ["backend": "\(name)", "image.id": "\(existing.id)", "image.name": "\(imageName)"])
                    return ImageRef(id: String(existing.id))
                }
                let request = WireSaveRequest(
                    name: imageName, desc: Self.markedDescription(description), os: server.os ?? "",
                    osVersion: server.osVersion ?? "")
                let path = "images/\(server.id)/save/"
                // Sent once per round: after a lost reply the next round looks the name up before sending again.
                let reply = try await client.send(
                    .PUT, path, body: request, resend: .never, call: call, budget: &budget, logger: logger)
                if let image = try? JSONDecoder().decode(WireImage.self, from: reply.body) {
                    logger.info(
                        "TWCC image create started",
                        metadata: [
                            "backend": "\(name)", "image.id": "\(image.id)", "image.name": "\(imageName)",
                            "twcc.server": "\(server.id)",
                        ])
                    return ImageRef(id: String(image.id))
                }
                // A 2xx without an image object: find it by name (the way twccli itself does).
                if let made = try await images(ofServer: server.id, call: call, budget: &budget, logger: logger)
                    .first(where: { $0.name == imageName })
                {
                    return ImageRef(id: String(made.id))
                }
                throw call.transient("PUT \(path) succeeded but no image named \(imageName) is listed yet")
            } catch let error as SnapshotBackendError where error.isTransient {
                try await budget.backOff(after: error)
            }
        }
    }

    public func status(_ image: ImageRef, logger: Logger) async throws -> ImageState {
        let call = CallContext(backend: name, operation: .status, image: image)
        // TWCC image ids are integers: anything else was never made here.
        guard let id = Self.imageID(image) else { return .gone }
        var budget = budget()
        let reply = try await client.send(
            .GET, "images/\(id)/", acceptNotFound: true, call: call, budget: &budget, logger: logger)
        if reply.isNotFound { return .gone }
        let wire = try client.decode(WireImage.self, reply, "GET images/\(id)/", call: call)
        return try Self.state(of: wire, call: call)
    }

    public func list(target: String, logger: Logger) async throws -> [ImageInfo] {
        let call = CallContext(backend: name, operation: .list, target: target)
        try Self.checkTarget(target, call: call)
        var budget = budget()
        let server = try await resolveServer(of: target, call: call, budget: &budget, logger: logger)
        return try await images(ofServer: server.id, call: call, budget: &budget, logger: logger).compactMap { wire in
            let state = try Self.state(of: wire, call: call)
            guard state != .gone else { return nil }
            return ImageInfo(
                id: ImageRef(id: String(wire.id)), name: wire.name ?? "", description: wire.desc ?? "",
                target: target, createdAt: wire.createTime.flatMap(Self.parseTime), state: state, sizeBytes: nil)
        }
    }

    /// Nothing to ask: the API reports no image size (an image is as large as the VM's system disk), and a
    /// lookup through `list` would spend two calls of the rate budget per run for it.
    public func info(of image: ImageRef, target: String, logger: Logger) async throws -> ImageInfo? { nil }

    public func delete(_ image: ImageRef, logger: Logger) async throws {
        var call = CallContext(backend: name, operation: .delete, image: image)
        guard let id = Self.imageID(image) else { return }
        var budget = budget()
        let path = "images/\(id)/"
        let found = try await client.send(
            .GET, path, acceptNotFound: true, call: call, budget: &budget, logger: logger)
        if found.isNotFound { return }
        let wire = try client.decode(WireImage.self, found, "GET \(path)", call: call)
        call.target = wire.server?.id.map { "server \($0)" }
        // Only what snapcron made: a person's or another tool's image is never ours to remove.
        guard wire.isPublic != true, (wire.desc ?? "").contains(Self.marker) else {
            throw call.permanent(
                "refusing to delete image '\(wire.name ?? "")': its description lacks the snapcron marker "
                    + "\(Self.marker), so snapcron did not make it")
        }
        _ = try await client.send(.DELETE, path, acceptNotFound: true, call: call, budget: &budget, logger: logger)
        // Confirm: the image must answer 404 before the delete counts as done.
        while true {
            let after = try await client.send(
                .GET, path, acceptNotFound: true, call: call, budget: &budget, logger: logger)
            if after.isNotFound {
                logger.info("TWCC image deleted", metadata: ["backend": "\(name)", "image.id": "\(id)"])
                return
            }
            let state = (try? client.decode(WireImage.self, after, "GET \(path)", call: call))?.status ?? "?"
            try await budget.backOff(after: call.transient("image still present after DELETE (status \(state))"))
        }
    }

    // MARK: - Helpers

    /// The description sent to the API: the caller's text plus the marker (once).
    static func markedDescription(_ description: String) -> String {
        if description.contains(marker) { return description }
        return description.isEmpty ? marker : "\(description) \(marker)"
    }

    private static func imageID(_ image: ImageRef) -> Int? {
        guard !image.id.isEmpty, image.id.allSatisfy(\.isNumber), let id = Int(image.id), id > 0 else { return nil }
        return id
    }

    /// Maps the API's (Glance's, upper-cased) image status to an ``ImageState``.
    static func state(of image: WireImage, call: CallContext) throws -> ImageState {
        let status = (image.status ?? "").uppercased()
        switch status {
        case "QUEUED": return .queued
        case "SAVING", "UPLOADING", "IMPORTING": return .saving
        case "ACTIVE": return .active
        case "ERROR", "KILLED", "DEACTIVATED":
            let reason = image.statusReason.flatMap { $0.isEmpty ? nil : $0 }
            return .error(reason.map { "\(status): \($0)" } ?? status)
        case "DELETED", "PENDING_DELETE": return .gone
        default:
            var call = call
            call.image = ImageRef(id: String(image.id))
            throw call.permanent("image \(image.id) has an unknown status '\(image.status ?? "")'")
        }
    }

    /// Reads `2026-11-29T06:05:01.123456Z` (any fraction length, or none).
    static func parseTime(_ text: String) -> Date? {
        let fractional = Date.ISO8601FormatStyle(includingFractionalSeconds: true)
        if let date = try? fractional.parse(text) { return date }
        return try? Date.ISO8601FormatStyle().parse(text)
    }

    /// The server to save for `target` (a site id or name), with the `os` fields the save body needs.
    private func resolveServer(
        of target: String, call: CallContext, budget: inout RetryBudget, logger: Logger
    ) async throws -> WireServer {
        let project = String(configuration.projectID)
        let siteID: Int
        if let id = Int(target), target.allSatisfy(\.isNumber) {
            let reply = try await client.send(
                .GET, "sites/\(id)/", acceptNotFound: true, call: call, budget: &budget, logger: logger)
            if reply.isNotFound {
                throw call.permanent("no VCS site \(id) in project \(project) on \(configuration.platform)")
            }
            siteID = try client.decode(WireSite.self, reply, "GET sites/\(id)/", call: call).id
        } else {
            let reply = try await client.send(
                .GET, "sites/", query: [("project", project)], call: call, budget: &budget, logger: logger)
            let sites = try client.decode([WireSite].self, reply, "GET sites/", call: call)
                .filter { $0.name == target }
            guard let site = sites.first else {
                throw call.permanent("no VCS site named '\(target)' in project \(project)")
            }
            guard sites.count == 1 else {
                throw call.permanent(
                    "\(sites.count) VCS sites are named '\(target)' (ids \(sites.map { String($0.id) }.joined(separator: ", "))); use the id"
                )
            }
            siteID = site.id
        }
        let reply = try await client.send(
            .GET, "servers/", query: [("project", project), ("site", String(siteID))], call: call, budget: &budget,
            logger: logger)
        let servers = try client.decode([WireServer].self, reply, "GET servers/", call: call)
        // Like twccli, save the site's first server: a VCS site has one.
        guard let server = servers.first else { throw call.permanent("VCS site \(siteID) has no server to save") }
        return server
    }

    /// The project's images made from server `serverID` (the API has no server filter; twccli filters locally too).
    private func images(
        ofServer serverID: Int, call: CallContext, budget: inout RetryBudget, logger: Logger
    ) async throws -> [WireImage] {
        let reply = try await client.send(
            .GET, "images/", query: [("project", String(configuration.projectID))], call: call, budget: &budget,
            logger: logger)
        return try client.decode([WireImage].self, reply, "GET images/", call: call)
            .filter { $0.server?.id == serverID }
    }
}

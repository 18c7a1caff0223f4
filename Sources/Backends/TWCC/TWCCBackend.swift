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
/// `statuses(of:)` answers a whole batch with one project-wide `GET images/` (images missing from it are asked one
/// by one), and `listAll` returns that list, so following many images costs one request per pass.
///
/// Every request is paced by a token bucket (`requestsPerSecond`), limited in concurrency
/// (`maxRequestsInFlight`), bounded as a whole (body included) by `requestTimeout`, and retried on transient
/// failures (connection errors, timeouts, 429, 5xx) within one ``RetryPolicy`` budget per call. Requests go out
/// through a client of the backend's own that never follows redirects, and only to an `https://` base URL (or
/// plain `http://` on loopback), so the API key reaches no one but the API.
public struct TWCCBackend: SnapshotBackend {
    /// The tag snapcron puts in the `desc` of every image it makes; `delete` refuses images without it.
    public static let marker = "[snapcron]"

    public let name: String
    public let configuration: Configuration
    private let client: APIClient
    /// The server of each target, looked up once per ``Configuration/serverLookupLifetime``.
    private let servers: ServerDirectory

    /// - Parameters:
    ///   - name: the configured backend name, used in errors and logs.
    ///   - timing: real time by default; tests pass a virtual clock (the request timeout stays on real time).
    public init(name: String = "twcc", configuration: Configuration, timing: Timing = .live) {
        self.name = name
        self.configuration = configuration
        self.client = APIClient(name: name, configuration: configuration, timing: timing)
        self.servers = ServerDirectory(lifetime: configuration.serverLookupLifetime, timing: timing)
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
        try await create(target: target, name: imageName, description: description, nameIsFresh: false, logger: logger)
    }

    public func createImage(
        target: String, name imageName: String, description: String, nameIsFresh: Bool, logger: Logger
    ) async throws -> CreatedImage {
        CreatedImage(
            ref: try await create(
                target: target, name: imageName, description: description, nameIsFresh: nameIsFresh, logger: logger))
    }

    /// Saves `target`'s server as `imageName`, unless an image of that name already exists. With `nameIsFresh`
    /// (no earlier call can have used the name) the first round skips that lookup, which on a large project is
    /// the costliest request of a create; once a save has been sent, every later round looks again.
    func create(
        target: String, name imageName: String, description: String, nameIsFresh: Bool, logger: Logger
    ) async throws -> ImageRef {
        let call = CallContext(backend: name, operation: .create, target: target)
        try Self.checkTarget(target, call: call)
        guard !imageName.isEmpty else { throw call.permanent("empty image name") }
        var budget = budget()
        var nameMayExist = !nameIsFresh
        while true {
            do {
                let (server, remembered) = try await server(of: target, call: call, budget: &budget, logger: logger)
                // Idempotent by name: a create whose reply was lost already made the image.
                if nameMayExist,
                    let existing = try await images(ofServer: server.id, call: call, budget: &budget, logger: logger)
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
                nameMayExist = true
                let reply = try await client.send(
                    .PUT, path, body: request, acceptNotFound: remembered, resend: .never, call: call,
                    budget: &budget, logger: logger)
                if reply.isNotFound {
                    // The remembered server is gone (the instance was rebuilt or removed): look the site up again.
                    logger.info(
                        "TWCC server gone, looking its site up again",
                        metadata: ["backend": "\(name)", "twcc.server": "\(server.id)", "target": "\(target)"])
                    await servers.forget(target)
                    continue
                }
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
        let (server, _) = try await server(of: target, call: call, budget: &budget, logger: logger)
        return try await images(ofServer: server.id, call: call, budget: &budget, logger: logger).compactMap { wire in
            let state = try Self.state(of: wire, call: call)
            guard state != .gone else { return nil }
            return Self.info(of: wire, target: target, state: state)
        }
    }

    /// The states of `images` from one `GET images/?project=` (the project's list, which carries each image's
    /// status); an image missing from the list is asked with ``status(_:logger:)`` (a 404 there is `.gone`).
    ///
    /// When the list call fails, every image gets that error (transient or permanent as the failure was), so the
    /// cost of a pass stays one request however many images bake.
    public func statuses(
        of images: [ImageRef], logger: Logger
    ) async -> [ImageRef: Result<ImageState, SnapshotBackendError>] {
        var results: [ImageRef: Result<ImageState, SnapshotBackendError>] = [:]
        var wanted: [Int: [ImageRef]] = [:]
        for image in images {
            if let id = Self.imageID(image) {
                wanted[id, default: []].append(image)
            } else {
                results[image] = .success(.gone)  // never a TWCC image id
            }
        }
        guard !wanted.isEmpty else { return results }
        let call = CallContext(backend: name, operation: .status)
        var budget = budget()
        let listed: [WireImage]
        do {
            listed = try await projectImages(call: call, budget: &budget, logger: logger)
        } catch {
            let failure = error as? SnapshotBackendError ?? call.transient("\(error)")
            for image in wanted.values.joined() {
                var own = failure
                own.image = image
                results[image] = .failure(own)
            }
            return results
        }
        for wire in listed {
            guard let refs = wanted.removeValue(forKey: wire.id) else { continue }
            let outcome: Result<ImageState, SnapshotBackendError>
            do {
                outcome = .success(try Self.state(of: wire, call: call))
            } catch let error as SnapshotBackendError {
                outcome = .failure(error)
            } catch {
                outcome = .failure(call.permanent("\(error)"))
            }
            for ref in refs { results[ref] = outcome.mapError { Self.error($0, about: ref) } }
        }
        // Not listed: deleted, or not the project's; the image's own call says which.
        for (_, refs) in wanted.sorted(by: { $0.key < $1.key }) {
            let outcome: Result<ImageState, SnapshotBackendError>
            do {
                outcome = .success(try await status(refs[0], logger: logger))
            } catch let error as SnapshotBackendError {
                outcome = .failure(error)
            } catch {
                outcome = .failure(call.transient("\(error)"))
            }
            for ref in refs { results[ref] = outcome.mapError { Self.error($0, about: ref) } }
        }
        logger.debug(
            "TWCC statuses",
            metadata: ["backend": "\(name)", "twcc.images": "\(images.count)", "twcc.listed": "\(listed.count)"])
        return results
    }

    /// Every image of the project, in any state but gone: the caller picks snapcron's by the marker in the
    /// description. One `GET images/?project=`, plus one `GET sites/?project=` to name each image's target by its
    /// site id (the canonical spelling of a target); `target` is empty for an image whose server belongs to no
    /// site of the project (public images, images of removed instances).
    public func listAll(logger: Logger) async throws -> [ImageInfo]? {
        let call = CallContext(backend: name, operation: .list)
        var budget = budget()
        let listed = try await projectImages(call: call, budget: &budget, logger: logger)
        var siteOfServer: [Int: Int] = [:]
        if listed.contains(where: { $0.server?.id != nil }) {
            let reply = try await client.send(
                .GET, "sites/", query: [("project", String(configuration.projectID))], call: call, budget: &budget,
                logger: logger)
            for site in try client.decode([WireSite].self, reply, "GET sites/", call: call) {
                for server in site.servers ?? [] { siteOfServer[server.id] = site.id }
            }
        }
        return try listed.compactMap { wire in
            let state = try Self.state(of: wire, call: call)
            guard state != .gone else { return nil }
            let target = wire.server?.id.flatMap { siteOfServer[$0] }.map(String.init) ?? ""
            return Self.info(of: wire, target: target, state: state)
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

    private static func info(of wire: WireImage, target: String, state: ImageState) -> ImageInfo {
        ImageInfo(
            id: ImageRef(id: String(wire.id)), name: wire.name ?? "", description: wire.desc ?? "",
            target: target, createdAt: wire.createTime.flatMap(Self.parseTime), state: state, sizeBytes: nil)
    }

    /// `error` as the error of `image` (a batch's shared failure names each image it failed).
    private static func error(_ error: SnapshotBackendError, about image: ImageRef) -> SnapshotBackendError {
        var own = error
        own.image = image
        return own
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

    /// The server to save for `target`, and whether it was remembered from an earlier lookup rather than just
    /// looked up (a remembered one may have gone since).
    private func server(
        of target: String, call: CallContext, budget: inout RetryBudget, logger: Logger
    ) async throws -> (WireServer, remembered: Bool) {
        if let server = await servers.server(of: target) { return (server, true) }
        let server = try await resolveServer(of: target, call: call, budget: &budget, logger: logger)
        await servers.remember(server, of: target)
        return (server, false)
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
        try await projectImages(call: call, budget: &budget, logger: logger).filter { $0.server?.id == serverID }
    }

    /// Every image of the project: `GET images/?project=<id>`, a plain JSON array (the API does not paginate).
    private func projectImages(
        call: CallContext, budget: inout RetryBudget, logger: Logger
    ) async throws -> [WireImage] {
        let reply = try await client.send(
            .GET, "images/", query: [("project", String(configuration.projectID))], call: call, budget: &budget,
            logger: logger)
        return try client.decode([WireImage].self, reply, "GET images/", call: call)
    }
}

/// The server found for each target (site id or name), kept for a while so that creates on one site do not
/// repeat the two lookups each time.
///
/// Concurrent first creates on one site may each look it up; the scheduler's per-backend limit keeps that small.
actor ServerDirectory {
    private struct Entry {
        var server: WireServer
        var expires: Duration
    }

    private let lifetime: Duration
    private let timing: TWCCBackend.Timing
    private var entries: [String: Entry] = [:]

    init(lifetime: Duration, timing: TWCCBackend.Timing) {
        self.lifetime = lifetime
        self.timing = timing
    }

    /// The remembered server of `target`, unless its time is up.
    func server(of target: String) -> WireServer? {
        guard let entry = entries[target] else { return nil }
        guard timing.now() < entry.expires else {
            entries[target] = nil
            return nil
        }
        return entry.server
    }

    func remember(_ server: WireServer, of target: String) {
        guard lifetime > .zero else { return }
        entries[target] = Entry(server: server, expires: timing.now() + lifetime)
    }

    func forget(_ target: String) {
        entries[target] = nil
    }
}

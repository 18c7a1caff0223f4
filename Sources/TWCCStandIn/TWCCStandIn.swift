public import Foundation
import NIOConcurrencyHelpers
public import NIOCore
public import NIOHTTP1
import NIOPosix

/// A stand-in for the TWCC VCS API on a loopback port, written from `twcc-api.md` and checked against twccli.
///
/// It serves the calls of section 5 of that page with the same paths, headers, bodies, codes and error shapes, moves
/// images through QUEUED > SAVING > ACTIVE (as they are read, or as time passes on the `now` it was given), counts
/// requests per route, and injects faults. Everything it did not expect (an unknown route or query key, a missing
/// header, a bad body) is recorded in ``complaints``.
///
/// A benchmark drives it on simulated time:
/// ```swift
/// let standIn = TWCCStandIn(now: { simulated.now() }, keepsRequests: false)
/// standIn.setProgression(.baking(seconds: 600))
/// try await standIn.start()
/// // ... point a TWCC backend at standIn.baseURL, advance the simulated clock, poll ...
/// let lists = standIn.requestCount(.listImages)
/// ```
public final class TWCCStandIn: Sendable {
    public struct Site: Sendable {
        public var id: Int
        public var name: String
        public var serverID: Int
        public var status = "Ready"

        public init(id: Int, name: String, serverID: Int, status: String = "Ready") {
            self.id = id
            self.name = name
            self.serverID = serverID
            self.status = status
        }
    }

    public struct Server: Sendable {
        public var id: Int
        public var siteID: Int
        public var hostname: String
        public var os = "Ubuntu"
        public var osVersion = "22.04"

        public init(id: Int, siteID: Int, hostname: String, os: String = "Ubuntu", osVersion: String = "22.04") {
            self.id = id
            self.siteID = siteID
            self.hostname = hostname
            self.os = os
            self.osVersion = osVersion
        }
    }

    /// How a new image moves: each step is a status held until its ``Step/Advance`` is used up; the last step is
    /// kept for good.
    public struct Progression: Sendable {
        public struct Step: Sendable {
            /// What ends a step.
            public enum Advance: Sendable, Hashable {
                /// This many status reads (`GET images/<id>/`, and lists when lists advance images); 0 = never.
                case reads(Int)
                /// This much time on the stand-in's `now`, whether or not anyone looks.
                case seconds(TimeInterval)
            }

            public var status: String
            public var advance: Advance

            public init(_ status: String, _ advance: Advance) {
                self.status = status
                self.advance = advance
            }
        }

        public var steps: [Step]
        /// The `status_reason` of an `ERROR` image.
        public var reason = ""

        public init(steps: [Step], reason: String = "") {
            precondition(!steps.isEmpty, "a progression needs at least one step")
            self.steps = steps
            self.reason = reason
        }

        /// QUEUED for one read, SAVING for one read, then ACTIVE.
        public static let normal = Progression(
            steps: [.init("QUEUED", .reads(1)), .init("SAVING", .reads(1)), .init("ACTIVE", .reads(0))])
        public static func slowQueued(reads: Int) -> Progression {
            Progression(steps: [.init("QUEUED", .reads(reads)), .init("SAVING", .reads(1)), .init("ACTIVE", .reads(0))])
        }
        public static let stuckQueued = Progression(steps: [.init("QUEUED", .reads(0))])
        public static let active = Progression(steps: [.init("ACTIVE", .reads(0))])
        public static func fails(_ reason: String) -> Progression {
            Progression(
                steps: [.init("QUEUED", .reads(1)), .init("SAVING", .reads(1)), .init("ERROR", .reads(0))],
                reason: reason)
        }

        /// QUEUED, then SAVING, then ACTIVE `seconds` after the create, on the stand-in's `now`.
        ///
        /// The first tenth of the bake is spent QUEUED (the API's queue), the rest SAVING.
        public static func baking(seconds: TimeInterval) -> Progression {
            timed(queued: seconds / 10, saving: seconds - seconds / 10)
        }

        /// QUEUED for `queued` seconds, SAVING for `saving` seconds, then `final` (ACTIVE, or ERROR with `reason`).
        public static func timed(
            queued: TimeInterval, saving: TimeInterval, final: String = "ACTIVE", reason: String = ""
        ) -> Progression {
            Progression(
                steps: [.init("QUEUED", .seconds(queued)), .init("SAVING", .seconds(saving)), .init(final, .reads(0))],
                reason: reason)
        }
    }

    public struct Image: Sendable {
        public var id: Int
        public var name: String
        public var desc: String
        public var serverID: Int?
        public var isPublic = false
        public var username: String
        public var createTime: String
        public var progression: Progression = .normal
        public var step = 0
        public var readsInStep = 0
        /// When the current step began, on the stand-in's `now`.
        public var stepStarted: Date

        public var status: String { progression.steps[step].status }

        init(
            id: Int, name: String, desc: String, serverID: Int?, isPublic: Bool = false, username: String,
            createTime: String, progression: Progression = .normal, now: Date
        ) {
            self.id = id
            self.name = name
            self.desc = desc
            self.serverID = serverID
            self.isPublic = isPublic
            self.username = username
            self.createTime = createTime
            self.progression = progression
            self.stepStarted = now
        }

        /// Moves through the timed steps whose time is up at `now`.
        mutating func settle(at now: Date) {
            while step < progression.steps.count - 1, case .seconds(let length) = progression.steps[step].advance {
                let end = stepStarted.addingTimeInterval(length)
                guard now >= end else { return }
                step += 1
                readsInStep = 0
                stepStarted = end
            }
        }

        /// Counts one status read and moves on when this step's reads are used up.
        mutating func read(at now: Date) {
            guard step < progression.steps.count - 1, case .reads(let reads) = progression.steps[step].advance,
                reads > 0
            else { return }
            readsInStep += 1
            if readsInStep >= reads {
                step += 1
                readsInStep = 0
                stepStarted = now
            }
        }
    }

    /// One injected fault, applied to the next `times` matching requests.
    public struct Fault: Sendable {
        public enum Kind: Sendable {
            /// Answer with this status and JSON body.
            case reply(Int, json: String, headers: [(String, String)] = [])
            /// Never answer (the client's timeout fires).
            case hang
            /// Answer normally after a pause.
            case delay(TimeAmount)
            /// Do the work, then never answer: a reply lost on the way back.
            case lostReply
            /// Send a 200 head, then one byte of body every `every`, for ever (until the client hangs up).
            case trickle(every: TimeAmount)
        }

        public var method: HTTPMethod?
        /// Matches when the path after `/api/v3/<platform>/` starts with this.
        public var pathPrefix: String
        public var times: Int
        public var kind: Kind
    }

    /// A request as received.
    public struct Request: Sendable {
        public var method: HTTPMethod
        public var uri: String
        /// The path after `/api/v3/<platform>/`, e.g. `images/555/save/`.
        public var path: String
        public var query: [(String, String)]
        public var headers: HTTPHeaders
        public var body: String
    }

    /// A kind of request: the method and the path with its ids replaced by `<id>`, e.g. `GET images/<id>/`.
    public struct Route: Hashable, Sendable, CustomStringConvertible {
        public var method: String
        public var path: String

        public init(_ method: String, _ path: String) {
            self.method = method
            self.path = path
        }

        public static let listSites = Route("GET", "sites/")
        public static let getSite = Route("GET", "sites/<id>/")
        public static let listServers = Route("GET", "servers/")
        public static let getServer = Route("GET", "servers/<id>/")
        public static let saveImage = Route("PUT", "images/<id>/save/")
        public static let listImages = Route("GET", "images/")
        public static let getImage = Route("GET", "images/<id>/")
        public static let deleteImage = Route("DELETE", "images/<id>/")

        /// The route of `method` on `path` (the part after `/api/v3/<platform>/`).
        public init(method: HTTPMethod, path: String) {
            let shape = path.split(separator: "/", omittingEmptySubsequences: false)
                .map { !$0.isEmpty && $0.allSatisfy(\.isNumber) ? "<id>" : String($0) }.joined(separator: "/")
            self.init(method.rawValue, shape)
        }

        public var description: String { "\(method) \(path)" }
    }

    struct State: Sendable {
        var sites: [Site] = []
        var servers: [Server] = []
        var images: [Int: Image] = [:]
        var nextImageID = 900
        var nextSiteID = 200
        var nextServerID = 600
        var nextProgression: Progression = .normal
        var faults: [Fault] = []
        var requests: [Request] = []
        var counts: [Route: Int] = [:]
        var complaints: [String] = []
        var clock = Date(timeIntervalSince1970: 1_795_000_000)
        var inFlight = 0
        var maxInFlight = 0
        /// The real API moves images on with time; with read-based progressions reads do. By default only
        /// `GET images/<id>/` counts, so a test's own creates and lists leave other images alone; twccli's `-wait`
        /// polls only the list.
        var listsAdvanceImages = false
    }

    public let apiKey: String
    public let platform: String
    public let projectID: Int
    public let username: String
    private let clock: (@Sendable () -> Date)?
    private let keepsRequests: Bool
    private let state: NIOLockedValueBox<State>
    private let channel: NIOLockedValueBox<(any Channel)?>

    /// The port it listens on, on 127.0.0.1.
    public var port: Int { channel.withLockedValue { $0?.localAddress?.port ?? 0 } }
    public var baseURL: String { "http://127.0.0.1:\(port)" }

    /// - Parameters:
    ///   - now: the time timed progressions (``Progression/baking(seconds:)``) and `create_time` are measured on;
    ///     a benchmark passes its simulated clock. Without it, timed steps run on the real clock and `create_time`
    ///     moves 61 s per created image.
    ///   - keepsRequests: whether every request is kept for ``requests``; a long benchmark turns it off and reads
    ///     ``requestCount(_:)`` only.
    public init(
        apiKey: String = "0b3c2e1a-5d4f-4e6a-9b8c-7d6e5f4a3b2c", platform: String = "openstack-taichung-default-2",
        projectID: Int = 4242, username: String = "snapcron-test", now: (@Sendable () -> Date)? = nil,
        keepsRequests: Bool = true
    ) {
        self.apiKey = apiKey
        self.platform = platform
        self.projectID = projectID
        self.username = username
        self.clock = now
        self.keepsRequests = keepsRequests
        let start = now?() ?? Date()
        var initial = State()
        initial.sites = [
            Site(id: 101, name: "web01", serverID: 555), Site(id: 102, name: "db01", serverID: 556),
            Site(id: 103, name: "twin", serverID: 557), Site(id: 104, name: "twin", serverID: 558),
        ]
        initial.servers = [
            Server(id: 555, siteID: 101, hostname: "web01"), Server(id: 556, siteID: 102, hostname: "db01"),
            Server(id: 557, siteID: 103, hostname: "twin-a"), Server(id: 558, siteID: 104, hostname: "twin-b"),
        ]
        // A public image (server null) and a person's own image of web01: both must be left alone.
        initial.images[1] = Image(
            id: 1, name: "Ubuntu 22.04", desc: "public", serverID: nil, isPublic: true, username: "admin",
            createTime: "2026-01-01T00:00:00.000000Z", progression: .active, now: start)
        initial.images[2] = Image(
            id: 2, name: "manual-web01", desc: "taken by hand", serverID: 555, username: username,
            createTime: "2026-01-02T00:00:00.000000Z", progression: .active, now: start)
        self.state = NIOLockedValueBox(initial)
        self.channel = NIOLockedValueBox(nil)
    }

    /// Binds to a free loopback port.
    public func start() async throws {
        let bound = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(Handler(standIn: self))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        channel.withLockedValue { $0 = bound }
    }

    public func stop() async {
        let bound = channel.withLockedValue { $0 }
        try? await bound?.close()
    }

    private func now() -> Date {
        clock?() ?? Date()
    }

    // MARK: - Controls

    public func inject(_ kind: Fault.Kind, method: HTTPMethod? = nil, path: String = "", times: Int = 1) {
        state.withLockedValue { $0.faults.append(Fault(method: method, pathPrefix: path, times: times, kind: kind)) }
    }

    /// How the next created images will progress.
    public func setProgression(_ progression: Progression) {
        state.withLockedValue { $0.nextProgression = progression }
    }

    /// Makes every `GET images/` count as a read of each image, for clients that poll the list.
    public func setListsAdvanceImages(_ value: Bool) {
        state.withLockedValue { $0.listsAdvanceImages = value }
    }

    /// Removes an image as if someone deleted it in the portal.
    public func deleteBehindOurBack(_ id: Int) {
        state.withLockedValue { _ = $0.images.removeValue(forKey: id) }
    }

    /// Adds a VCS site with one server and returns it (ids from 200 and 600 up).
    @discardableResult
    public func addSite(name: String) -> Site {
        state.withLockedValue { state in
            let site = Site(id: state.nextSiteID, name: name, serverID: state.nextServerID)
            state.nextSiteID += 1
            state.nextServerID += 1
            state.sites.append(site)
            state.servers.append(Server(id: site.serverID, siteID: site.id, hostname: name))
            return site
        }
    }

    /// Gives site `siteID` a new server, as a rebuilt VCS instance gets; the old server id answers 404 from then on.
    /// Returns the new server id.
    @discardableResult
    public func replaceServer(ofSite siteID: Int) -> Int? {
        state.withLockedValue { state in
            guard let index = state.sites.firstIndex(where: { $0.id == siteID }) else { return nil }
            let old = state.sites[index].serverID
            let new = state.nextServerID
            state.nextServerID += 1
            let hostname = state.servers.first { $0.id == old }?.hostname ?? state.sites[index].name
            state.servers.removeAll { $0.id == old }
            state.servers.append(Server(id: new, siteID: siteID, hostname: hostname))
            state.sites[index].serverID = new
            return new
        }
    }

    /// Every request received so far (empty when made with `keepsRequests: false`).
    public var requests: [Request] { state.withLockedValue { $0.requests } }
    public var complaints: [String] { state.withLockedValue { $0.complaints } }
    /// The images as they are now (timed steps settled at the current `now`).
    public var images: [Int: Image] {
        let now = now()
        return state.withLockedValue { state in
            for id in state.images.keys { state.images[id]!.settle(at: now) }
            return state.images
        }
    }
    /// The most requests that were being handled at once.
    public var maxInFlight: Int { state.withLockedValue { $0.maxInFlight } }

    /// How many requests of `route` arrived (faulted ones included).
    public func requestCount(_ route: Route) -> Int {
        state.withLockedValue { $0.counts[route] ?? 0 }
    }

    /// Requests per route so far.
    public var requestCounts: [Route: Int] { state.withLockedValue { $0.counts } }

    /// All requests so far, every route.
    public var requestTotal: Int { state.withLockedValue { $0.counts.values.reduce(0, +) } }

    /// Starts counting from zero (the kept ``requests`` are cleared too).
    public func resetRequestCounts() {
        state.withLockedValue {
            $0.counts = [:]
            $0.requests = []
        }
    }

    public func requests(_ method: HTTPMethod, _ prefix: String) -> [Request] {
        requests.filter { $0.method == method && $0.path.hasPrefix(prefix) }
    }

    fileprivate func answered() {
        state.withLockedValue { $0.inFlight -= 1 }
    }

    // MARK: - Handling

    struct Response: Sendable {
        var status: Int
        var body: String
        var headers: [(String, String)] = []
        var delay: TimeAmount?
        var hang = false
        var trickle: TimeAmount?
    }

    private static func json(_ value: Any) -> String {
        let data = try! JSONSerialization.data(withJSONObject: value, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    private static let notFound = Response(status: 404, body: #"{"detail": "Not found."}"#)

    func handle(method: HTTPMethod, uri: String, headers: HTTPHeaders, body: String) -> Response {
        let now = now()
        return state.withLockedValue { state in
            let (rawPath, query) = Self.split(uri)
            let prefix = "/api/v3/\(platform)/"
            let path = rawPath.hasPrefix(prefix) ? String(rawPath.dropFirst(prefix.count)) : rawPath
            if keepsRequests {
                state.requests.append(
                    Request(method: method, uri: uri, path: path, query: query, headers: headers, body: body))
            }
            state.counts[Route(method: method, path: path), default: 0] += 1
            state.inFlight += 1
            state.maxInFlight = max(state.maxInFlight, state.inFlight)
            var notes: [String] = []
            func complain(_ text: String) { notes.append("\(method.rawValue) \(uri): \(text)") }
            defer { state.complaints += notes }

            guard rawPath.hasPrefix(prefix) else {
                complain("path is not under \(prefix)")
                return Self.notFound
            }
            // The gateway checks the key first: a wrong or missing one gets its own `message` shape.
            guard headers.first(name: "x-api-key") == apiKey else {
                if headers.first(name: "x-api-key") == nil { complain("no x-api-key header") }
                return Response(status: 401, body: #"{"message": "Your request is unauthorized."}"#)
            }
            if headers.first(name: "x-api-host") != platform {
                complain("x-api-host is \(headers.first(name: "x-api-host") ?? "missing"), not \(platform)")
            }
            if headers.first(name: "content-type") != "application/json" {
                complain("content-type is \(headers.first(name: "content-type") ?? "missing")")
            }
            if headers.first(name: "user-agent") == nil { complain("no user-agent") }

            if let index = state.faults.firstIndex(where: {
                ($0.method == nil || $0.method == method) && path.hasPrefix($0.pathPrefix) && $0.times > 0
            }) {
                state.faults[index].times -= 1
                let fault = state.faults[index]
                if state.faults[index].times == 0 { state.faults.remove(at: index) }
                switch fault.kind {
                case .reply(let status, let json, let headers):
                    return Response(status: status, body: json, headers: headers)
                case .hang:
                    return Response(status: 0, body: "", hang: true)
                case .delay(let amount):
                    var response = route(&state, method, path, query, body, now, complain)
                    response.delay = amount
                    return response
                case .lostReply:
                    var response = route(&state, method, path, query, body, now, complain)
                    response.hang = true
                    return response
                case .trickle(let every):
                    return Response(status: 200, body: "", trickle: every)
                }
            }
            return route(&state, method, path, query, body, now, complain)
        }
    }

    private static func split(_ uri: String) -> (String, [(String, String)]) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri, []) }
        let query = uri[uri.index(after: mark)...].split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1).map {
                String($0).removingPercentEncoding ?? String($0)
            }
            return (parts[0], parts.count > 1 ? parts[1] : "")
        }
        return (String(uri[..<mark]), query)
    }

    private func route(
        _ state: inout State, _ method: HTTPMethod, _ path: String, _ query: [(String, String)], _ body: String,
        _ now: Date, _ complain: (String) -> Void
    ) -> Response {
        let parts = path.split(separator: "/").map(String.init)
        guard path.hasSuffix("/") else {
            complain("path does not end in /")
            return Self.notFound
        }
        func allowQuery(_ allowed: Set<String>, required: Set<String> = []) -> Bool {
            for (key, _) in query where !allowed.contains(key) { complain("unexpected query parameter \(key)") }
            let keys = Set(query.map(\.0))
            for key in required where !keys.contains(key) { complain("missing query parameter \(key)") }
            if let project = query.first(where: { $0.0 == "project" })?.1, project != String(projectID) {
                return false
            }
            return true
        }
        let forbidden = Response(
            status: 403, body: #"{"detail": "You do not have permission to perform this action."}"#)
        if method != .GET, method != .PUT, method != .DELETE, method != .PATCH || parts.first != "images" {
            complain("method \(method.rawValue) not used by twccli here")
        }

        switch (method, parts.count, parts.first) {
        case (.GET, 1, "sites"):
            guard allowQuery(["project", "sol_categ", "all_users"], required: ["project"]) else { return forbidden }
            return Response(status: 200, body: Self.json(state.sites.map(siteJSON)))
        case (.GET, 2, "sites"):
            _ = allowQuery([])
            guard let site = state.sites.first(where: { String($0.id) == parts[1] }) else { return Self.notFound }
            return Response(status: 200, body: Self.json(siteJSON(site)))
        case (.GET, 1, "servers"):
            guard allowQuery(["project", "site"], required: ["project", "site"]) else { return forbidden }
            let site = query.first { $0.0 == "site" }?.1
            let servers = state.servers.filter { String($0.siteID) == site }
            return Response(status: 200, body: Self.json(servers.map(serverJSON)))
        case (.GET, 2, "servers"):
            _ = allowQuery([])
            guard let server = state.servers.first(where: { String($0.id) == parts[1] }) else { return Self.notFound }
            return Response(status: 200, body: Self.json(serverJSON(server)))
        case (.PUT, 3, "images") where parts[2] == "save":
            _ = allowQuery([])
            guard let server = state.servers.first(where: { String($0.id) == parts[1] }) else { return Self.notFound }
            guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else {
                complain("body is not a JSON object: \(body)")
                return Response(status: 400, body: #"{"detail": "JSON parse error"}"#)
            }
            let expected: Set<String> = ["name", "desc", "os", "os_version"]
            if Set(object.keys) != expected {
                complain("save body keys are \(object.keys.sorted()), not \(expected.sorted())")
            }
            guard let name = object["name"] as? String, !name.isEmpty else {
                return Response(status: 400, body: #"{"detail": "name: This field is required."}"#)
            }
            guard let desc = object["desc"] as? String, object["os"] is String, object["os_version"] is String else {
                return Response(status: 400, body: #"{"detail": "desc, os and os_version are required."}"#)
            }
            let id = state.nextImageID
            state.nextImageID += 1
            let created: Date
            if clock != nil {
                created = now
            } else {
                state.clock += 61
                created = state.clock
            }
            let image = Image(
                id: id, name: name, desc: desc, serverID: server.id, username: username,
                createTime: Self.timestamp(created), progression: state.nextProgression, now: now)
            state.images[id] = image
            return Response(status: 201, body: Self.json(imageJSON(image, state)))
        case (.GET, 1, "images"):
            guard allowQuery(["project", "sol_categ", "all_users"], required: ["project"]) else { return forbidden }
            let ids = state.images.keys.sorted()
            for id in ids { state.images[id]!.settle(at: now) }
            let list = ids.map { imageJSON(state.images[$0]!, state) }
            if state.listsAdvanceImages { for id in ids { state.images[id]!.read(at: now) } }
            return Response(status: 200, body: Self.json(list))
        case (.GET, 2, "images"):
            _ = allowQuery([])
            guard let id = Int(parts[1]), state.images[id] != nil else { return Self.notFound }
            state.images[id]!.settle(at: now)
            // The reply shows the state as of this read; the read then counts toward the next step.
            let reply = Response(status: 200, body: Self.json(imageJSON(state.images[id]!, state)))
            state.images[id]!.read(at: now)
            return reply
        case (.DELETE, 2, "images"):
            // twccli leaks the list call's parameters into DELETE; the API ignores them.
            _ = allowQuery(["project", "sol_categ"])
            guard let id = Int(parts[1]), state.images[id] != nil else { return Self.notFound }
            state.images[id] = nil
            return Response(status: 204, body: "")
        default:
            complain("unknown route")
            return Self.notFound
        }
    }

    private static func timestamp(_ date: Date) -> String {
        // Exactly six fraction digits: twccli's timezone2local cuts the last 8 characters.
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss'.'SSSSSS'Z'"
        return formatter.string(from: date)
    }

    private func siteJSON(_ site: Site) -> [String: Any] {
        [
            "id": site.id, "name": site.name, "status": site.status, "create_time": "2026-01-01T00:00:00.000000Z",
            "public_ip": "203.0.113.\(site.id % 250)", "termination_protection": false,
            "servers": [["id": site.serverID]], "user": ["username": username],
        ]
    }

    private func serverJSON(_ server: Server) -> [String: Any] {
        [
            "id": server.id, "hostname": server.hostname, "os": server.os, "os_version": server.osVersion,
            "status": "ACTIVE", "private_nets": [["name": "default_network", "ip": "10.0.0.\(server.id % 250)"]],
            "security_groups": [["id": "sg-\(server.id)", "name": "default"]],
        ]
    }

    private func imageJSON(_ image: Image, _ state: State) -> [String: Any] {
        let server: Any =
            image.serverID.map { id -> Any in
                ["id": id, "hostname": state.servers.first { $0.id == id }?.hostname ?? ""]
            } ?? NSNull()
        return [
            "id": image.id, "name": image.name, "desc": image.desc, "status": image.status,
            "status_reason": image.status == "ERROR" ? image.progression.reason : "",
            "create_time": image.createTime, "is_public": image.isPublic, "is_enabled": true,
            "ref_img_id": "6f1c0d2e-0000-4000-8000-\(String(format: "%012d", image.id))",
            "base_image": "Ubuntu 22.04", "server": server, "user": ["username": image.username],
        ]
    }

    /// One connection's HTTP/1.1 handling: collect a request, answer it (or not, for a hang).
    private final class Handler: ChannelInboundHandler {
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let standIn: TWCCStandIn
        var head: HTTPRequestHead?
        var body = ByteBuffer()

        init(standIn: TWCCStandIn) {
            self.standIn = standIn
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                self.head = head
                body.clear()
            case .body(var chunk):
                body.writeBuffer(&chunk)
            case .end:
                guard let head else { return }
                let response = standIn.handle(
                    method: head.method, uri: head.uri, headers: head.headers, body: String(buffer: body))
                if response.hang { return }
                if let interval = response.trickle {
                    trickle(every: interval, context: context)
                    return
                }
                let keepAlive = head.isKeepAlive
                if let delay = response.delay {
                    let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                    context.eventLoop.scheduleTask(in: delay) {
                        bound.value.0.write(response, keepAlive: keepAlive, context: bound.value.1)
                    }
                } else {
                    write(response, keepAlive: keepAlive, context: context)
                }
            }
        }

        /// A chunked 200 whose body never ends: one space every `interval` until the client goes away.
        func trickle(every interval: TimeAmount, context: ChannelHandlerContext) {
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Transfer-Encoding", value: "chunked")
            let head = HTTPResponseHead(version: .http1_1, status: .ok, headers: headers)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: "[")))), promise: nil)
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { task in
                let (handler, context) = bound.value
                guard context.channel.isActive else {
                    task.cancel()
                    handler.standIn.answered()
                    return
                }
                let space = ByteBuffer(string: " ")
                context.writeAndFlush(handler.wrapOutboundOut(.body(.byteBuffer(space))), promise: nil)
            }
        }

        func write(_ response: Response, keepAlive: Bool, context: ChannelHandlerContext) {
            var headers = HTTPHeaders()
            let buffer = ByteBuffer(string: response.body)
            if !response.body.isEmpty { headers.add(name: "Content-Type", value: "application/json") }
            headers.add(name: "Content-Length", value: String(buffer.readableBytes))
            for (name, value) in response.headers { headers.add(name: name, value: value) }
            let head = HTTPResponseHead(
                version: .http1_1, status: HTTPResponseStatus(statusCode: response.status), headers: headers)
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            if buffer.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil) }
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            standIn.answered()
            if !keepAlive {
                let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
                done.whenComplete { _ in bound.value.close(promise: nil) }
            }
        }
    }
}

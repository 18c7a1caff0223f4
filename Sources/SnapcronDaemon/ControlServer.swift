import ControlProtocol
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// The limits that keep one client from hurting the others or the scheduler.
public struct ControlServerLimits: Sendable, Hashable {
    /// The longest request line, in bytes; a longer one is answered with `lineTooLong` and the connection closed.
    public var maxLineLength = 1 << 20
    /// Connections served at once; one more is answered with `unavailable` and closed.
    public var maxConnections = 256
    /// Of those, the most one user other than root and the daemon's own may hold: one client cannot take them all.
    public var maxConnectionsPerUser = 64
    /// Connections beyond `maxConnections` kept for root and the daemon's own user, so that `systemctl reload`
    /// (which runs `snapcronctl reload` as root) works while other clients fill the server.
    public var reservedConnections = 16
    /// A connection with no request for this long is closed.
    public var idleTimeout: TimeAmount = .seconds(60)
    /// A request line must be complete this long after its first byte (a very slow client is closed).
    public var requestTimeout: TimeAmount = .seconds(10)
    /// Request lines waiting behind the one being answered; more is a client that does not read its answers.
    public var maxPendingRequests = 32
    /// An answer (or an error line) the client does not read for this long: the connection is closed.
    public var writeTimeout: TimeAmount = .seconds(30)

    public init() {}
}

/// Where and how the control socket is created.
public struct ControlSocketOptions: Sendable, Hashable {
    public var path: String
    /// File mode of the socket; 0660 lets root and the group connect, 0666 lets every local user read.
    public var mode: mode_t
    /// The group the socket file is given; nil keeps the daemon's group.
    public var group: String?

    public init(path: String, mode: mode_t = 0o660, group: String? = nil) {
        self.path = path
        self.mode = mode
        self.group = group
    }
}

/// A start-up failure of the control socket.
public struct ControlServerError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// The control socket: a Unix stream socket speaking JSON-RPC 2.0, one object per line.
///
/// Two event-loop threads of its own do all socket I/O; each request runs as a task, so a slow method never stalls
/// other connections, and only `status` and the changing methods visit the scheduler actor, briefly. Connections are
/// limited in number, line length, idle time and the time a line may take to arrive.
public final class ControlServer: Sendable {
    public let options: ControlSocketOptions
    public let limits: ControlServerLimits
    let service: ControlService
    let logger: Logger
    private let group: MultiThreadedEventLoopGroup
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)
    private let connections = NIOLockedValueBox(ConnectionCount())
    private let requests = NIOLockedValueBox(RequestsInFlight())
    private let stopped = NIOLockedValueBox(false)

    /// Requests being answered, and who waits for them to end (``stop()``).
    struct RequestsInFlight {
        var count = 0
        var waiters: [ResumeOnce] = []
    }

    /// How long ``stop()`` waits for requests being answered before it shuts the event loops down.
    static let stopGrace: Duration = .seconds(10)

    /// Open connections, in all and by user.
    struct ConnectionCount {
        var total = 0
        var byUser: [UInt32: Int] = [:]
    }

    public init(
        options: ControlSocketOptions, limits: ControlServerLimits = ControlServerLimits(), service: ControlService,
        logger: Logger
    ) {
        self.options = options
        self.limits = limits
        self.service = service
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    }

    /// Connections open now.
    public var connectionCount: Int { connections.withLockedValue { $0.total } }

    /// Creates the socket file (removing a stale one), sets its mode and group, and starts accepting.
    public func start() async throws {
        let path = options.path
        try Self.prepareDirectory(of: path)
        try Self.removeStaleSocket(at: path)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ControlConnectionHandler(server: self))
                }
            }
        // Bind under a temporary name, give it its group and mode, then rename it into place: clients never see
        // the socket with a wider mode than asked. (Not umask: it is process-wide, and other threads create
        // files at the same moment.)
        let temporary = path + ".\(getpid()).new"
        unlink(temporary)
        let channel: any Channel
        do {
            channel = try await bootstrap.bind(unixDomainSocketPath: temporary).get()
        } catch {
            throw ControlServerError("cannot listen on \(path): \(error)")
        }
        if let groupName = options.group {
            if let entry = getgrnam(groupName) {
                if chown(temporary, uid_t.max, entry.pointee.gr_gid) != 0 {
                    logger.warning(
                        "Cannot give the control socket its group",
                        metadata: [
                            "socket": "\(path)", "group": "\(groupName)",
                            "error": "\(String(cString: strerror(errno)))",
                        ])
                }
            } else {
                logger.warning(
                    "Control socket group does not exist; only root and snapcrond's user may change state",
                    metadata: ["socket": "\(path)", "group": "\(groupName)"])
            }
        }
        guard chmod(temporary, options.mode) == 0, rename(temporary, path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? await channel.close()
            unlink(temporary)
            throw ControlServerError("cannot set up \(path): \(reason)")
        }
        self.channel.withLockedValue { $0 = channel }
        logger.info(
            "Control socket listening",
            metadata: ["socket": "\(path)", "mode": "\(String(options.mode, radix: 8))"])
    }

    /// Stops accepting and removes the socket file, lets the requests being answered end (10 s at most), then
    /// closes the connections. Later calls do nothing.
    public func stop() async {
        // Once: the event loops cannot be shut down twice.
        guard !stopped.withLockedValue({ stopped in defer { stopped = true }; return stopped }) else { return }
        let channel = self.channel.withLockedValue { value -> (any Channel)? in
            defer { value = nil }
            return value
        }
        if let channel {
            try? await channel.close()
            unlink(options.path)
        }
        // An answer completes its promise on the connection's event loop: one that came after the loops were shut
        // down would be dropped (and NIO reports it). Requests being answered end first, within a bound.
        await requestsEnded(within: Self.stopGrace)
        try? await group.shutdownGracefully()
    }

    /// Requests being answered now.
    public var requestsInFlight: Int { requests.withLockedValue { $0.count } }

    /// Answers `line` in a task of its own and completes `promise` with the answer.
    func answer(_ line: [UInt8], peer: PeerCredentials?, completing promise: EventLoopPromise<ControlResponse?>) {
        requests.withLockedValue { $0.count += 1 }
        // Below the scheduler loop, which runs at the default priority (see `Daemon.run`): its fires run first. The
        // task completes the promise itself: awaiting it from a default-priority task would raise it back.
        Task(priority: .low) { [service, requests] in
            promise.succeed(await service.response(to: line, peer: peer))
            let waiters = requests.withLockedValue { state -> [ResumeOnce] in
                state.count -= 1
                guard state.count == 0 else { return [] }
                defer { state.waiters = [] }
                return state.waiters
            }
            for waiter in waiters { waiter.resume() }
        }
    }

    private func requestsEnded(within limit: Duration) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let wake = ResumeOnce(continuation)
            let idle = requests.withLockedValue { state -> Bool in
                if state.count == 0 { return true }
                state.waiters.append(wake)
                return false
            }
            if idle {
                wake.resume()
            } else {
                Task {
                    try? await Task.sleep(for: limit)
                    wake.resume()
                }
            }
        }
    }

    private static func prepareDirectory(of path: String) throws {
        let directory = (path as NSString).deletingLastPathComponent
        guard !directory.isEmpty, !FileManager.default.fileExists(atPath: directory) else { return }
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        } catch {
            throw ControlServerError("cannot create \(directory) for the control socket: \(error.localizedDescription)")
        }
    }

    /// Removes a socket file nobody listens on; refuses when another daemon answers there.
    private static func removeStaleSocket(at path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else {
            throw ControlServerError("\(path) exists and is not a socket; remove it or choose another --socket")
        }
        let probe = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(probe) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw ControlServerError("socket path too long: \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(probe, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if connected == 0 {
            throw ControlServerError("another snapcrond is listening on \(path); stop it or choose another --socket")
        }
        unlink(path)
    }

    /// Counts a new connection of `peer` in; nil when admitted, else why not. root and the daemon's own user are
    /// not held to the per-user cap and get the reserved connections; a peer whose credentials could not be read
    /// counts as a user of its own.
    func admit(_ peer: PeerCredentials?) -> String? {
        // Not the socket's group: with mode 0660 every client is in it, and the reserve would be no reserve.
        let ownUID = service.environment.access.ownUID
        let privileged = peer.map { $0.uid == 0 || $0.uid == ownUID } ?? false
        let user = peer?.uid ?? UInt32.max
        let total = limits.maxConnections + (privileged ? limits.reservedConnections : 0)
        return connections.withLockedValue { count -> String? in
            guard count.total < total else {
                return "snapcrond serves at most \(limits.maxConnections) connections; try again"
            }
            guard privileged || count.byUser[user, default: 0] < limits.maxConnectionsPerUser else {
                return "snapcrond serves at most \(limits.maxConnectionsPerUser) connections per user; "
                    + "close some of yours"
            }
            count.total += 1
            count.byUser[user, default: 0] += 1
            return nil
        }
    }

    func release(_ peer: PeerCredentials?) {
        let user = peer?.uid ?? UInt32.max
        connections.withLockedValue { count in
            count.total -= 1
            count.byUser[user, default: 1] -= 1
            if count.byUser[user] == 0 { count.byUser[user] = nil }
        }
    }
}

/// One connection: frames lines, answers them in order, enforces the limits.
final class ControlConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let server: ControlServer
    private var framer: LineFramer
    private var pending: [[UInt8]] = []
    private var busy = false
    private var inputClosed = false
    private var closing = false
    /// nil until the peer's credentials are read and the server has counted it in (or refused it).
    private var admitted: Bool?
    private var peer: PeerCredentials?
    private var idleTimer: Scheduled<Void>?
    private var lineTimer: Scheduled<Void>?
    private var writeTimer: Scheduled<Void>?
    /// Bytes waiting to be written when the write timer was armed: fewer at its end means the client reads.
    private var bufferedAtWriteTimer = 0

    init(server: ControlServer) {
        self.server = server
        framer = LineFramer(maxLength: server.limits.maxLineLength)
    }

    func channelActive(context: ChannelHandlerContext) {
        armIdleTimer(context)
        context.fireChannelActive()
        guard let provider = context.channel as? any SocketOptionProvider else {
            decideAdmission(context, peer: nil)
            return
        }
        // On the channel's own loop these complete at once, before any request is read.
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let credentials: EventLoopFuture<PeerCredentials.UCred> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        let groups: EventLoopFuture<PeerCredentials.GroupList> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(PeerCredentials.soPeerGroups))
        credentials.whenComplete { credentials in
            groups.whenComplete { groups in
                let (handler, context) = loopBound.value
                let peer = (try? credentials.get()).map {
                    PeerCredentials(
                        pid: $0.pid, uid: $0.uid, gid: $0.gid, groups: (try? groups.get())?.groups(besides: $0.gid))
                }
                handler.decideAdmission(context, peer: peer)
            }
        }
    }

    private func decideAdmission(_ context: ChannelHandlerContext, peer: PeerCredentials?) {
        guard admitted == nil, !closing else { return }
        self.peer = peer
        if let refusal = server.admit(peer) {
            admitted = false
            fail(context, RPCError(.unavailable, refusal))
            return
        }
        admitted = true
        processNext(context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        idleTimer?.cancel()
        lineTimer?.cancel()
        writeTimer?.cancel()
        if admitted == true {
            admitted = false
            server.release(peer)
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        let buffer = unwrapInboundIn(data)
        buffer.withUnsafeReadableBytes { framer.append($0) }
        var requests = 0
        do {
            while let line = try framer.nextLine() {
                if line.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }) { continue }
                pending.append(line)
                requests += 1
            }
        } catch {
            fail(context, RPCError(.lineTooLong, "request line longer than \(server.limits.maxLineLength) bytes"))
            return
        }
        guard pending.count <= server.limits.maxPendingRequests else {
            fail(
                context,
                RPCError(
                    .unavailable, "more than \(server.limits.maxPendingRequests) requests waiting; read the answers"))
            return
        }
        if framer.hasPartialLine {
            if lineTimer == nil { armLineTimer(context) }
        } else {
            lineTimer?.cancel()
            lineTimer = nil
        }
        // Blank lines keep nothing alive: only requests count as activity.
        if requests > 0 { armIdleTimer(context) }
        processNext(context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event as? ChannelEvent == .inputClosed {
            inputClosed = true
            lineTimer?.cancel()
            lineTimer = nil
            if let last = try? framer.finish(), !last.isEmpty { pending.append(last) }
            if !busy && pending.isEmpty {
                closing = true
                context.close(promise: nil)
            } else {
                processNext(context)
            }
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            writeTimer?.cancel()
            writeTimer = nil
        } else if writeTimer == nil {
            armWriteTimer(context)
        }
        processNext(context)
        context.fireChannelWritabilityChanged()
    }

    /// A client that stops reading would hold its connection (and a slot) for ever: without progress for the
    /// write timeout, it is closed. One that reads slowly but steadily makes progress and stays.
    private func armWriteTimer(_ context: ChannelHandlerContext) {
        bufferedAtWriteTimer = Self.bufferedBytes(context)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        writeTimer = context.eventLoop.scheduleTask(in: server.limits.writeTimeout) {
            let (handler, context) = loopBound.value
            handler.writeTimer = nil
            guard !context.channel.isWritable else { return }
            // While unwritable nothing new is queued (see `processNext`): fewer bytes waiting is progress.
            if Self.bufferedBytes(context) < handler.bufferedAtWriteTimer {
                handler.armWriteTimer(context)
            } else {
                context.close(promise: nil)
            }
        }
    }

    private static func bufferedBytes(_ context: ChannelHandlerContext) -> Int {
        (try? context.channel.syncOptions?.getOption(ChannelOptions.bufferedWritableBytes)) ?? 0
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        closing = true
        context.close(promise: nil)
    }

    /// Answers the next waiting line, one at a time so that answers keep the order of requests.
    private func processNext(_ context: ChannelHandlerContext) {
        guard admitted == true, !busy, !closing, !pending.isEmpty, context.channel.isWritable else { return }
        busy = true
        let line = pending.removeFirst()
        let promise = context.eventLoop.makePromise(of: ControlResponse?.self)
        server.answer(line, peer: peer, completing: promise)
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        promise.futureResult.whenSuccess { response in
            let (handler, context) = loopBound.value
            handler.finished(context, response: response)
        }
    }

    private func finished(_ context: ChannelHandlerContext, response: ControlResponse?) {
        busy = false
        guard !closing, context.channel.isActive else { return }
        if let response {
            // Parts go out with one writev; a shared `jobs` result is not copied.
            for part in response.parts { context.write(wrapOutboundOut(part), promise: nil) }
            context.flush()
        }
        armIdleTimer(context)
        if inputClosed && pending.isEmpty {
            closing = true
            context.close(promise: nil)
        } else {
            processNext(context)
        }
    }

    /// Writes one error line, then closes.
    private func fail(_ context: ChannelHandlerContext, _ error: RPCError) {
        guard !closing else { return }
        closing = true
        pending.removeAll()
        idleTimer?.cancel()
        lineTimer?.cancel()
        let line = ResponseWriter.error(id: .null, error)
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: line))).whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
        // The write completes only when the peer reads; one that does not is closed all the same.
        context.eventLoop.scheduleTask(in: .seconds(1)) { loopBound.value.close(promise: nil) }
    }

    private func armIdleTimer(_ context: ChannelHandlerContext) {
        idleTimer?.cancel()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let timeout = server.limits.idleTimeout
        idleTimer = context.eventLoop.scheduleTask(in: timeout) {
            let (handler, context) = loopBound.value
            // A request being answered is not idleness; its answer re-arms the timer.
            guard !handler.busy else { return }
            handler.fail(context, RPCError(.unavailable, "idle for \(Self.seconds(timeout)); closing"))
        }
    }

    private func armLineTimer(_ context: ChannelHandlerContext) {
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let timeout = server.limits.requestTimeout
        lineTimer = context.eventLoop.scheduleTask(in: timeout) {
            let (handler, context) = loopBound.value
            handler.fail(
                context, RPCError(.unavailable, "request line not completed within \(Self.seconds(timeout)); closing"))
        }
    }

    private static func seconds(_ amount: TimeAmount) -> String {
        let milliseconds = amount.nanoseconds / 1_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000)s" : "\(milliseconds)ms"
    }
}

/// A continuation resumed by the first of several wakers (requests ended, or the grace period passed).
final class ResumeOnce: Sendable {
    private let continuation = NIOLockedValueBox<CheckedContinuation<Void, Never>?>(nil)

    init(_ continuation: CheckedContinuation<Void, Never>) {
        self.continuation.withLockedValue { $0 = continuation }
    }

    func resume() {
        let continuation = self.continuation.withLockedValue { value in
            defer { value = nil }
            return value
        }
        continuation?.resume()
    }
}

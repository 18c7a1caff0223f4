import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SnapcronCore
import SnapcronMetrics

#if canImport(Glibc)
    import Glibc
#endif

/// `GET /metrics` over HTTP/1.1 on a TCP address or a Unix socket (`[daemon] metrics_listen`).
///
/// Answers from the published exposition (``DaemonMetrics/exposition``): a scrape costs no rendering and never
/// visits the scheduler. TCP peers outside `metrics_allow` (loopback by default) get 403. One event-loop thread of
/// its own; at most ``maxConnections`` connections, each closed after ``idleTimeout`` without a request.
public final class MetricsServer: Sendable {
    public let listen: MetricsListen
    let allow: [IPAddressRange]
    let metrics: DaemonMetrics
    let logger: Logger
    static let maxConnections = 64
    static let idleTimeout: TimeAmount = .seconds(30)
    /// Unix socket mode: readable by every local user, as a loopback port is.
    static let socketMode: mode_t = 0o666
    private let group: MultiThreadedEventLoopGroup
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)
    private let stopped = NIOLockedValueBox(false)
    let connections = NIOLockedValueBox(0)

    public init(listen: MetricsListen, allow: [IPAddressRange], metrics: DaemonMetrics, logger: Logger) {
        self.listen = listen
        self.allow = allow
        self.metrics = metrics
        self.logger = logger
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    }

    /// Where it listens (the port chosen when `metrics_listen` gave port 0 in tests).
    public var localAddress: SocketAddress? { channel.withLockedValue { $0?.localAddress } }

    public func start() async throws {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { [self] channel in
                channel.pipeline.configureHTTPServerPipeline(withErrorHandling: true).flatMapThrowing {
                    try channel.pipeline.syncOperations.addHandlers([
                        IdleStateHandler(readTimeout: Self.idleTimeout), MetricsHTTPHandler(server: self),
                    ])
                }
            }
        let bound: any Channel
        switch listen {
        case .tcp(let host, let port):
            do {
                bound = try await bootstrap.bind(host: host, port: port).get()
            } catch {
                throw MetricsServerError("metrics_listen \(listen): cannot listen: \(error)")
            }
        case .unix(let path):
            var info = stat()
            if lstat(path, &info) == 0 {
                guard (info.st_mode & S_IFMT) == S_IFSOCK else {
                    throw MetricsServerError("metrics_listen \(path) exists and is not a socket")
                }
                unlink(path)
            }
            do {
                bound = try await bootstrap.bind(unixDomainSocketPath: path).get()
            } catch {
                throw MetricsServerError("metrics_listen \(path): cannot listen: \(error)")
            }
            chmod(path, Self.socketMode)
        }
        channel.withLockedValue { $0 = bound }
        logger.info(
            "Metrics listening",
            metadata: [
                "event": "metrics.listening", "listen": "\(listen)",
            ])
    }

    public func stop() async {
        // Once: the event loop cannot be shut down twice.
        guard !stopped.withLockedValue({ stopped in defer { stopped = true }; return stopped }) else { return }
        let bound = channel.withLockedValue { value -> (any Channel)? in
            defer { value = nil }
            return value
        }
        if let bound {
            try? await bound.close()
            if case .unix(let path) = listen { unlink(path) }
        }
        try? await group.shutdownGracefully()
    }

    /// Whether a peer may scrape: any peer of a Unix socket, a TCP peer inside `allow`.
    func admits(_ peer: SocketAddress?) -> Bool {
        guard let peer else { return false }
        switch peer {
        case .unixDomainSocket: return true
        case .v4, .v6:
            guard let text = peer.ipAddress, let address = IPAddress(text) else { return false }
            return allow.contains { $0.contains(address) }
        }
    }
}

public struct MetricsServerError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// One connection: requests answered in order, from the published exposition.
final class MetricsHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let server: MetricsServer
    private var request: HTTPRequestHead?
    private var admitted = false
    private var counted = false

    init(server: MetricsServer) { self.server = server }

    func channelActive(context: ChannelHandlerContext) {
        counted = true
        let open = server.connections.withLockedValue { count -> Int in
            count += 1
            return count
        }
        admitted = open <= MetricsServer.maxConnections && server.admits(context.remoteAddress)
        if open > MetricsServer.maxConnections {
            context.close(promise: nil)
            return
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        if counted {
            server.connections.withLockedValue { $0 -= 1 }
            counted = false
        }
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is IdleStateHandler.IdleStateEvent {
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): request = head
        case .body: break
        case .end:
            guard let head = request else { return }
            request = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        guard admitted else {
            return send(.forbidden, text: "forbidden: this address is not in metrics_allow\n", head: head, close: true, context: context)
        }
        guard head.method == .GET || head.method == .HEAD else {
            return send(
                .methodNotAllowed, text: "only GET and HEAD\n", head: head, extra: [("Allow", "GET, HEAD")],
                context: context)
        }
        switch path {
        case "/metrics":
            let (body, gzipped) = server.metrics.exposition(acceptsGzip: Self.acceptsGzip(head.headers))
            send(
                .ok, body: body, contentType: "text/plain; version=0.0.4; charset=utf-8", head: head,
                extra: gzipped ? [("Content-Encoding", "gzip"), ("Vary", "Accept-Encoding")] : [("Vary", "Accept-Encoding")],
                context: context)
        case "/":
            send(.ok, text: "snapcron metrics: /metrics\n", head: head, context: context)
        default:
            send(.notFound, text: "not found; metrics are at /metrics\n", head: head, context: context)
        }
    }

    /// Whether `Accept-Encoding` lists gzip (or `*`) with a quality above 0.
    static func acceptsGzip(_ headers: HTTPHeaders) -> Bool {
        headers[canonicalForm: "accept-encoding"].contains { coding in
            let parts = coding.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard let name = parts.first, ["gzip", "x-gzip", "*"].contains(name) else { return false }
            let quality = parts.dropFirst().first { $0.hasPrefix("q=") }.flatMap { Double($0.dropFirst(2)) }
            return (quality ?? 1) > 0
        }
    }

    private func send(
        _ status: HTTPResponseStatus, text: String, head: HTTPRequestHead, extra: [(String, String)] = [],
        close: Bool = false, context: ChannelHandlerContext
    ) {
        send(
            status, body: ByteBuffer(string: text), contentType: "text/plain; charset=utf-8", head: head, extra: extra,
            close: close, context: context)
    }

    private func send(
        _ status: HTTPResponseStatus, body: ByteBuffer, contentType: String, head: HTTPRequestHead,
        extra: [(String, String)] = [], close: Bool = false, context: ChannelHandlerContext
    ) {
        let keepAlive = head.isKeepAlive && !close
        var headers = HTTPHeaders([("Content-Type", contentType), ("Content-Length", "\(body.readableBytes)")])
        headers.add(contentsOf: extra)
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        let done = context.writeAndFlushPromise()
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        if !keepAlive {
            done.futureResult.whenComplete { _ in context.close(promise: nil) }
        }
    }
}

extension ChannelHandlerContext {
    fileprivate func writeAndFlushPromise() -> EventLoopPromise<Void> { eventLoop.makePromise() }
}

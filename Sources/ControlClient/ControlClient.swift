import ControlProtocol
import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Why a call to the daemon did not return a result.
public enum ControlClientError: Error, Sendable, CustomStringConvertible {
    /// Nothing listens on the socket: the daemon is not running (or uses another socket).
    case notRunning(path: String, reason: String)
    /// The socket exists but this user may not connect to it.
    case permissionDenied(path: String)
    /// The daemon answered with a JSON-RPC error.
    case remote(RPCError)
    /// The connection broke, timed out, or the answer was not a JSON-RPC response.
    case io(String)

    public var description: String {
        switch self {
        case .notRunning(let path, let reason):
            "snapcrond is not running (cannot connect to \(path): \(reason)); start it with `systemctl start snapcron` "
                + "or pass --socket PATH"
        case .permissionDenied(let path):
            "not permitted to connect to \(path): run as root or as a member of the socket's group (ls -l \(path))"
        case .remote(let error): error.message
        case .io(let message): message
        }
    }
}

/// A blocking client of the control socket: one connection, one request at a time.
public final class ControlClient {
    /// The socket path this client is connected to.
    public let path: String
    private var descriptor: Int32
    private let inbox: ReceiveBuffer
    private var nextID: Int64 = 1
    /// As much as a Unix socket holds at once (its send buffer is about 208 KB): a 3 MB answer in few reads.
    private static let readSize = 256 * 1024

    /// Connects to the socket at `path`; `timeout` bounds each send and each wait for an answer.
    public init(path: String, timeout: TimeInterval = 60, maxResponseLength: Int = 256 * 1024 * 1024)
        throws(ControlClientError)
    {
        self.path = path
        inbox = ReceiveBuffer(maxLineLength: maxResponseLength, readSize: Self.readSize)
        descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw .io("socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else {
            Glibc.close(descriptor)
            throw .io("socket path too long (\(bytes.count) bytes, at most \(capacity - 1)): \(path)")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        var seconds = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1e6))
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &seconds, socklen_t(MemoryLayout<timeval>.size))
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        if result != 0 {
            let code = errno
            Glibc.close(descriptor)
            switch code {
            case EACCES, EPERM: throw .permissionDenied(path: path)
            case ENOENT: throw .notRunning(path: path, reason: "no such socket")
            case ECONNREFUSED: throw .notRunning(path: path, reason: "connection refused")
            default: throw .io("cannot connect to \(path): \(String(cString: strerror(code)))")
            }
        }
    }

    deinit {
        if descriptor >= 0 { Glibc.close(descriptor) }
    }

    /// Closes the connection.
    public func close() {
        if descriptor >= 0 { Glibc.close(descriptor) }
        descriptor = -1
    }

    /// Calls `method` and decodes its result; a JSON-RPC error is thrown as ``ControlClientError/remote(_:)``.
    public func call<Params: ControlParams, Result: Decodable & Sendable>(
        _ method: ControlMethod, _ params: Params, as type: Result.Type
    ) throws(ControlClientError) -> Result {
        let line = try rawCall(method.rawValue, params)
        let response: RPCResponse<Result>
        do {
            response = try ControlCoding.decoder.decode(RPCResponse<Result>.self, from: line)
        } catch {
            throw .io("unexpected answer from \(path): \(error)")
        }
        if let error = response.error { throw .remote(error) }
        guard let result = response.result else { throw .io("answer from \(path) has neither result nor error") }
        return result
    }

    /// Sends one request and returns the response line as the daemon sent it (for `--json` and tests).
    ///
    /// When the daemon hangs up during the send after writing a JSON-RPC error (a refusal at its connection
    /// limit), throws that error as ``ControlClientError/remote(_:)`` rather than the broken pipe.
    public func rawCall(_ method: String, _ params: some Encodable & Sendable) throws(ControlClientError) -> Data {
        let id = nextID
        nextID += 1
        var request: Data
        do {
            request = try ControlCoding.encoder.encode(RPCRequest(id: .number(id), method: method, params: params))
        } catch {
            throw .io("cannot encode the request: \(error)")
        }
        request.append(UInt8(ascii: "\n"))
        if let failure = write(request) {
            // A daemon that refuses a connection (at its limit) writes why, then hangs up: the reason beats EPIPE.
            if failure == EPIPE || failure == ECONNRESET, let reason = pendingError() { throw .remote(reason) }
            throw sendError(failure)
        }
        return try receiveLine()
    }

    /// Writes raw bytes (tests use it to send garbage).
    public func send(_ data: Data) throws(ControlClientError) {
        if let failure = write(data) { throw sendError(failure) }
    }

    /// Writes all of `data`; returns the `errno` of a failed write.
    private func write(_ data: Data) -> Int32? {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let written = Glibc.send(descriptor, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if written < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                offset += written
            }
            return nil
        }
    }

    private func sendError(_ code: Int32) -> ControlClientError {
        .io("cannot send to \(path): \(String(cString: strerror(code)))")
    }

    /// The JSON-RPC error the daemon sent before it hung up, if such a line is waiting to be read.
    private func pendingError() -> RPCError? {
        guard let line = try? receiveLine(),
            let response = try? ControlCoding.decoder.decode(RPCResponse<JSONValue>.self, from: line)
        else { return nil }
        return response.error
    }

    /// Reads the next line the daemon sends.
    public func receiveLine() throws(ControlClientError) -> Data {
        while true {
            do {
                if let line = try inbox.nextLine() { return line }
            } catch {
                throw .io("answer from \(path) is too long")
            }
            let count = inbox.receive(from: descriptor)
            if count < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { throw .io("no answer from \(path) in time") }
                throw .io("cannot read from \(path): \(String(cString: strerror(errno)))")
            }
            if count == 0 {
                if let rest = try? inbox.finish(), !rest.isEmpty { return rest }
                throw .io("snapcrond closed the connection without answering")
            }
        }
    }

    /// Half-closes the connection: the daemon sees end of input but can still answer.
    public func shutdownWrite() {
        shutdown(descriptor, Int32(SHUT_WR))
    }
}

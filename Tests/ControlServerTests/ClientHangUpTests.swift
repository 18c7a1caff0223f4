import ControlClient
import ControlProtocol
import Foundation
import TestThreads
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A peer that accepts one connection, writes `reply`, and hangs up without reading: what snapcrond does to a
/// client beyond its connection limit.
private final class HangingUpPeer: Sendable {
    let path: String
    private let listener: Int32
    private let done = DispatchSemaphore(value: 0)

    init(in directory: String, reply: String) throws {
        path = directory + "/peer.sock"
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        listener = descriptor
        var address = unixAddress(path)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0, listen(descriptor, 1) == 0 else {
            throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO)
        }
        let done = self.done
        Thread.detachNewThread {
            let connection = accept(descriptor, nil, nil)
            if connection >= 0 {
                let line = Array(reply.utf8)
                _ = line.withUnsafeBytes { write(connection, $0.baseAddress, $0.count) }
                close(connection)
            }
            done.signal()
        }
    }

    /// Waits for the peer to have hung up, then closes the listener.
    func finish() {
        done.wait()
        close(listener)
    }
}

@Suite(.onOwnThreads) struct ClientHangUpTests {
    private static func call(_ peer: HangingUpPeer) throws -> ControlClientError? {
        let client = try ControlClient(path: peer.path, timeout: 30)
        defer { peer.finish() }
        // More than the socket buffers hold, so the send is still going when the peer hangs up.
        do {
            _ = try client.rawCall("status", ["padding": String(repeating: "x", count: 8 << 20)])
            return nil
        } catch {
            return error
        }
    }

    private static func directory() throws -> String {
        let path = NSTemporaryDirectory() + "snapcron-hangup-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    @Test func aSendCutOffByAnErrorLineThrowsThatError() throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let refusal = #"{"code":-32006,"message":"snapcrond serves at most 1 connections; try again"}"#
        let peer = try HangingUpPeer(in: directory, reply: #"{"jsonrpc":"2.0","id":null,"error":\#(refusal)}"# + "\n")
        let error = try Self.call(peer)
        guard case .remote(let rpc)? = error else {
            Issue.record("expected the peer's error, got \(String(describing: error))")
            return
        }
        #expect(rpc == RPCError(.unavailable, "snapcrond serves at most 1 connections; try again"))
    }

    @Test(arguments: ["", "hello\n", #"{"jsonrpc":"2.0","id":1,"result":{}}"# + "\n"])
    func aSendCutOffWithoutAnErrorLineKeepsTheSendError(_ reply: String) throws {
        let directory = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let error = try Self.call(try HangingUpPeer(in: directory, reply: reply))
        guard case .io(let message)? = error else {
            Issue.record("expected the send error, got \(String(describing: error))")
            return
        }
        #expect(message.hasPrefix("cannot send to \(directory)/peer.sock: "), "\(message)")
        #expect(message.hasSuffix("Broken pipe") || message.hasSuffix("Connection reset by peer"), "\(message)")
    }
}

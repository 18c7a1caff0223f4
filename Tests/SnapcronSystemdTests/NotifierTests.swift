import Foundation
import Glibc
import Testing

@testable import SnapcronSystemd

/// The notifier against its absence and against a real `AF_UNIX` datagram socket standing in for systemd.
///
/// `sd_notify` reads `$NOTIFY_SOCKET` from the process environment, so these tests set it: they run one after
/// the other and restore the variables they touch.
@Suite(.serialized) struct NotifierTests {
    @Test func doesNothingWithoutNotifySocket() {
        withEnvironment(["NOTIFY_SOCKET": nil, "WATCHDOG_USEC": nil, "WATCHDOG_PID": nil]) {
            let notifier = Notifier()
            #expect(!notifier.isActive)
            #expect(notifier.watchdogInterval == nil)
            #expect(!notifier.ready(status: "up"))
            #expect(!notifier.watchdog())
            #expect(!notifier.reloading())
            #expect(!notifier.stopping())
        }
    }

    @Test func watchdogIntervalIsHalfOfWatchdogUSec() {
        withEnvironment(["WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "\(getpid())"]) {
            #expect(Notifier().watchdogInterval == .milliseconds(1500))
        }
    }

    @Test func watchdogOfAnotherProcessIsNotOurs() {
        // systemd sets WATCHDOG_PID to the main process; a child that inherited the variables must not ping.
        withEnvironment(["WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "\(getpid() + 1)"]) {
            #expect(Notifier().watchdogInterval == nil)
        }
    }

    @Test func sendsEachStateAsOneDatagram() throws {
        let listener = try DatagramListener()
        try withEnvironment(["NOTIFY_SOCKET": listener.path]) {
            let notifier = Notifier()
            #expect(notifier.isActive)

            #expect(notifier.ready(status: "3 jobs, next web at 09:00"))
            #expect(try listener.receive() == "READY=1\nSTATUS=3 jobs, next web at 09:00")

            #expect(notifier.status("reloading\nschedule"))
            #expect(try listener.receive() == "STATUS=reloading schedule")

            #expect(notifier.watchdog())
            #expect(try listener.receive() == "WATCHDOG=1")

            let before = Notifier.monotonicMicroseconds()
            #expect(notifier.reloading())
            let reloading = try listener.receive().split(separator: "\n")
            #expect(reloading.first == "RELOADING=1")
            let sent = try #require(reloading.count == 2 ? Int64(reloading[1].dropFirst("MONOTONIC_USEC=".count)) : nil)
            #expect(reloading[1].hasPrefix("MONOTONIC_USEC="))
            #expect(sent >= before && sent <= Notifier.monotonicMicroseconds())

            #expect(notifier.ready())
            #expect(try listener.receive() == "READY=1")

            #expect(notifier.extendTimeout(.seconds(90)))
            #expect(try listener.receive() == "EXTEND_TIMEOUT_USEC=90000000")

            #expect(notifier.stopping())
            #expect(try listener.receive() == "STOPPING=1")
        }
    }

    @Test func reportsAFailedSend() {
        withEnvironment(["NOTIFY_SOCKET": "/nonexistent/snapcron-notify.sock"]) {
            let notifier = Notifier()
            #expect(notifier.isActive)
            #expect(!notifier.watchdog())
        }
    }

    /// Runs `body` with these variables set (or unset for nil), then restores them.
    private func withEnvironment<T>(_ variables: [String: String?], _ body: () throws -> T) rethrows -> T {
        let saved = variables.keys.map { ($0, getenv($0).map { String(cString: $0) }) }
        for (name, value) in variables {
            if let value { setenv(name, value, 1) } else { unsetenv(name) }
        }
        defer {
            for (name, value) in saved {
                if let value { setenv(name, value, 1) } else { unsetenv(name) }
            }
        }
        return try body()
    }
}

/// A bound `AF_UNIX` datagram socket, like the one systemd listens on, in a fresh folder.
final class DatagramListener {
    let folder: URL
    let path: String
    private let descriptor: Int32

    struct Failure: Error {
        var call: String
        var code: Int32
    }

    init() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("snapcron-notify-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        path = folder.appendingPathComponent("notify.sock").path
        descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard descriptor >= 0 else { throw Failure(call: "socket", code: errno) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: path.utf8.prefix(buffer.count - 1))
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard bound == 0 else { throw Failure(call: "bind", code: errno) }
        // A missing datagram fails the test after 5 s instead of hanging it.
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    /// The next datagram as text.
    func receive() throws -> String {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let count = recv(descriptor, &buffer, buffer.count, 0)
        guard count >= 0 else { throw Failure(call: "recv", code: errno) }
        return String(decoding: buffer[..<count], as: UTF8.self)
    }

    deinit {
        close(descriptor)
        try? FileManager.default.removeItem(at: folder)
    }
}

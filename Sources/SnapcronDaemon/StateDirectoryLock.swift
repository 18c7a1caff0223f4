import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// An exclusive lock on a state directory for the life of the daemon: `flock` on `<state_dir>/snapcrond.lock`, a
/// file that also holds the pid of the daemon holding it.
///
/// Two daemons on one state directory (say a `snapcrond` started by hand next to the service) would both fire
/// every job; the second one fails to start instead, naming the directory and the holder. The kernel releases the
/// lock when the holder exits, however it exits, so a crash leaves no stale lock behind (the file stays, unlocked).
/// The descriptor is close-on-exec: commands an exec backend runs never inherit the lock.
final class StateDirectoryLock: Sendable {
    static let fileName = "snapcrond.lock"

    let path: String
    private let descriptor: Int32

    init(directory: String) throws(DaemonStartError) {
        path = directory.hasSuffix("/") ? directory + Self.fileName : directory + "/" + Self.fileName
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard descriptor >= 0 else {
            throw DaemonStartError("cannot open the lock file \(path): \(Self.lastError())")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let reason = errno == EWOULDBLOCK ? nil : Self.lastError()
            let holder = reason == nil ? Self.holder(of: descriptor) : nil
            close(descriptor)
            if let reason { throw DaemonStartError("cannot lock \(path): \(reason)") }
            throw DaemonStartError(
                "the state directory \(directory) is in use by another snapcrond (pid \(holder ?? "unknown"), "
                    + "holding \(path)); stop it first, or give this one another --state-dir")
        }
        // Ours now: the file says who holds it, for the next one that tries.
        let pid = Array("\(getpid())\n".utf8)
        if ftruncate(descriptor, 0) != 0 || pwrite(descriptor, pid, pid.count, 0) != pid.count {
            let reason = Self.lastError()
            close(descriptor)
            throw DaemonStartError("cannot write the lock file \(path): \(reason)")
        }
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    /// The pid written by the holder; it writes it right after taking the lock, so wait a little for it.
    private static func holder(of descriptor: Int32) -> String? {
        for _ in 0..<20 {
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = pread(descriptor, &buffer, buffer.count, 0)
            if count > 0 {
                let text = String(decoding: buffer[..<count], as: UTF8.self)
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                if let pid = Int32(text), pid > 0 { return text }
            }
            usleep(10_000)
        }
        return nil
    }

    private static func lastError() -> String {
        String(cString: strerror(errno)).lowercased()
    }
}

import CLibvirtLoader

/// A failed step of a libvirt call, worded for the operator, before the backend names its operation and target.
struct LibvirtProblem: Error, Sendable, CustomStringConvertible {
    /// What went wrong, lowercase; libvirt's own message is quoted at the end when there is one.
    var message: String
    /// Whether the same call may succeed later (libvirtd restarting, a busy disk, a slow agent).
    var isTransient: Bool
    /// The connection broke (libvirtd stopped or restarted): the call is worth one more try on a new connection.
    var isConnectionFailure = false
    /// libvirt's error code (`virErrorNumber`); 0 for problems snapcron finds itself.
    var code: Int32 = 0

    static func permanent(_ message: String) -> LibvirtProblem {
        LibvirtProblem(message: message, isTransient: false)
    }

    static func transient(_ message: String) -> LibvirtProblem {
        LibvirtProblem(message: message, isTransient: true)
    }

    var description: String { message }

    /// Whether libvirt said `code` (a `VIR_ERR_*` constant).
    func `is`(_ code: virErrorNumber) -> Bool { self.code == Int32(code.rawValue) }
}

/// libvirt's last error of this thread, taken (and reset) right after the call that failed.
struct LibvirtError: Sendable {
    var code: Int32
    var domain: Int32
    var message: String

    /// The last error of the calling thread; libvirt keeps it per thread, so this must run on the thread of the
    /// failed call (the connection's queue).
    static func takeLast() -> LibvirtError {
        guard let last = snapcron_virGetLastError() else {
            return LibvirtError(code: 0, domain: 0, message: "libvirt reported no error message")
        }
        let error = LibvirtError(
            code: last.pointee.code, domain: last.pointee.domain,
            message: last.pointee.message.map { String(cString: $0) } ?? "libvirt error \(last.pointee.code)")
        snapcron_virResetLastError()
        return error
    }

    /// The error says the link to libvirtd failed rather than the request.
    var isConnectionError: Bool {
        domain == Int32(VIR_FROM_RPC.rawValue)
            || [VIR_ERR_NO_CONNECT, VIR_ERR_INVALID_CONN, VIR_ERR_RPC].contains { code == Int32($0.rawValue) }
    }

    /// Conditions that pass by themselves: a timeout on the domain's job lock, an agent that is slow to answer, a
    /// disk busy with a block job, a broken connection.
    var isTransient: Bool {
        isConnectionError
            || [
                VIR_ERR_OPERATION_TIMEOUT, VIR_ERR_AGENT_UNRESPONSIVE, VIR_ERR_AGENT_UNSYNCED, VIR_ERR_RESOURCE_BUSY,
                VIR_ERR_OPERATION_ABORTED, VIR_ERR_BLOCK_COPY_ACTIVE,
            ].contains { code == Int32($0.rawValue) }
    }

    /// libvirt refused the client's credentials: no retry helps until the unit or the daemon's ACL changes.
    var isAuthenticationError: Bool {
        [VIR_ERR_AUTH_FAILED, VIR_ERR_AUTH_UNAVAILABLE, VIR_ERR_AUTH_CANCELLED, VIR_ERR_ACCESS_DENIED].contains {
            code == Int32($0.rawValue)
        }
    }
}

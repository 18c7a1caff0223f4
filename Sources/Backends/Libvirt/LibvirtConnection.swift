import CLibvirtLoader
import Dispatch
import Foundation
import Logging

/// One libvirt connection of a backend, used only from a serial queue of its own.
///
/// libvirt's client calls block (a snapshot of a large guest, libvirtd busy), so none of them may run on Swift
/// concurrency's cooperative pool: ``perform(logger:_:)`` hands each piece of work to the queue and suspends until it is
/// done. The connection is opened on first use (snapcrond starts even while libvirtd is down) and opened again when
/// it broke: a piece of work that failed because libvirtd restarted runs once more on a fresh connection.
final class LibvirtConnection: @unchecked Sendable {
    let uri: String
    private let queue: DispatchQueue
    /// The open connection; touched only on `queue`, which is what makes this class safe to share.
    private var session: LibvirtSession?

    init(uri: String) {
        LibvirtLibrary.prepare()
        self.uri = uri
        self.queue = DispatchQueue(label: "snapcron.libvirt.\(uri)")
    }

    /// Runs `work` with the connection on the connection's queue; reconnects once when the connection broke.
    func perform<Result: Sendable>(
        logger: Logger, _ work: @escaping @Sendable (LibvirtSession) throws -> Result
    ) async throws -> Result {
        try await withCheckedThrowingContinuation { continuation in
            queue.async {
                continuation.resume(with: Swift.Result { try self.runReconnecting(logger: logger, work) })
            }
        }
    }

    /// Drops the connection now (tests: what a libvirtd restart does to it), on the queue.
    func disconnect() async {
        await withCheckedContinuation { continuation in
            queue.async {
                self.session = nil
                continuation.resume()
            }
        }
    }

    private func runReconnecting<Result>(
        logger: Logger, _ work: (LibvirtSession) throws -> Result
    ) throws -> Result {
        var attempt = 0
        while true {
            attempt += 1
            let session = try openSession(logger: logger)
            do {
                return try work(session)
            } catch var problem as LibvirtProblem where problem.isConnectionFailure || !session.isAlive {
                self.session = nil
                problem.isTransient = true
                guard attempt < 2 else { throw problem }
                logger.notice(
                    "Connection to libvirt broke, reconnecting",
                    metadata: ["libvirt.uri": "\(uri)", "error": "\(problem.message)"])
            }
        }
    }

    private func openSession(logger: Logger) throws -> LibvirtSession {
        if let session {
            if session.isAlive { return session }
            // Seen by the keepalive pings or the last call: libvirtd stopped or restarted.
            logger.notice("Connection to libvirt lost, reconnecting", metadata: ["libvirt.uri": "\(uri)"])
        }
        session = nil
        let opened = try LibvirtSession(uri: uri)
        session = opened
        return opened
    }
}

/// Process-wide set-up of libvirt, done once before the first connection.
enum LibvirtLibrary {
    /// libvirt prints every error on stderr unless told otherwise, and needs an event loop for keepalive pings
    /// (without them a libvirtd that hangs holds a call forever): both are set up here, once.
    static func prepare() {
        _ = prepared
    }

    private static let prepared: Bool = {
        snapcron_virInitialize()
        // Errors are read with virGetLastError and reported by the backend; nothing goes to stderr.
        snapcron_virSetErrorFunc(nil) { _, _ in }
        if snapcron_virEventRegisterDefaultImpl() == 0 {
            let loop = Thread {
                while snapcron_virEventRunDefaultImpl() == 0 {}
            }
            loop.name = "snapcron.libvirt.events"
            loop.start()
        }
        snapcron_virResetLastError()
        return true
    }()
}

/// An open `virConnectPtr`; closed when released. Used on its connection's queue only.
final class LibvirtSession {
    let pointer: OpaquePointer
    let uri: String

    /// Seconds between keepalive pings, and how many may go unanswered before the connection counts as dead.
    static let keepAlive: (interval: Int32, count: UInt32) = (5, 3)

    init(uri: String) throws {
        guard snapcron_libvirt_load() != 0 else {
            let reason = snapcron_libvirt_load_error().map { String(cString: $0) } ?? "unknown error"
            throw LibvirtProblem.permanent(
                "libvirt's client library cannot be loaded (\(reason)); install Debian's libvirt0")
        }
        guard let pointer = snapcron_virConnectOpen(uri) else {
            let error = LibvirtError.takeLast()
            if error.isAuthenticationError {
                throw LibvirtProblem(
                    message: "libvirt at \(uri) refused snapcron's connection: \(error.message) (the unit needs the "
                        + "libvirt drop-in of docs/backends.md)", isTransient: false, code: error.code)
            }
            // libvirtd stopped or restarting is the usual cause: worth retrying.
            throw LibvirtProblem(
                message: "cannot connect to libvirt at \(uri): \(error.message)", isTransient: true,
                isConnectionFailure: false, code: error.code)
        }
        self.pointer = pointer
        self.uri = uri
        // Local drivers (test:///) have no keepalive; that is fine.
        if snapcron_virConnectSetKeepAlive(pointer, Self.keepAlive.interval, Self.keepAlive.count) < 0 {
            snapcron_virResetLastError()
        }
    }

    deinit {
        snapcron_virConnectClose(pointer)
        snapcron_virResetLastError()
    }

    var isAlive: Bool { snapcron_virConnectIsAlive(pointer) == 1 }

    /// The problem of the call that just failed: libvirt's message after `context`, classified.
    ///
    /// `context` is evaluated after the error is taken: every libvirt call (even `virDomainGetName` for a message)
    /// resets the thread's last error.
    func failure(_ context: @autoclosure () -> String) -> LibvirtProblem {
        let error = LibvirtError.takeLast()
        let broken = error.isConnectionError || !isAlive
        return LibvirtProblem(
            message: "\(context()): \(error.message)", isTransient: broken || error.isTransient,
            isConnectionFailure: broken, code: error.code)
    }

    /// The domain named by `target`, a UUID or a name; nil when libvirt knows none.
    func domain(_ target: String) throws -> LibvirtDomain? {
        let found =
            Self.isUUID(target)
            ? snapcron_virDomainLookupByUUIDString(pointer, target) : snapcron_virDomainLookupByName(pointer, target)
        guard let found else {
            let problem = failure("cannot look domain '\(target)' up")
            if problem.is(VIR_ERR_NO_DOMAIN) { return nil }
            throw problem
        }
        return LibvirtDomain(found, session: self)
    }

    /// Whether `text` is written like a UUID (libvirt accepts it with or without dashes).
    static func isUUID(_ text: String) -> Bool {
        let hex = text.filter { $0 != "-" }
        return hex.count == 32 && (text.count == 32 || text.count == 36) && hex.allSatisfy(\.isHexDigit)
    }
}

/// A `virDomainPtr`; freed when released.
final class LibvirtDomain {
    let pointer: OpaquePointer
    let session: LibvirtSession

    init(_ pointer: OpaquePointer, session: LibvirtSession) {
        self.pointer = pointer
        self.session = session
    }

    deinit { snapcron_virDomainFree(pointer) }

    var name: String { snapcron_virDomainGetName(pointer).map { String(cString: $0) } ?? "?" }

    func uuid() throws -> String {
        var buffer = [CChar](repeating: 0, count: Int(VIR_UUID_STRING_BUFLEN))
        guard snapcron_virDomainGetUUIDString(pointer, &buffer) == 0 else {
            throw session.failure("cannot read the UUID of domain \(name)")
        }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    func isActive() throws -> Bool {
        let active = snapcron_virDomainIsActive(pointer)
        guard active >= 0 else { throw session.failure("cannot tell whether domain \(name) runs") }
        return active == 1
    }

    /// The domain's XML: the live definition while it runs (with each disk's backing chain).
    func xml() throws -> String {
        guard let text = snapcron_virDomainGetXMLDesc(pointer, 0) else {
            throw session.failure("cannot read the definition of domain \(name)")
        }
        defer { free(text) }
        return String(cString: text)
    }

    func snapshot(named snapshotName: String) throws -> LibvirtSnapshot? {
        guard let found = snapcron_virDomainSnapshotLookupByName(pointer, snapshotName, 0) else {
            let problem = session.failure("cannot look snapshot '\(snapshotName)' of domain \(name) up")
            if problem.is(VIR_ERR_NO_DOMAIN_SNAPSHOT) { return nil }
            throw problem
        }
        return LibvirtSnapshot(found, domain: self)
    }

    func snapshots() throws -> [LibvirtSnapshot] {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let count = snapcron_virDomainListAllSnapshots(pointer, &list, 0)
        guard count >= 0, let list else { throw session.failure("cannot list the snapshots of domain \(name)") }
        defer { free(list) }
        return (0..<Int(count)).compactMap { index in list[index].map { LibvirtSnapshot($0, domain: self) } }
    }

    func createSnapshot(xml: String, flags: UInt32) throws -> LibvirtSnapshot {
        guard let made = snapcron_virDomainSnapshotCreateXML(pointer, xml, flags) else {
            throw session.failure("libvirt could not snapshot domain \(name)")
        }
        return LibvirtSnapshot(made, domain: self)
    }

    /// A block job on `disk` (its target name, `vda`), or nil when none runs.
    struct BlockJob {
        var type: Int32
        var current: UInt64
        var end: UInt64

        var isActiveCommit: Bool { type == Int32(VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT.rawValue) }
        /// libvirt reports an active commit's progress as complete once the job may pivot.
        var isReady: Bool { current == end }
    }

    func blockJob(on disk: String) throws -> BlockJob? {
        var info = virDomainBlockJobInfo()
        let found = snapcron_virDomainGetBlockJobInfo(pointer, disk, &info, 0)
        guard found >= 0 else { throw session.failure("cannot read the block job of disk \(disk) of domain \(name)") }
        guard found == 1 else { return nil }
        return BlockJob(type: info.type, current: info.cur, end: info.end)
    }

    /// Starts merging `top` (a file of `disk`'s chain) into the file below it; `active` when `top` is the file the
    /// guest writes to, which then needs ``pivot(_:)``.
    func startCommit(of disk: String, top: String, active: Bool) throws {
        var flags = VIR_DOMAIN_BLOCK_COMMIT_SHALLOW.rawValue
        if active { flags |= VIR_DOMAIN_BLOCK_COMMIT_ACTIVE.rawValue }
        guard snapcron_virDomainBlockCommit(pointer, disk, nil, active ? nil : top, 0, flags) == 0 else {
            throw session.failure("cannot start merging \(top) of disk \(disk) of domain \(name)")
        }
    }

    /// Ends a ready active commit on `disk`: the guest then writes to the file below the merged overlay.
    func pivot(_ disk: String) throws {
        guard snapcron_virDomainBlockJobAbort(pointer, disk, VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT.rawValue) == 0 else {
            throw session.failure("cannot switch disk \(disk) of domain \(name) to its merged file")
        }
    }
}

/// A `virDomainSnapshotPtr`; freed when released.
final class LibvirtSnapshot {
    let pointer: OpaquePointer
    let domain: LibvirtDomain

    init(_ pointer: OpaquePointer, domain: LibvirtDomain) {
        self.pointer = pointer
        self.domain = domain
    }

    deinit { snapcron_virDomainSnapshotFree(pointer) }

    var name: String { snapcron_virDomainSnapshotGetName(pointer).map { String(cString: $0) } ?? "?" }

    func xml() throws -> String {
        guard let text = snapcron_virDomainSnapshotGetXMLDesc(pointer, 0) else {
            throw domain.session.failure("cannot read snapshot \(name) of domain \(domain.name)")
        }
        defer { free(text) }
        return String(cString: text)
    }

    /// Deletes the snapshot; `metadataOnly` leaves its files alone (their data was merged already).
    func delete(metadataOnly: Bool) throws {
        let flags = metadataOnly ? VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY.rawValue : 0
        guard snapcron_virDomainSnapshotDelete(pointer, flags) == 0 else {
            throw domain.session.failure("cannot delete snapshot \(name) of domain \(domain.name)")
        }
    }
}

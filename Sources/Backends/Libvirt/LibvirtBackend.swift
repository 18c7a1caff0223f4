import BackendTypes
import CLibvirtLoader
import Foundation
public import LibvirtDescriptor
public import Logging
public import SnapshotBackend

#if canImport(Glibc)
    import Glibc
#endif

/// Snapshots of libvirt guests (KVM/QEMU) through libvirt's own API (see the libvirt section of docs/backends.md).
///
/// A target is a domain name (`web01`) or UUID. An image is one libvirt snapshot of that domain, its id
/// `<domain UUID>/<snapshot name>`, so an image of a domain that was undefined (or redefined under a new UUID) is
/// `gone`. Snapshots are complete when `virDomainSnapshotCreateXML` returns: `create` reports `active` at once.
///
/// - `disk-only`: an external snapshot of a running guest; each writable disk gets a qcow2 overlay (beside its
///   disk, or in `overlay_dir`), optionally quiesced by the guest agent. `delete` merges the overlay back into the
///   file below it (a block commit; an active one with a pivot for the overlay the guest writes to), removes the
///   file and then the snapshot's metadata, so no chain of overlays grows.
/// - `full`: an internal snapshot (disks, and memory of a running guest) inside the domain's qcow2 disks; a disk
///   in any other format is refused, naming it.
///
/// `delete` refuses snapshots whose description lacks ``marker``. All libvirt calls of a backend run on one
/// connection and one serial queue, off Swift's cooperative pool (``LibvirtConnection``).
public struct LibvirtBackend: SnapshotBackend {
    /// The tag snapcron puts in the description of every snapshot it makes; `delete` refuses snapshots without it.
    public static let marker = "[snapcron]"

    public let name: String
    public let settings: LibvirtBackendSettings
    let connection: LibvirtConnection
    /// How often a delete looks at the block job merging an overlay back.
    var mergePollInterval: Duration = .milliseconds(200)
    /// How long one delete waits for its merges before it gives up (a later delete carries on where it stopped).
    var mergeTimeout: Duration = .seconds(3600)

    public init(name: String = "libvirt", settings: LibvirtBackendSettings) {
        self.name = name
        self.settings = settings
        self.connection = LibvirtConnection(uri: settings.uri)
    }

    // MARK: - SnapshotBackend

    public func validate(target: String) throws {
        try TargetRule.libvirt.validate(target, backend: name)
    }

    public func create(target: String, name snapshotName: String, description: String, logger: Logger) async throws
        -> ImageRef
    {
        try await createImage(target: target, name: snapshotName, description: description, logger: logger).ref
    }

    /// Snapshots `target` as `snapshotName`, or returns the snapshot of that name when it exists already.
    public func createImage(
        target: String, name snapshotName: String, description: String, logger: Logger
    ) async throws -> CreatedImage {
        if let problem = TargetRule.libvirt.problem(with: target) {
            throw SnapshotBackendError.permanent(backend: name, .create, target: target, problem)
        }
        if let problem = Self.problem(withSnapshotName: snapshotName) {
            throw SnapshotBackendError.permanent(backend: name, .create, target: target, problem)
        }
        let settings = settings
        let marked = Self.markedDescription(description)
        let (image, existed) = try await call(.create, target: target, logger: logger) { session in
            try Self.createSnapshot(
                of: target, named: snapshotName, description: marked, settings: settings, session: session,
                logger: logger)
        }
        logger.info(
            existed ? "Snapshot exists, not creating again" : "Snapshot created",
            metadata: [
                "backend": "\(name)", "image.id": "\(image)", "image.name": "\(snapshotName)", "target": "\(target)",
                "libvirt.mode": "\(settings.mode.rawValue)",
            ])
        return CreatedImage(ref: image, state: .active)
    }

    public func status(_ image: ImageRef, logger: Logger) async throws -> ImageState {
        guard let id = SnapshotID(image) else { return .gone }
        return try await call(.status, image: image, logger: logger) { session in
            guard let domain = try session.domain(id.domainUUID) else { return .gone }
            return try domain.snapshot(named: id.snapshot) == nil ? .gone : .active
        }
    }

    /// Every snapshot of the domain, snapcron's or not (`delete` tells them apart); none for an unknown domain.
    public func list(target: String, logger: Logger) async throws -> [ImageInfo] {
        if let problem = TargetRule.libvirt.problem(with: target) {
            throw SnapshotBackendError.permanent(backend: name, .list, target: target, problem)
        }
        return try await call(.list, target: target, logger: logger) { session in
            guard let domain = try session.domain(target) else { return [] }
            let uuid = try domain.uuid()
            return try domain.snapshots().map { snapshot in
                let record = try LibvirtXML.snapshot(try snapshot.xml())
                return ImageInfo(
                    id: SnapshotID(domainUUID: uuid, snapshot: snapshot.name).ref, name: snapshot.name,
                    description: record.description, target: target, createdAt: record.createdAt, state: .active,
                    sizeBytes: nil)
            }
        }
    }

    /// Deletes a snapshot snapcron made; for a disk-only one, merges its overlays back first.
    ///
    /// Each round is one short call on the connection's queue that looks at the domain as it is now and takes the
    /// next step (start a merge, pivot a ready one, or remove the snapshot), so an interrupted delete (snapcrond
    /// stopped, libvirtd restarted) carries on where it stopped when called again.
    public func delete(_ image: ImageRef, logger: Logger) async throws {
        guard let id = SnapshotID(image) else { return }
        let clock = ContinuousClock()
        let deadline = clock.now + mergeTimeout
        var mergesStarted: [String: Int] = [:]
        while true {
            let step = try await call(.delete, image: image, logger: logger) { session in
                try Self.deleteStep(id, session: session, logger: logger)
            }
            switch step {
            case .done:
                logger.info("Snapshot deleted", metadata: ["backend": "\(name)", "image.id": "\(image)"])
                return
            case .startedMerge(let disk, let overlay):
                mergesStarted[disk, default: 0] += 1
                // A merge that ends without taking the overlay out of the chain failed inside libvirtd.
                if mergesStarted[disk, default: 0] > 3 {
                    throw SnapshotBackendError.transient(
                        backend: name, .delete, image: image,
                        "merging \(overlay) back into disk \(disk) stopped 3 times without finishing; "
                            + "see libvirtd's log of the domain")
                }
            case .waiting:
                break
            }
            guard clock.now < deadline else {
                throw SnapshotBackendError.transient(
                    backend: name, .delete, image: image,
                    "merging the overlays back still runs after \(mergeTimeout); a later delete carries on")
            }
            do {
                // Real time: the block job runs in libvirtd, at the disk's speed.
                try await Task.sleep(for: mergePollInterval)
            } catch {
                throw SnapshotBackendError.transient(
                    backend: name, .delete, image: image,
                    "cancelled while merging the overlays back; a later delete carries on")
            }
        }
    }

    // MARK: - Steps on the connection's queue

    /// Creates the snapshot; returns its image and whether it existed already.
    static func createSnapshot(
        of target: String, named snapshotName: String, description: String, settings: LibvirtBackendSettings,
        session: LibvirtSession, logger: Logger
    ) throws -> (ImageRef, existed: Bool) {
        guard let domain = try session.domain(target) else {
            throw LibvirtProblem.permanent("no domain '\(target)' on \(session.uri)")
        }
        let image = SnapshotID(domainUUID: try domain.uuid(), snapshot: snapshotName).ref
        // Idempotent by name: a create whose reply was lost made it already.
        if try domain.snapshot(named: snapshotName) != nil { return (image, true) }
        let all = try LibvirtXML.disks(inDomain: try domain.xml())
        let disks = all.filter(\.isSnapshotted)
        guard !disks.isEmpty else {
            throw LibvirtProblem.permanent("domain \(domain.name) has no writable disk to snapshot")
        }
        let atomic = VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC.rawValue
        switch settings.mode {
        case .full:
            if let disk = disks.first(where: { $0.format != "qcow2" }) {
                throw LibvirtProblem.permanent(
                    "mode = \"full\" needs every disk in qcow2, but disk \(disk.target) of domain \(domain.name) "
                        + "(\(disk.activeFile ?? "no file")) is \(disk.format ?? "of unknown format"); "
                        + "use mode = \"disk-only\" for it")
            }
            let definition = LibvirtXML.snapshotDefinition(name: snapshotName, description: description, disks: nil)
            _ = try domain.createSnapshot(xml: definition, flags: atomic)
        case .diskOnly:
            guard try domain.isActive() else {
                throw LibvirtProblem.permanent(
                    "domain \(domain.name) is not running; mode = \"disk-only\" snapshots running guests "
                        + "(use a backend with mode = \"full\" for stopped guests with qcow2 disks)")
            }
            let plans = try all.map { disk -> LibvirtXML.DiskPlan in
                guard disk.isSnapshotted else { return .excluded(disk: disk.target) }
                return .external(
                    disk: disk.target,
                    overlay: try overlayPath(
                        for: disk, domain: domain.name, snapshot: snapshotName, directory: settings.overlayDirectory))
            }
            let definition = LibvirtXML.snapshotDefinition(name: snapshotName, description: description, disks: plans)
            let diskOnly = VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY.rawValue | atomic
            let quiesced = diskOnly | VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE.rawValue
            switch settings.quiesce {
            case .never:
                _ = try domain.createSnapshot(xml: definition, flags: diskOnly)
            case .always:
                do {
                    _ = try domain.createSnapshot(xml: definition, flags: quiesced)
                } catch var problem as LibvirtProblem where !problem.isConnectionFailure {
                    problem.message = "quiesce = \"always\" and the snapshot could not be quiesced: \(problem.message)"
                    throw problem
                }
            case .auto:
                do {
                    _ = try domain.createSnapshot(xml: definition, flags: quiesced)
                } catch let problem as LibvirtProblem where !problem.isConnectionFailure {
                    // Atomic: the failed attempt left nothing behind.
                    logger.notice(
                        "Snapshot not quiesced, taking a crash-consistent one",
                        metadata: ["target": "\(target)", "image.name": "\(snapshotName)", "reason": "\(problem)"])
                    _ = try domain.createSnapshot(xml: definition, flags: diskOnly)
                }
            }
        }
        return (image, false)
    }

    /// What one round of a delete did.
    enum DeleteStep: Sendable {
        /// The snapshot is gone (now, or already).
        case done
        /// A merge of `overlay` back into `disk` was started.
        case startedMerge(disk: String, overlay: String)
        /// A merge is running; look again later.
        case waiting(String)
    }

    /// Takes the next step of deleting snapshot `id`, from what the domain looks like now.
    static func deleteStep(_ id: SnapshotID, session: LibvirtSession, logger: Logger) throws -> DeleteStep {
        guard let domain = try session.domain(id.domainUUID), let snapshot = try domain.snapshot(named: id.snapshot)
        else { return .done }
        let record = try LibvirtXML.snapshot(try snapshot.xml())
        // Only what snapcron made: a person's or another tool's snapshot is never ours to remove.
        guard record.description.contains(marker) else {
            throw LibvirtProblem.permanent(
                "refusing to delete snapshot '\(id.snapshot)' of domain \(domain.name): its description lacks the "
                    + "snapcron marker \(marker), so snapcron did not make it")
        }
        guard !record.overlays.isEmpty else {
            try snapshot.delete(metadataOnly: false)
            return .done
        }
        guard try domain.isActive() else {
            throw LibvirtProblem.transient(
                "domain \(domain.name) is not running: the overlays of snapshot '\(id.snapshot)' can be merged back "
                    + "only while it runs")
        }
        let disks = try LibvirtXML.disks(inDomain: try domain.xml())
        for overlay in record.overlays {
            guard let disk = disks.first(where: { $0.target == overlay.disk }), disk.chain.contains(overlay.file)
            else { continue }  // merged already (or the disk was removed)
            let isActiveLayer = disk.activeFile == overlay.file
            if let job = try domain.blockJob(on: overlay.disk) {
                guard job.isActiveCommit, job.isReady, isActiveLayer else {
                    return .waiting("a block job runs on disk \(overlay.disk)")
                }
                do {
                    try domain.pivot(overlay.disk)
                } catch let problem as LibvirtProblem where problem.is(VIR_ERR_BLOCK_COPY_ACTIVE) {
                    return .waiting("disk \(overlay.disk) not ready to pivot")
                }
                logger.debug(
                    "Overlay merged, disk pivoted",
                    metadata: ["libvirt.disk": "\(overlay.disk)", "libvirt.overlay": "\(overlay.file)"])
                return .waiting("pivoted disk \(overlay.disk)")
            }
            try domain.startCommit(of: overlay.disk, top: overlay.file, active: isActiveLayer)
            logger.debug(
                "Overlay merge started",
                metadata: [
                    "libvirt.disk": "\(overlay.disk)", "libvirt.overlay": "\(overlay.file)",
                    "libvirt.active": "\(isActiveLayer)",
                ])
            return .startedMerge(disk: overlay.disk, overlay: overlay.file)
        }
        // No overlay of the snapshot is in use: remove the files first, so a failure leaves the snapshot listed
        // (and the delete to be tried again) rather than files nobody knows of.
        let inUse = Set(disks.flatMap(\.chain))
        for overlay in record.overlays where !inUse.contains(overlay.file) {
            if unlink(overlay.file) != 0, errno != ENOENT {
                let reason = String(cString: strerror(errno)).lowercased()
                throw LibvirtProblem.permanent(
                    "cannot remove overlay \(overlay.file) of snapshot '\(id.snapshot)' (merged back already): "
                        + "\(reason) (the unit needs ReadWritePaths= for it, see docs/backends.md)")
            }
        }
        try snapshot.delete(metadataOnly: true)
        return .done
    }

    // MARK: - Helpers

    /// Where the overlay of `disk` for `snapshot` goes: beside the disk's base file (`web.qcow2` gets
    /// `web.<snapshot>.qcow2`), or in `directory` as `<domain>.<disk>.<snapshot>.qcow2`.
    static func overlayPath(
        for disk: DomainDisk, domain: String, snapshot: String, directory: String?
    ) throws -> String {
        if let directory {
            let folder = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
            return "\(folder)/\(domain).\(disk.target).\(snapshot).qcow2"
        }
        guard disk.type == "file", let active = disk.activeFile, let base = disk.chain.last, active.hasPrefix("/")
        else {
            throw LibvirtProblem.permanent(
                "disk \(disk.target) of domain \(domain) is not a file (type \(disk.type)), so its overlay cannot go "
                    + "beside it; set overlay_dir")
        }
        let folder = (active as NSString).deletingLastPathComponent
        let stem = ((base as NSString).lastPathComponent as NSString).deletingPathExtension
        return "\(folder)/\(stem).\(snapshot).qcow2"
    }

    /// The description stored in the snapshot: the caller's text plus the marker (once).
    static func markedDescription(_ description: String) -> String {
        if description.contains(marker) { return description }
        return description.isEmpty ? marker : "\(description) \(marker)"
    }

    /// Why `name` cannot name a snapshot (and an overlay file), or nil.
    static func problem(withSnapshotName name: String) -> String? {
        guard !name.isEmpty else { return "empty image name" }
        guard !name.contains("/"), !name.hasPrefix("."),
            !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
        else {
            return "invalid image name '\(name)': it names a snapshot and a file, so no '/', no leading '.' and "
                + "no control character"
        }
        return nil
    }

    /// Runs `work` on the connection and words what failed as a ``SnapshotBackendError`` of `operation`.
    private func call<Result: Sendable>(
        _ operation: SnapshotBackendError.Operation, target: String? = nil, image: ImageRef? = nil, logger: Logger,
        _ work: @escaping @Sendable (LibvirtSession) throws -> Result
    ) async throws -> Result {
        do {
            return try await connection.perform(logger: logger, work)
        } catch let problem as LibvirtProblem {
            throw SnapshotBackendError(
                backend: name, operation: operation, target: target, image: image, message: problem.message,
                isTransient: problem.isTransient)
        } catch {
            throw SnapshotBackendError.permanent(backend: name, operation, target: target, image: image, "\(error)")
        }
    }
}

/// An image id: the domain's UUID and the snapshot's name, `<uuid>/<name>`.
struct SnapshotID: Sendable, Hashable {
    var domainUUID: String
    var snapshot: String

    init(domainUUID: String, snapshot: String) {
        self.domainUUID = domainUUID
        self.snapshot = snapshot
    }

    /// The id in `image`, or nil when it cannot be one of this backend's (then the image is gone).
    init?(_ image: ImageRef) {
        guard let slash = image.id.firstIndex(of: "/") else { return nil }
        let uuid = String(image.id[..<slash])
        let name = String(image.id[image.id.index(after: slash)...])
        guard LibvirtSession.isUUID(uuid), !name.isEmpty else { return nil }
        self.init(domainUUID: uuid, snapshot: name)
    }

    var ref: ImageRef { ImageRef(id: "\(domainUUID)/\(snapshot)") }
}

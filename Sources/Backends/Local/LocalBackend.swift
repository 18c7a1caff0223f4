import Foundation
public import Logging
public import SnapshotBackend
import BackendTypes
import LocalDescriptor

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The embedded default backend: copies a local file or directory into an image store on this machine.
///
/// A target is an absolute path to a regular file (a raw or qcow2 disk) or a directory; a symlink as the target
/// is followed. Each image is a folder `<imagesDirectory>/<name>/` holding `manifest.json` and `data` (the copy),
/// and its ``ImageRef`` id is its name. `create` writes a `queued` manifest and returns; a thread owned by the
/// backend copies the target (reflink where the filesystem can, else a sparse-aware copy that reads only data
/// extents), hashes the copy with SHA-256, and then atomically writes the `active` manifest.
///
/// Crash safety: the folder is `flock`ed while its copy runs. A `queued` or `saving` manifest whose folder is not
/// locked belongs to a copy that died with its process; `status` and `list` report it as
/// `.error("interrupted: ...")`, and `resumeAfterRestart` (the daemon following the image after a restart, within
/// its run's timeout) or `create` with the same name copies it afresh.
/// An image whose copy failed keeps an `error` manifest and no data.
///
/// Use one backend instance per images directory and process; other instances and processes see live copies as
/// `queued`/`saving` through the lock.
public actor LocalBackend: SnapshotBackend {
    /// Called on the copy thread before each data extent of each file is copied. It may block to pause the copy;
    /// tests use it to act at a chosen point. Reflinked files have no extents to report.
    public typealias CopyHook = @Sendable (CopyCheckpoint) -> Void

    /// Called on the copy thread once an entry of a directory target (or the target itself) has been examined with
    /// `lstat` (`stat` for the target), just before it is opened. Tests use it to swap the entry at that moment.
    public typealias EntryHook = @Sendable (EntryCheckpoint) -> Void

    /// The entry a copy is about to open when the ``EntryHook`` runs.
    public struct EntryCheckpoint: Sendable, Hashable {
        /// The image name.
        public var image: String
        /// The entry's path: the target, or a path inside it.
        public var path: String
        /// The path below the target (`sub/file`), empty for the target itself.
        public var relativePath: String
    }

    /// Where a copy is when the ``CopyHook`` runs.
    public struct CopyCheckpoint: Sendable, Hashable {
        /// The image name.
        public var image: String
        /// The file being copied.
        public var source: String
        /// The index of this data extent in the file, from 0.
        public var extentIndex: Int
        public var offset: Int64
        public var length: Int64
    }

    /// How a local backend is set up.
    public struct Configuration: Sendable {
        /// The configured backend name, e.g. `local`.
        public var name: String
        /// The image store, e.g. `<state-dir>/images`; made (mode 0700) on first use.
        public var imagesDirectory: String
        /// Try `FICLONE` before copying; off only to force the sparse copy (tests on reflink filesystems).
        public var allowReflink: Bool
        /// Creation and completion times of manifests.
        public var now: @Sendable () -> Date
        /// A test hook run before each copied extent.
        public var copyHook: CopyHook?
        /// A test hook run between examining and opening each entry.
        public var entryHook: EntryHook?

        public init(
            name: String = "local",
            imagesDirectory: String,
            allowReflink: Bool = true,
            now: @escaping @Sendable () -> Date = { Date() },
            copyHook: CopyHook? = nil,
            entryHook: EntryHook? = nil
        ) {
            self.name = name
            self.imagesDirectory = imagesDirectory
            self.allowReflink = allowReflink
            self.now = now
            self.copyHook = copyHook
            self.entryHook = entryHook
        }
    }

    /// The name of the copied data inside an image folder (a file, or a directory for directory targets).
    public static let dataFileName = "data"

    public nonisolated let name: String
    /// The image store, without a trailing slash.
    public nonisolated let imagesDirectory: String
    private let configuration: Configuration

    /// A copy this instance runs.
    private struct Job {
        var token: UInt64
        var target: String
        var progress: CopyProgress
        var cancel: CancellationFlag
        var task: Task<Void, Never>
        var deleting = false
    }

    private var jobs: [String: Job] = [:]
    private var nextToken: UInt64 = 0

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.name = configuration.name
        var directory = configuration.imagesDirectory
        while directory.count > 1 && directory.hasSuffix("/") { directory.removeLast() }
        self.imagesDirectory = directory
    }

    // MARK: - SnapshotBackend

    /// Accepts an absolute path that is not inside the image store and does not contain it (``TargetRule/local``).
    public nonisolated func validate(target: String) throws {
        try TargetRule.local(imagesDirectory: imagesDirectory).validate(target, backend: name)
    }

    /// Starts a copy of `target` as image `name` and returns at once with the image `queued`.
    ///
    /// A retry with the same name returns the existing image; a leftover whose copy was interrupted or failed is
    /// copied afresh. Names are 1...200 characters of `A-Z a-z 0-9 . _ - : @ +`, starting with a letter or digit.
    public func create(target: String, name imageName: String, description: String, logger: Logger) async throws
        -> ImageRef
    {
        var logger = logger
        logger[metadataKey: "backend.name"] = "\(name)"
        logger[metadataKey: "image.name"] = "\(imageName)"
        logger[metadataKey: "image.target"] = "\(target)"
        let ref = ImageRef(id: imageName)
        func failure(_ message: String, transient: Bool = false) -> SnapshotBackendError {
            SnapshotBackendError(
                backend: name, operation: .create, target: target, image: ref, message: message,
                isTransient: transient)
        }
        do {
            try validate(target: target)
        } catch let error as SnapshotBackendError {
            throw failure(error.message)
        }
        guard Self.isValidImageName(imageName) else {
            throw failure(
                "invalid image name '\(imageName)': use 1-200 characters of A-Z a-z 0-9 . _ - : @ +, "
                    + "starting with a letter or digit")
        }

        if let job = jobs[imageName] {
            guard !job.deleting else { throw failure("image is being deleted", transient: true) }
            guard job.target == target else { throw failure("image name is already used for \(job.target)") }
            return ref
        }

        do {
            let folder = folderPath(imageName)
            // Look the name up first: a retry must find what the first call made.
            if let existing = try? Manifest.read(in: folder) {
                guard existing.target == target else {
                    throw failure("image name is already used for \(existing.target)")
                }
                switch diskState(of: existing, in: folder) {
                case .active, .queued, .saving:
                    logger.debug("Image already exists")
                    return ref
                case .error, .gone:
                    logger.info("Copying afresh over a failed or interrupted image")
                }
            }

            guard let source = try fileStatus(target, followSymlinks: true) else {
                throw failure("target does not exist")
            }
            guard source.isRegularFile || source.isDirectory else {
                throw failure("target is neither a regular file nor a directory")
            }

            try FileManager.default.createDirectory(
                atPath: imagesDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            if mkdir(folder, 0o700) != 0 && errno != EEXIST {
                throw SystemCallError(call: "mkdir", path: folder, code: errno)
            }
            let lock = try systemCall("open", folder) { open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC) }
            if flock(lock, LOCK_EX | LOCK_NB) != 0 {
                let code = errno
                closeQuietly(lock)
                if code == EWOULDBLOCK {
                    // Another instance started this very image a moment ago.
                    return ref
                }
                throw SystemCallError(call: "flock", path: folder, code: code)
            }

            let manifest = Manifest(
                name: imageName, description: description, target: target, state: ImageState.queued.stringValue,
                createdAt: configuration.now())
            do {
                try removeTree(folder + "/" + Self.dataFileName)
                try removeTree(folder + "/" + Self.dataFileName + ".partial")
                try manifest.write(in: folder)
            } catch {
                closeQuietly(lock)
                throw error
            }
            startCopy(manifest: manifest, lock: lock, logger: logger)
            logger.info("Image queued")
            return ref
        } catch let error as SnapshotBackendError {
            throw error
        } catch let error as SystemCallError {
            throw failure("\(error)", transient: error.isTransient)
        } catch {
            throw failure("\(error)")
        }
    }

    /// The state of `image`: the live copy's, else its manifest's; `.gone` when there is no such image.
    public func status(_ image: ImageRef, logger: Logger) async throws -> ImageState {
        guard Self.isValidImageName(image.id) else { return .gone }
        if let job = jobs[image.id] { return job.progress.state }
        let folder = folderPath(image.id)
        do {
            guard let manifest = try Manifest.read(in: folder) else { return .gone }
            return diskState(of: manifest, in: folder)
        } catch {
            return .error("manifest unreadable: \(error)")
        }
    }

    /// Copies an image again whose copy died with the previous snapcrond: here snapcrond is the provider, so the
    /// daemon that follows the image after a restart finishes it, as a cloud would have. When that cannot start
    /// (the target is gone), the image's manifest records both reasons for `status` to report.
    public func resumeAfterRestart(_ image: ImageRef, target: String, logger: Logger) async {
        guard Self.isValidImageName(image.id), jobs[image.id] == nil else { return }
        let folder = folderPath(image.id)
        guard var manifest = try? Manifest.read(in: folder), isInterrupted(manifest, in: folder) else { return }
        let interrupted = diskState(of: manifest, in: folder).errorReason ?? "interrupted"
        do {
            _ = try await create(
                target: manifest.target, name: image.id, description: manifest.description, logger: logger)
            logger.notice(
                "Copying an interrupted image again",
                metadata: ["image": "\(image.id)", "target": "\(manifest.target)", "was": "\(manifest.state)"])
        } catch {
            manifest.state = "error"
            manifest.error = "\(interrupted); copying again failed: \(error)"
            try? manifest.write(in: folder)
        }
    }

    /// Every image of `target` in the store, oldest first.
    public func list(target: String, logger: Logger) async throws -> [ImageInfo] {
        try images(of: target, logger: logger)
    }

    /// Every image in the store, whatever its target, oldest first.
    public func listAll(logger: Logger) async throws -> [ImageInfo]? {
        try images(of: nil, logger: logger)
    }

    /// The images of `target` (of every target when nil), oldest first.
    private func images(of target: String?, logger: Logger) throws -> [ImageInfo] {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: imagesDirectory)
        } catch let error as CocoaError where error.code == .fileReadNoSuchFile {
            return []
        } catch {
            throw SnapshotBackendError.transient(
                backend: name, .list, target: target, "cannot read \(imagesDirectory): \(error)")
        }
        var images: [ImageInfo] = []
        for imageName in names where Self.isValidImageName(imageName) {
            let folder = folderPath(imageName)
            let manifest: Manifest
            do {
                guard let read = try Manifest.read(in: folder) else { continue }
                manifest = read
            } catch {
                logger.warning("Skipping an image with an unreadable manifest", metadata: ["path": "\(folder)"])
                continue
            }
            if let target, manifest.target != target { continue }
            let state = jobs[imageName]?.progress.state ?? diskState(of: manifest, in: folder)
            if state == .gone { continue }
            images.append(
                ImageInfo(
                    id: ImageRef(id: imageName), name: manifest.name, description: manifest.description,
                    target: manifest.target, createdAt: manifest.createdAt, state: state,
                    sizeBytes: state == .active ? manifest.sizeBytes : nil))
        }
        return images.sorted { ($0.createdAt ?? .distantPast, $0.name) < ($1.createdAt ?? .distantPast, $1.name) }
    }

    /// Deletes the image folder; stops a running copy first. Succeeds when the image is already gone.
    public func delete(_ image: ImageRef, logger: Logger) async throws {
        guard Self.isValidImageName(image.id) else { return }  // no such image can exist
        if var job = jobs[image.id] {
            job.cancel.cancel()
            job.deleting = true
            jobs[image.id] = job
            await job.task.value
        }
        let folder = folderPath(image.id)
        // Renamed away first, so a crash mid-removal never leaves a half-deleted image that looks whole.
        let trash = imagesDirectory + "/.trash-" + image.id + "-" + String(UInt64.random(in: 0...UInt64.max), radix: 36)
        if rename(folder, trash) != 0 {
            let code = errno
            if code == ENOENT { return }
            let error = SystemCallError(call: "rename", path: folder, code: code)
            throw SnapshotBackendError(
                backend: name, operation: .delete, image: image, message: "\(error)", isTransient: error.isTransient)
        }
        // Also finishes removals that an earlier crash cut short.
        let leftovers = (try? FileManager.default.contentsOfDirectory(atPath: imagesDirectory)) ?? []
        for entry in leftovers where entry.hasPrefix(".trash-") {
            let path = imagesDirectory + "/" + entry
            do {
                try removeTree(path)
            } catch {
                logger.warning("Deleted image left files behind", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
        logger.info("Image deleted", metadata: ["backend.name": "\(name)", "image.name": "\(image.id)"])
    }

    // MARK: - Helpers

    /// Waits until this instance's copy of `image` (if any) has finished, then returns its state.
    ///
    /// For tests and tools; the daemon polls `status` instead.
    public func awaitCompletion(of image: ImageRef) async -> ImageState {
        if let job = jobs[image.id] {
            await job.task.value
        }
        let silent = Logger(label: "snapcron.local", factory: { _ in SwiftLogNoOpLogHandler() })
        // status never throws for the local backend; `.gone` only keeps this helper non-throwing.
        return (try? await status(image, logger: silent)) ?? .gone
    }

    /// Whether a delete of `image` is waiting for its copy to stop (for tests).
    func isDeleting(_ image: ImageRef) -> Bool {
        jobs[image.id]?.deleting ?? false
    }

    /// Whether `name` is a safe, single path component we accept as an image name.
    public nonisolated static func isValidImageName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, name.utf8.count <= 200 else { return false }
        func isAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
            ("a"..."z").contains(scalar) || ("A"..."Z").contains(scalar) || ("0"..."9").contains(scalar)
        }
        return isAlphanumeric(first)
            && name.unicodeScalars.allSatisfy { isAlphanumeric($0) || "._-:@+".unicodeScalars.contains($0) }
    }

    private func folderPath(_ imageName: String) -> String {
        imagesDirectory + "/" + imageName
    }

    /// The state recorded on disk, with unlocked `queued`/`saving` manifests recognised as interrupted copies.
    private nonisolated func diskState(of manifest: Manifest, in folder: String) -> ImageState {
        switch manifest.state {
        case "active":
            return (try? fileStatus(folder + "/" + Self.dataFileName)) != nil
                ? .active : .error("image data is missing from \(folder)")
        case "error":
            return .error(manifest.error ?? "unknown error")
        case "queued", "saving":
            if Self.isLockedByLiveCopy(folder) {
                return manifest.state == "queued" ? .queued : .saving
            }
            return .error("interrupted: the copy of \(manifest.target) stopped while \(manifest.state) (process ended)")
        default:
            return .error("manifest has unknown state '\(manifest.state)'")
        }
    }

    /// A `queued` or `saving` manifest that no live copy holds: its process ended mid-copy.
    private nonisolated func isInterrupted(_ manifest: Manifest, in folder: String) -> Bool {
        (manifest.state == "queued" || manifest.state == "saving") && !Self.isLockedByLiveCopy(folder)
    }

    /// Whether some copy (in any process) holds the folder's lock.
    private nonisolated static func isLockedByLiveCopy(_ folder: String) -> Bool {
        let descriptor = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        defer { closeQuietly(descriptor) }
        if flock(descriptor, LOCK_EX | LOCK_NB) == 0 {
            _ = flock(descriptor, LOCK_UN)
            return false
        }
        return errno == EWOULDBLOCK
    }

    private func startCopy(manifest: Manifest, lock: Int32, logger: Logger) {
        nextToken += 1
        let token = nextToken
        let progress = CopyProgress()
        let cancel = CancellationFlag()
        let copier = ImageCopier(
            imagesDirectory: imagesDirectory, manifest: manifest, lockDescriptor: lock,
            allowReflink: configuration.allowReflink, hook: configuration.copyHook,
            entryHook: configuration.entryHook, now: configuration.now,
            progress: progress, cancel: cancel, logger: logger)
        let imageName = manifest.name
        let task = Task {
            await runOnOwnThread(name: "snapcron-copy") { copier.run() }
            self.finishJob(imageName, token: token)
        }
        jobs[imageName] = Job(token: token, target: manifest.target, progress: progress, cancel: cancel, task: task)
    }

    private func finishJob(_ imageName: String, token: UInt64) {
        if jobs[imageName]?.token == token {
            jobs[imageName] = nil
        }
    }
}

public import Logging

/// A place that can take images of targets (VM disks, servers, directories) and keep them.
///
/// A target is the backend-specific part of a schedule line's `BACKEND:ID` (the `ID`), e.g. an absolute path for
/// `local` or a server id for a cloud. Snapcron drives one image like this: `create`, then `status` until
/// ``ImageState/isFinal``, later `list` and `delete` for retention.
///
/// Implementation requirements (checked by `SnapshotBackendConformance` in SnapcronTestKit, which every backend
/// must pass):
/// - `create` returns quickly: the image may still be `queued` or `saving`; `status` follows it to `active` or
///   `error`.
/// - `create` is safe to retry with the same `name` for the same target: look the name up before creating again
///   and return the existing image, so a create whose reply was lost never makes a duplicate.
/// - `status` of a deleted or unknown image is `.gone`; it never throws for that.
/// - `list(target:)` returns only images of that target.
/// - `delete` of an image that is already gone (or never existed) succeeds.
/// - Every thrown error is a ``SnapshotBackendError`` whose `isTransient` says honestly whether a retry may help.
/// - Take the `Logger` passed in, never build one; log no secrets.
public protocol SnapshotBackend: Sendable {
    /// The configured name of this backend, e.g. `local` or `twcc-prod`.
    var name: String { get }

    /// Starts an image of `target` called `name`, and returns its id without waiting for it to finish.
    ///
    /// Retrying with the same `name` and `target` returns the image the first call made.
    func create(target: String, name: String, description: String, logger: Logger) async throws -> ImageRef

    /// ``create(target:name:description:logger:)`` with the image's state when the backend knows it from the create
    /// itself (a command that prints `"state": "active"`); nil when only ``status(_:logger:)`` can tell.
    ///
    /// The scheduler finishes a run at once when this says `active`, without a poll. The default calls `create`
    /// and knows no state.
    func createImage(target: String, name: String, description: String, logger: Logger) async throws -> CreatedImage

    /// ``createImage(target:name:description:logger:)``, told whether an earlier call can have made an image called
    /// `name`. The scheduler says `nameIsFresh` only when none can have: the run's first attempt, of a fire due
    /// after this process started. A backend that looks the name up before creating (to stay idempotent after a
    /// lost reply) may then skip that lookup. The default ignores the hint.
    func createImage(
        target: String, name: String, description: String, nameIsFresh: Bool, logger: Logger
    ) async throws -> CreatedImage

    /// The current state of `image`; `.gone` when the backend does not know it (deleted or never made).
    func status(_ image: ImageRef, logger: Logger) async throws -> ImageState

    /// The images of `target` that this backend holds, in any state but `.gone`.
    func list(target: String, logger: Logger) async throws -> [ImageInfo]

    /// The current states of several images at once, each with its own outcome.
    ///
    /// The scheduler follows every unfinished image of a backend through this one call per pass, so a backend
    /// whose API can answer many images with one request (a project-wide list) should do so: the API cost per
    /// image then stays bounded however many images bake at once. The default asks ``status(_:logger:)`` for each
    /// image in turn. An image missing from the answer is asked again at the next pass.
    func statuses(of images: [ImageRef], logger: Logger) async -> [ImageRef: Result<ImageState, SnapshotBackendError>]

    /// Every image this backend holds across all its targets, or nil when it cannot list them all at once.
    ///
    /// The scheduler's sweep uses it to find images carrying snapcron's marker that its store does not know (a
    /// create whose reply was lost); with nil it lists each known target with ``list(target:logger:)`` instead.
    func listAll(logger: Logger) async throws -> [ImageInfo]?

    /// What the backend knows of one image of `target` (its size, above all); nil when it does not know.
    ///
    /// Asked once when an image becomes active. The default looks the image up in ``list(target:logger:)``; a
    /// backend with a cheaper single-image call may answer with that.
    func info(of image: ImageRef, target: String, logger: Logger) async throws -> ImageInfo?

    /// Picks up `image` after snapcrond restarted while following it, before the first poll, if its run is still
    /// within its timeout.
    ///
    /// A backend whose work runs inside snapcrond (the local copy) starts again what died with the previous process;
    /// one whose provider works on its own (a cloud) has nothing to do, which is the default. A failure is for the
    /// following `status` to report.
    func resumeAfterRestart(_ image: ImageRef, target: String, logger: Logger) async

    /// Deletes `image`; succeeds when it is already gone.
    func delete(_ image: ImageRef, logger: Logger) async throws

    /// Checks the syntax of a target string when a schedule is loaded; cheap, no I/O needed.
    ///
    /// Throws a permanent ``SnapshotBackendError`` (operation `validate`) naming what is wrong.
    func validate(target: String) throws
}

extension SnapshotBackend {
    public func createImage(
        target: String, name: String, description: String, logger: Logger
    ) async throws -> CreatedImage {
        CreatedImage(ref: try await create(target: target, name: name, description: description, logger: logger))
    }

    public func createImage(
        target: String, name: String, description: String, nameIsFresh: Bool, logger: Logger
    ) async throws -> CreatedImage {
        try await createImage(target: target, name: name, description: description, logger: logger)
    }

    public func info(of image: ImageRef, target: String, logger: Logger) async throws -> ImageInfo? {
        try await list(target: target, logger: logger).first { $0.id == image }
    }

    public func resumeAfterRestart(_ image: ImageRef, target: String, logger: Logger) async {}

    public func statuses(
        of images: [ImageRef], logger: Logger
    ) async -> [ImageRef: Result<ImageState, SnapshotBackendError>] {
        var results: [ImageRef: Result<ImageState, SnapshotBackendError>] = [:]
        for image in images {
            do {
                results[image] = .success(try await status(image, logger: logger))
            } catch let error as SnapshotBackendError {
                results[image] = .failure(error)
            } catch {
                results[image] = .failure(
                    .transient(backend: name, .status, image: image, "\(error)"))
            }
        }
        return results
    }

    public func listAll(logger: Logger) async throws -> [ImageInfo]? { nil }
}

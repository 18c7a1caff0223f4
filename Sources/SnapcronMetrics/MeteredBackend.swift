import Foundation
import Logging
import SnapshotBackend

/// A backend that counts its calls and their outcomes in `snapcron_backend_requests_total`; everything else is the
/// wrapped backend's.
public struct MeteredBackend: SnapshotBackend {
    public let base: any SnapshotBackend
    let metrics: DaemonMetrics

    public init(_ base: any SnapshotBackend, metrics: DaemonMetrics) {
        self.base = base
        self.metrics = metrics
    }

    public var name: String { base.name }

    private func counted<T>(_ operation: String, _ call: () async throws -> T) async throws -> T {
        do {
            let value = try await call()
            metrics.backendRequest(backend: base.name, operation: operation, outcome: .ok)
            return value
        } catch {
            metrics.backendRequest(backend: base.name, operation: operation, outcome: .init(error))
            throw error
        }
    }

    public func create(target: String, name: String, description: String, logger: Logger) async throws -> ImageRef {
        try await counted("create") { try await base.create(target: target, name: name, description: description, logger: logger) }
    }

    public func createImage(
        target: String, name: String, description: String, logger: Logger
    ) async throws -> CreatedImage {
        try await counted("create") {
            try await base.createImage(target: target, name: name, description: description, logger: logger)
        }
    }

    public func createImage(
        target: String, name: String, description: String, nameIsFresh: Bool, logger: Logger
    ) async throws -> CreatedImage {
        try await counted("create") {
            try await base.createImage(
                target: target, name: name, description: description, nameIsFresh: nameIsFresh, logger: logger)
        }
    }

    public func status(_ image: ImageRef, logger: Logger) async throws -> ImageState {
        try await counted("status") { try await base.status(image, logger: logger) }
    }

    public func list(target: String, logger: Logger) async throws -> [ImageInfo] {
        try await counted("list") { try await base.list(target: target, logger: logger) }
    }

    /// One count per call, by its worst outcome (a permanent failure of one image outweighs a transient one).
    public func statuses(
        of images: [ImageRef], logger: Logger
    ) async -> [ImageRef: Result<ImageState, SnapshotBackendError>] {
        let results = await base.statuses(of: images, logger: logger)
        var outcome = DaemonMetrics.BackendOutcome.ok
        for case .failure(let error) in results.values {
            outcome = error.isTransient && outcome != .permanentError ? .transientError : .permanentError
        }
        metrics.backendRequest(backend: base.name, operation: "status", outcome: outcome)
        return results
    }

    /// Counted only when the backend can list everything (nil means it made no request).
    public func listAll(logger: Logger) async throws -> [ImageInfo]? {
        do {
            let images = try await base.listAll(logger: logger)
            if images != nil { metrics.backendRequest(backend: base.name, operation: "list", outcome: .ok) }
            return images
        } catch {
            metrics.backendRequest(backend: base.name, operation: "list", outcome: .init(error))
            throw error
        }
    }

    public func info(of image: ImageRef, target: String, logger: Logger) async throws -> ImageInfo? {
        try await counted("info") { try await base.info(of: image, target: target, logger: logger) }
    }

    public func resumeAfterRestart(_ image: ImageRef, target: String, logger: Logger) async {
        await base.resumeAfterRestart(image, target: target, logger: logger)
    }

    public func delete(_ image: ImageRef, logger: Logger) async throws {
        try await counted("delete") { try await base.delete(image, logger: logger) }
    }

    public func validate(target: String) throws { try base.validate(target: target) }
}

import Logging
import SnapcronTestKit
import SnapshotBackend
import Testing

@Suite struct ConformanceSuiteTests {
    @Test func fakeBackendConforms() async throws {
        let suite = SnapshotBackendConformance(
            makeBackend: { FakeSnapshotBackend() }, targets: ("vm-1", "vm-2"))
        let failures = await suite.run()
        #expect(failures.isEmpty, "\(failures)")
        try await suite.check()
    }

    /// Each flaw must be reported under its rule, so the suite cannot pass a broken backend.
    @Test(arguments: [
        (BrokenBackend.Flaw.duplicatesOnRetry, SnapshotBackendConformance.Rule.createIsIdempotentByName),
        (.listIgnoresTarget, .listIsScopedToTarget),
        (.unknownStatusThrows, .unknownImageIsGone),
        (.deleteOfGoneThrows, .deleteIsIdempotent),
        (.deleteKeepsImage, .deleteMakesImageGone),
        (.neverActive, .createReachesActive),
        (.acceptsEmptyTarget, .invalidTargetIsRejected),
        (.throwsForeignErrors, .errorsAreSnapshotBackendErrors),
    ])
    func suiteDetectsBrokenBackend(_ flaw: BrokenBackend.Flaw, _ rule: SnapshotBackendConformance.Rule) async throws {
        let suite = SnapshotBackendConformance(
            makeBackend: { BrokenBackend(flaw: flaw) }, targets: ("vm-1", "vm-2"))
        let failures = await suite.run()
        #expect(failures.contains { $0.rule == rule }, "\(flaw) not reported as \(rule): \(failures)")
        await #expect(throws: SnapshotBackendConformance.Failures.self) { try await suite.check() }
    }
}

/// A backend with one deliberate contract violation.
actor BrokenBackend: SnapshotBackend {
    enum Flaw: Sendable {
        case duplicatesOnRetry, listIgnoresTarget, unknownStatusThrows, deleteOfGoneThrows, deleteKeepsImage
        case neverActive, acceptsEmptyTarget, throwsForeignErrors
    }

    struct ForeignError: Error {}

    nonisolated let name = "broken"
    let flaw: Flaw
    private var images: [ImageRef: (name: String, target: String)] = [:]
    private var counter = 0

    init(flaw: Flaw) {
        self.flaw = flaw
    }

    nonisolated func validate(target: String) throws {
        if target.isEmpty && flaw != .acceptsEmptyTarget {
            throw SnapshotBackendError.permanent(backend: name, .validate, target: target, "empty target")
        }
    }

    func create(target: String, name imageName: String, description: String, logger: Logger) async throws -> ImageRef {
        if flaw == .throwsForeignErrors { throw ForeignError() }
        try validate(target: target)
        if flaw != .duplicatesOnRetry, let found = images.first(where: { $0.value == (imageName, target) }) {
            return found.key
        }
        counter += 1
        let ref = ImageRef(id: "broken-\(counter)")
        images[ref] = (imageName, target)
        return ref
    }

    func status(_ image: ImageRef, logger: Logger) async throws -> ImageState {
        guard images[image] != nil else {
            if flaw == .unknownStatusThrows {
                throw SnapshotBackendError.permanent(backend: name, .status, image: image, "not found")
            }
            return .gone
        }
        return flaw == .neverActive ? .error("always fails") : .active
    }

    func list(target: String, logger: Logger) async throws -> [ImageInfo] {
        images.filter { flaw == .listIgnoresTarget || $0.value.target == target }.map {
            ImageInfo(
                id: $0.key, name: $0.value.name, description: "", target: $0.value.target, createdAt: nil,
                state: .active, sizeBytes: nil)
        }
    }

    func delete(_ image: ImageRef, logger: Logger) async throws {
        guard images[image] != nil else {
            if flaw == .deleteOfGoneThrows {
                throw SnapshotBackendError.permanent(backend: name, .delete, image: image, "not found")
            }
            return
        }
        if flaw != .deleteKeepsImage { images[image] = nil }
    }
}

import Foundation
import LocalBackend
import Logging
import SnapcronTestKit
import SnapshotBackend
import Testing

/// The conformance rules for `statuses(of:)` and `listAll`, checked against a real backend wrapped to break them.
@Suite struct BatchConformanceRuleTests {
    /// The local backend with one of the batch calls broken.
    struct Flawed: SnapshotBackend {
        enum Flaw: Sendable { case staleStatuses, unknownNotGone, silentStatuses, listAllOmits }

        let base: LocalBackend
        let flaw: Flaw
        var name: String { base.name }

        func create(target: String, name: String, description: String, logger: Logger) async throws -> ImageRef {
            try await base.create(target: target, name: name, description: description, logger: logger)
        }
        func status(_ image: ImageRef, logger: Logger) async throws -> ImageState {
            try await base.status(image, logger: logger)
        }
        func list(target: String, logger: Logger) async throws -> [ImageInfo] {
            try await base.list(target: target, logger: logger)
        }
        func delete(_ image: ImageRef, logger: Logger) async throws { try await base.delete(image, logger: logger) }
        func validate(target: String) throws { try base.validate(target: target) }

        func statuses(
            of images: [ImageRef], logger: Logger
        ) async -> [ImageRef: Result<ImageState, SnapshotBackendError>] {
            let honest = await base.statuses(of: images, logger: logger)
            switch flaw {
            case .staleStatuses: return honest.mapValues { _ in .success(.queued) }
            case .unknownNotGone: return honest.mapValues { (try? $0.get()) == .gone ? .success(.active) : $0 }
            case .silentStatuses: return [:]
            case .listAllOmits: return honest
            }
        }

        func listAll(logger: Logger) async throws -> [ImageInfo]? {
            flaw == .listAllOmits ? [] : try await base.listAll(logger: logger)
        }
    }

    @Test(arguments: [
        (Flawed.Flaw.staleStatuses, SnapshotBackendConformance.Rule.statusesAgreeWithStatus),
        (.unknownNotGone, .statusesAgreeWithStatus),
        (.silentStatuses, .statusesAgreeWithStatus),
        (.listAllOmits, .listAllContainsCreatedImage),
    ])
    func aBrokenBatchCallIsReportedUnderItsRule(
        _ flaw: Flawed.Flaw, _ rule: SnapshotBackendConformance.Rule
    ) async throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        try writeFile(scratch.path + "/a.img", "disk a")
        try writeFile(scratch.path + "/b.img", "disk b")
        let root = scratch.path
        let suite = SnapshotBackendConformance(
            makeBackend: {
                Flawed(
                    base: LocalBackend(configuration: .init(imagesDirectory: root + "/images-\(UUID().uuidString)")),
                    flaw: flaw)
            },
            targets: (root + "/a.img", root + "/b.img"))
        let failures = await suite.run(rule)
        #expect(!failures.isEmpty, "\(flaw) passed \(rule)")
        #expect(failures.allSatisfy { $0.rule == rule }, "\(failures)")
        // The honest backend passes the same rule.
        let honest = SnapshotBackendConformance(
            makeBackend: { LocalBackend(configuration: .init(imagesDirectory: root + "/images-\(UUID().uuidString)")) },
            targets: (root + "/a.img", root + "/b.img"))
        #expect(await honest.run(rule).isEmpty)
    }
}

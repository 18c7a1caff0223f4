public import Logging
public import SnapshotBackend

/// The rules of the `SnapshotBackend` contract, run against a real backend; every backend must pass.
///
/// Framework-agnostic: ``run()`` returns the violations, ``check()`` throws them. Each rule gets a fresh backend
/// from `makeBackend` and cleans up the images it made.
///
/// ```swift
/// let failures = await SnapshotBackendConformance(
///     makeBackend: { LocalBackend(configuration: .init(imagesDirectory: dir())) },
///     targets: ("/srv/a.img", "/srv/b.img")
/// ).run()
/// #expect(failures.isEmpty, "\(failures)")
/// ```
public struct SnapshotBackendConformance: Sendable {
    /// One rule of the contract.
    public struct Rule: Hashable, Sendable, CustomStringConvertible {
        public var name: String

        public init(_ name: String) {
            self.name = name
        }

        public static let createReachesActive = Rule("create then status reaches active")
        public static let createIsIdempotentByName = Rule("create twice with one name returns one image")
        public static let listIsScopedToTarget = Rule("list returns only images of its target")
        public static let deleteMakesImageGone = Rule("delete then status is gone and list omits it")
        public static let deleteIsIdempotent = Rule("delete of a gone image succeeds")
        public static let unknownImageIsGone = Rule("status of an unknown image is gone")
        public static let invalidTargetIsRejected = Rule("an empty target is rejected with a permanent error")
        public static let errorsAreSnapshotBackendErrors = Rule("every thrown error is a SnapshotBackendError")
        public static let statusesAgreeWithStatus = Rule(
            "statuses(of:) agrees with status for a created and an unknown image")
        public static let listAllContainsCreatedImage = Rule("a non-nil listAll contains a created image")

        public static let all: [Rule] = [
            .createReachesActive, .createIsIdempotentByName, .listIsScopedToTarget, .deleteMakesImageGone,
            .deleteIsIdempotent, .unknownImageIsGone, .invalidTargetIsRejected, .statusesAgreeWithStatus,
            .listAllContainsCreatedImage,
        ]

        public var description: String { name }
    }

    /// A broken rule and what was seen.
    public struct Failure: Error, Hashable, Sendable, CustomStringConvertible {
        public var rule: Rule
        public var message: String

        public var description: String { "\(rule): \(message)" }
    }

    /// All violations of one run, thrown by ``check()``.
    public struct Failures: Error, Sendable, CustomStringConvertible {
        public var failures: [Failure]

        public var description: String {
            "backend conformance failed:\n" + failures.map { "- \($0)" }.joined(separator: "\n")
        }
    }

    /// Waits until an image is final and returns that state.
    public typealias AwaitFinal = @Sendable (any SnapshotBackend, ImageRef, Logger) async throws -> ImageState

    private let makeBackend: @Sendable () async throws -> any SnapshotBackend
    private let targets: (String, String)
    private let awaitFinal: AwaitFinal
    private let logger: Logger

    /// - Parameters:
    ///   - makeBackend: a fresh backend for each rule.
    ///   - targets: two different valid targets that can be imaged.
    ///   - awaitFinal: how to wait for a final state; by default polls `status`, yielding between polls.
    ///   - logger: passed to every backend call.
    public init(
        makeBackend: @escaping @Sendable () async throws -> any SnapshotBackend,
        targets: (String, String),
        awaitFinal: AwaitFinal? = nil,
        logger: Logger = Logger(label: "snapcron.conformance", factory: { _ in SwiftLogNoOpLogHandler() })
    ) {
        self.makeBackend = makeBackend
        self.targets = targets
        self.awaitFinal =
            awaitFinal ?? { backend, image, logger in
                try await Self.pollUntilFinal(backend, image, logger: logger)
            }
        self.logger = logger
    }

    /// Polls `status` until final, with a `Task.yield()` between polls and no sleeping.
    public static func pollUntilFinal(
        _ backend: any SnapshotBackend, _ image: ImageRef, logger: Logger, maxPolls: Int = 1_000_000
    ) async throws -> ImageState {
        for _ in 0..<maxPolls {
            let state = try await backend.status(image, logger: logger)
            if state.isFinal { return state }
            await Task.yield()
        }
        return try await backend.status(image, logger: logger)
    }

    /// Runs every rule and returns the violations (empty when the backend conforms).
    public func run() async -> [Failure] {
        var failures: [Failure] = []
        for rule in Rule.all {
            failures += await run(rule)
        }
        return failures
    }

    /// Runs every rule and throws ``Failures`` when any is violated.
    public func check() async throws {
        let failures = await run()
        if !failures.isEmpty { throw Failures(failures: failures) }
    }

    /// Runs one rule on a fresh backend.
    public func run(_ rule: Rule) async -> [Failure] {
        var context = Context(rule: rule, logger: logger, token: String(UInt32.random(in: 0...UInt32.max), radix: 36))
        do {
            let backend = try await makeBackend()
            do {
                try await body(of: rule, backend: backend, context: &context)
            } catch {
                context.unexpected(error)
            }
            for image in context.made {
                try? await backend.delete(image, logger: logger)
            }
        } catch {
            context.fail("cannot make the backend: \(error)")
        }
        return context.failures
    }

    // MARK: - Rules

    private struct Context {
        var rule: Rule
        var logger: Logger
        var token: String
        var failures: [Failure] = []
        var made: [ImageRef] = []

        func imageName(_ suffix: String) -> String {
            "conformance-\(token)-\(suffix)"
        }

        mutating func fail(_ message: String) {
            failures.append(Failure(rule: rule, message: message))
        }

        mutating func expect(_ condition: Bool, _ message: @autoclosure () -> String) {
            if !condition { fail(message()) }
        }

        mutating func unexpected(_ error: any Error) {
            if error is SnapshotBackendError {
                fail("unexpected error: \(error)")
            } else {
                failures.append(
                    Failure(
                        rule: .errorsAreSnapshotBackendErrors, message: "\(rule) threw \(type(of: error)): \(error)"))
            }
        }
    }

    private func body(of rule: Rule, backend: any SnapshotBackend, context: inout Context) async throws {
        let (targetA, targetB) = targets
        let logger = context.logger
        func create(_ target: String, _ suffix: String, _ context: inout Context) async throws -> ImageRef {
            let image = try await backend.create(
                target: target, name: context.imageName(suffix), description: "conformance \(suffix)", logger: logger)
            context.made.append(image)
            return image
        }

        switch rule {
        case .createReachesActive:
            let image = try await create(targetA, "a", &context)
            let final = try await awaitFinal(backend, image, logger)
            context.expect(final == .active, "expected active after create, got \(final)")
            let later = try await backend.status(image, logger: logger)
            context.expect(later == .active, "status after reaching active changed to \(later)")
            let listed = try await backend.list(target: targetA, logger: logger)
            let entry = listed.first { $0.id == image }
            context.expect(entry != nil, "list(\(targetA)) omits the new image \(image)")
            let name = context.imageName("a")
            context.expect(entry.map { $0.name == name } ?? true, "listed name is not \(name)")
            let listedState = entry?.state
            context.expect(listedState.map { $0 == .active } ?? true, "listed state is \(listedState!), not active")
            // `info(of:)` is what the scheduler asks for the size: it may not know, but must not contradict list.
            if let info = try await backend.info(of: image, target: targetA, logger: logger) {
                context.expect(info.id == image, "info(of: \(image)) describes \(info.id)")
                context.expect(info.sizeBytes.map { $0 >= 0 } ?? true, "info(of: \(image)) has a negative size")
                context.expect(
                    entry == nil || info.sizeBytes == entry?.sizeBytes,
                    "info(of:) size \(String(describing: info.sizeBytes)) differs from list's")
            }

        case .createIsIdempotentByName:
            let first = try await create(targetA, "retry", &context)
            let second = try await create(targetA, "retry", &context)
            context.expect(first == second, "second create returned \(second), first returned \(first)")
            _ = try await awaitFinal(backend, first, logger)
            let third = try await create(targetA, "retry", &context)
            context.expect(first == third, "create after completion returned \(third), not \(first)")
            let name = context.imageName("retry")
            let named = try await backend.list(target: targetA, logger: logger).filter { $0.name == name }
            context.expect(named.count == 1, "list shows \(named.count) images named \(name)")

        case .listIsScopedToTarget:
            let onA = try await create(targetA, "on-a", &context)
            let onB = try await create(targetB, "on-b", &context)
            _ = try await awaitFinal(backend, onA, logger)
            _ = try await awaitFinal(backend, onB, logger)
            let listA = try await backend.list(target: targetA, logger: logger)
            let listB = try await backend.list(target: targetB, logger: logger)
            context.expect(listA.contains { $0.id == onA }, "list(\(targetA)) omits its image")
            context.expect(!listA.contains { $0.id == onB }, "list(\(targetA)) includes an image of \(targetB)")
            context.expect(listB.contains { $0.id == onB }, "list(\(targetB)) omits its image")
            context.expect(!listB.contains { $0.id == onA }, "list(\(targetB)) includes an image of \(targetA)")
            context.expect(listA.allSatisfy { $0.target == targetA }, "list(\(targetA)) has entries of other targets")

        case .deleteMakesImageGone:
            let image = try await create(targetA, "delete", &context)
            _ = try await awaitFinal(backend, image, logger)
            try await backend.delete(image, logger: logger)
            let state = try await backend.status(image, logger: logger)
            context.expect(state == .gone, "status after delete is \(state), not gone")
            let listed = try await backend.list(target: targetA, logger: logger)
            context.expect(!listed.contains { $0.id == image }, "list still shows the deleted image")

        case .deleteIsIdempotent:
            let image = try await create(targetA, "delete-twice", &context)
            _ = try await awaitFinal(backend, image, logger)
            try await backend.delete(image, logger: logger)
            do {
                try await backend.delete(image, logger: logger)
            } catch {
                context.fail("second delete threw: \(error)")
                if !(error is SnapshotBackendError) { context.unexpected(error) }
            }

        case .unknownImageIsGone:
            let unknown = ImageRef(id: context.imageName("never-made"))
            do {
                let state = try await backend.status(unknown, logger: logger)
                context.expect(state == .gone, "status of an unknown image is \(state), not gone")
            } catch {
                context.fail("status of an unknown image threw: \(error)")
                if !(error is SnapshotBackendError) { context.unexpected(error) }
            }
            do {
                try await backend.delete(unknown, logger: logger)
            } catch {
                context.fail("delete of an unknown image threw: \(error)")
                if !(error is SnapshotBackendError) { context.unexpected(error) }
            }

        case .invalidTargetIsRejected:
            do {
                try backend.validate(target: "")
                context.fail("validate accepted an empty target")
            } catch let error as SnapshotBackendError {
                context.expect(!error.isTransient, "validate marks an empty target transient")
            }
            do {
                let image = try await backend.create(
                    target: "", name: context.imageName("empty"), description: "", logger: logger)
                context.made.append(image)
                context.fail("create accepted an empty target")
            } catch let error as SnapshotBackendError {
                context.expect(!error.isTransient, "create marks an empty target transient")
            }

        case .statusesAgreeWithStatus:
            let image = try await create(targetA, "statuses", &context)
            _ = try await awaitFinal(backend, image, logger)
            let unknown = ImageRef(id: context.imageName("never-made"))
            let single = try await backend.status(image, logger: logger)
            // The protocol lets an answer leave an image out (it is asked again at the next pass): allow a few.
            var answers: [ImageRef: Result<ImageState, SnapshotBackendError>] = [:]
            for _ in 0..<3 where answers[image] == nil || answers[unknown] == nil {
                for (key, value) in await backend.statuses(of: [image, unknown], logger: logger) {
                    if !(key == image || key == unknown) {
                        context.fail("statuses(of:) answered for \(key), which it was not asked about")
                    }
                    answers[key] = answers[key] ?? value
                }
            }
            switch answers[image] {
            case nil: context.fail("statuses(of:) never answered for the created image \(image)")
            case .success(let state):
                context.expect(state == single, "statuses(of:) says \(state) for \(image), status says \(single)")
            case .failure(let error): context.fail("statuses(of:) failed for \(image): \(error)")
            }
            switch answers[unknown] {
            case nil: context.fail("statuses(of:) never answered for the unknown image \(unknown)")
            case .success(let state):
                context.expect(state == .gone, "statuses(of:) says \(state) for an unknown image, not gone")
            case .failure(let error): context.fail("statuses(of:) failed for an unknown image: \(error)")
            }
            let none = await backend.statuses(of: [], logger: logger)
            context.expect(none.isEmpty, "statuses(of: []) answered \(none.count) images")

        case .listAllContainsCreatedImage:
            let image = try await create(targetA, "list-all", &context)
            _ = try await awaitFinal(backend, image, logger)
            guard let all = try await backend.listAll(logger: logger) else { break }  // not supported: nothing to check
            let entry = all.first { $0.id == image }
            context.expect(entry != nil, "listAll omits the new image \(image)")
            let name = context.imageName("list-all")
            context.expect(
                entry.map { $0.name == name } ?? true, "listAll names \(image) '\(entry!.name)', not \(name)")
            context.expect(
                entry.map { $0.description.contains("conformance list-all") } ?? true,
                "listAll's description of \(image) lacks the one given at create: '\(entry!.description)'")
            context.expect(!all.contains { $0.state == .gone }, "listAll includes gone images")

        default:
            context.fail("unknown rule")
        }
    }
}

public import Foundation
public import Logging
public import SnapshotBackend

/// An in-memory backend whose behaviour tests script call by call, and which records every call.
///
/// Images live per target and get ids `fake-1`, `fake-2`, ... Each new image follows an ``ImageBehavior``
/// (the next one queued with ``enqueueCreate(_:reply:)``, else ``defaultBehavior``) that decides what `status`
/// answers poll by poll. Failures are scripted per operation with ``failNext(_:times:transient:message:)`` and
/// ``failAlways(_:message:)``. It follows the `SnapshotBackend` contract and passes the conformance suite.
public actor FakeSnapshotBackend: SnapshotBackend {
    /// What `status` reports for an image, poll by poll.
    public enum ImageBehavior: Sendable, Hashable {
        /// `queued` up to the first poll, `saving` after, `active` from poll `polls` on (`polls <= 0`: at once).
        case succeed(afterPolls: Int)
        /// `queued` on every poll.
        case queuedForever
        /// Like `succeed`, but ends in `error(reason)` from poll `polls` on.
        case fail(afterPolls: Int, reason: String)

        /// `active` on the first poll.
        public static let active = ImageBehavior.succeed(afterPolls: 0)
    }

    /// How `create` answers after it made an image.
    public enum CreateReply: Sendable, Hashable {
        /// Returns the image.
        case normal
        /// The image exists server-side, but the reply is lost: `create` throws a transient error.
        case crashBeforeReply
    }

    /// One recorded call and how it ended.
    public struct Call: Sendable, Hashable, CustomStringConvertible {
        public enum Outcome: Sendable, Hashable {
            case image(ImageRef)
            case state(ImageState)
            case images([ImageRef])
            case done
            case failed(message: String, transient: Bool)
        }

        public var operation: SnapshotBackendError.Operation
        public var target: String?
        public var name: String?
        public var image: ImageRef?
        public var outcome: Outcome

        public init(
            operation: SnapshotBackendError.Operation, target: String?, name: String?, image: ImageRef?,
            outcome: Outcome
        ) {
            self.operation = operation
            self.target = target
            self.name = name
            self.image = image
            self.outcome = outcome
        }

        public var description: String {
            let subject = [target, name, image?.id].compactMap { $0 }.joined(separator: " ")
            return "\(operation)(\(subject)) -> \(outcome)"
        }
    }

    /// One image as the fake holds it.
    public struct Image: Sendable, Hashable {
        public var ref: ImageRef
        public var name: String
        public var description: String
        public var target: String
        public var createdAt: Date
        public var behavior: ImageBehavior
        /// How many times `status` was asked about it.
        public var polls: Int

        /// The state after `polls` polls.
        public var state: ImageState {
            switch behavior {
            case .queuedForever:
                return .queued
            case .succeed(let after):
                return polls >= after ? .active : (polls <= 1 ? .queued : .saving)
            case .fail(let after, let reason):
                return polls >= after ? .error(reason) : (polls <= 1 ? .queued : .saving)
            }
        }
    }

    private struct ScriptedFailure {
        var remaining: Int?  // nil: forever
        var transient: Bool
        var message: String
    }

    public nonisolated let name: String
    /// The behaviour of images made when no ``enqueueCreate(_:reply:)`` script is pending.
    public var defaultBehavior: ImageBehavior
    /// Every call, in order.
    public private(set) var calls: [Call] = []
    /// The same calls as a stream, for tests that wait for one.
    public nonisolated let events: AsyncStream<Call>

    private let eventsContinuation: AsyncStream<Call>.Continuation
    private var imagesByID: [ImageRef: Image] = [:]
    private var order: [ImageRef] = []
    /// `target` + NUL + `name` -> image, so the create-by-name lookup stays O(1) with many images.
    private var idsByName: [String: ImageRef] = [:]
    private var createScripts: [(ImageBehavior, CreateReply)] = []
    private var failures: [SnapshotBackendError.Operation: ScriptedFailure] = [:]
    private var nextID = 0
    private let now: @Sendable () -> Date

    /// - Parameters:
    ///   - now: creation times; by default a fixed start plus one second per image, so tests stay clock-free.
    public init(
        name: String = "fake",
        defaultBehavior: ImageBehavior = .succeed(afterPolls: 2),
        now: (@Sendable () -> Date)? = nil
    ) {
        self.name = name
        self.defaultBehavior = defaultBehavior
        if let now {
            self.now = now
        } else {
            let counter = Counter()
            self.now = { Date(timeIntervalSince1970: 1_700_000_000 + Double(counter.next())) }
        }
        (events, eventsContinuation) = AsyncStream<Call>.makeStream()
    }

    // MARK: - Scripting

    /// Sets the behaviour of images made without a pending script.
    public func setDefaultBehavior(_ behavior: ImageBehavior) {
        defaultBehavior = behavior
    }

    /// Scripts the next `create` that makes a new image (scripts are used in order).
    public func enqueueCreate(_ behavior: ImageBehavior, reply: CreateReply = .normal) {
        createScripts.append((behavior, reply))
    }

    /// Makes the next `times` calls of `operation` throw, before they do anything.
    public func failNext(
        _ operation: SnapshotBackendError.Operation,
        times: Int = 1,
        transient: Bool = true,
        message: String = "scripted failure"
    ) {
        failures[operation] = ScriptedFailure(remaining: times, transient: transient, message: message)
    }

    /// Makes every call of `operation` throw a permanent error until ``clearFailures()``.
    public func failAlways(_ operation: SnapshotBackendError.Operation, message: String = "scripted permanent failure")
    {
        failures[operation] = ScriptedFailure(remaining: nil, transient: false, message: message)
    }

    /// Removes every scripted failure.
    public func clearFailures() {
        failures = [:]
    }

    /// Adds an image as if made earlier (retention tests, restarts).
    @discardableResult
    public func seed(
        target: String, name: String, description: String = "", createdAt: Date? = nil,
        behavior: ImageBehavior = .active
    ) -> ImageRef {
        makeImage(target: target, name: name, description: description, createdAt: createdAt, behavior: behavior)
    }

    /// Every image the fake holds, oldest first.
    public var images: [Image] {
        order.compactMap { imagesByID[$0] }
    }

    /// The recorded calls of one operation.
    public func calls(of operation: SnapshotBackendError.Operation) -> [Call] {
        calls.filter { $0.operation == operation }
    }

    // MARK: - SnapshotBackend

    public nonisolated func validate(target: String) throws {
        if target.isEmpty || target.contains(where: \.isWhitespace) {
            throw SnapshotBackendError.permanent(
                backend: name, .validate, target: target, "target must be non-empty and contain no whitespace")
        }
    }

    public func create(target: String, name imageName: String, description: String, logger: Logger) async throws
        -> ImageRef
    {
        var call = Call(operation: .create, target: target, name: imageName, image: nil, outcome: .done)
        do {
            do {
                try validate(target: target)
            } catch let error as SnapshotBackendError {
                throw SnapshotBackendError.permanent(backend: name, .create, target: target, error.message)
            }
            try injectedFailure(.create, target: target, image: nil)
            if let existingID = idsByName[target + "\u{0}" + imageName], let existing = imagesByID[existingID] {
                call.outcome = .image(existing.ref)
                record(call)
                return existing.ref
            }
            let (behavior, reply) = createScripts.isEmpty ? (defaultBehavior, .normal) : createScripts.removeFirst()
            let ref = makeImage(
                target: target, name: imageName, description: description, createdAt: nil, behavior: behavior)
            if reply == .crashBeforeReply {
                throw SnapshotBackendError.transient(
                    backend: name, .create, target: target,
                    "connection reset before the reply (image \(ref.id) was made)")
            }
            call.outcome = .image(ref)
            record(call)
            return ref
        } catch let error as SnapshotBackendError {
            call.outcome = .failed(message: error.message, transient: error.isTransient)
            record(call)
            throw error
        }
    }

    /// Makes `image` behave as `behavior` from now on, as a provider that finishes (or fails) an image late does.
    public func setBehavior(of image: ImageRef, to behavior: ImageBehavior) {
        imagesByID[image]?.behavior = behavior
    }

    /// The images `resumeAfterRestart` was called for, in order.
    public private(set) var resumedAfterRestart: [ImageRef] = []

    public func resumeAfterRestart(_ image: ImageRef, target: String, logger: Logger) async {
        resumedAfterRestart.append(image)
    }

    public func status(_ image: ImageRef, logger: Logger) async throws -> ImageState {
        var call = Call(operation: .status, target: nil, name: nil, image: image, outcome: .done)
        do {
            try injectedFailure(.status, target: nil, image: image)
            guard var stored = imagesByID[image] else {
                call.outcome = .state(.gone)
                record(call)
                return .gone
            }
            stored.polls += 1
            imagesByID[image] = stored
            call.outcome = .state(stored.state)
            record(call)
            return stored.state
        } catch let error as SnapshotBackendError {
            call.outcome = .failed(message: error.message, transient: error.isTransient)
            record(call)
            throw error
        }
    }

    public func list(target: String, logger: Logger) async throws -> [ImageInfo] {
        var call = Call(operation: .list, target: target, name: nil, image: nil, outcome: .done)
        do {
            try injectedFailure(.list, target: target, image: nil)
            let found = images.filter { $0.target == target }.map {
                ImageInfo(
                    id: $0.ref, name: $0.name, description: $0.description, target: $0.target,
                    createdAt: $0.createdAt, state: $0.state, sizeBytes: $0.state == .active ? 1 << 30 : nil)
            }
            call.outcome = .images(found.map(\.id))
            record(call)
            return found
        } catch let error as SnapshotBackendError {
            call.outcome = .failed(message: error.message, transient: error.isTransient)
            record(call)
            throw error
        }
    }

    public func delete(_ image: ImageRef, logger: Logger) async throws {
        var call = Call(operation: .delete, target: nil, name: nil, image: image, outcome: .done)
        do {
            try injectedFailure(.delete, target: nil, image: image)
            if let removed = imagesByID.removeValue(forKey: image) {
                idsByName[removed.target + "\u{0}" + removed.name] = nil
            }
            order.removeAll { $0 == image }
            record(call)
        } catch let error as SnapshotBackendError {
            call.outcome = .failed(message: error.message, transient: error.isTransient)
            record(call)
            throw error
        }
    }

    // MARK: - Internals

    private func makeImage(
        target: String, name imageName: String, description: String, createdAt: Date?, behavior: ImageBehavior
    ) -> ImageRef {
        nextID += 1
        let ref = ImageRef(id: "fake-\(nextID)")
        imagesByID[ref] = Image(
            ref: ref, name: imageName, description: description, target: target, createdAt: createdAt ?? now(),
            behavior: behavior, polls: 0)
        order.append(ref)
        idsByName[target + "\u{0}" + imageName] = ref
        return ref
    }

    private func injectedFailure(_ operation: SnapshotBackendError.Operation, target: String?, image: ImageRef?) throws
    {
        guard var failure = failures[operation] else { return }
        if let remaining = failure.remaining {
            if remaining <= 1 {
                failures[operation] = nil
            } else {
                failure.remaining = remaining - 1
                failures[operation] = failure
            }
        }
        throw SnapshotBackendError(
            backend: name, operation: operation, target: target, image: image, message: failure.message,
            isTransient: failure.transient)
    }

    private func record(_ call: Call) {
        calls.append(call)
        eventsContinuation.yield(call)
    }
}

/// A thread-safe counter for the default clock.
private final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0

    func next() -> Int {
        lock.withLock {
            value += 1
            return value
        }
    }
}

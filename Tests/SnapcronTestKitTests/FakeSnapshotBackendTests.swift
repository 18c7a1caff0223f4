import Logging
import SnapcronTestKit
import SnapshotBackend
import Testing

let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// Polls `status` `count` times and returns the answers.
func poll(_ backend: FakeSnapshotBackend, _ image: ImageRef, times count: Int) async throws -> [ImageState] {
    var states: [ImageState] = []
    for _ in 0..<count {
        states.append(try await backend.status(image, logger: quiet))
    }
    return states
}

@Suite struct FakeSnapshotBackendTests {
    @Test func succeedsAfterScriptedPolls() async throws {
        let fake = FakeSnapshotBackend()
        await fake.enqueueCreate(.succeed(afterPolls: 3))
        let image = try await fake.create(target: "vm-1", name: "n", description: "", logger: quiet)
        #expect(try await poll(fake, image, times: 4) == [.queued, .saving, .active, .active])
    }

    @Test func activeBehaviourIsActiveAtOnce() async throws {
        let fake = FakeSnapshotBackend(defaultBehavior: .active)
        let image = try await fake.create(target: "vm-1", name: "n", description: "", logger: quiet)
        #expect(try await fake.status(image, logger: quiet) == .active)
    }

    @Test func staysQueuedForever() async throws {
        let fake = FakeSnapshotBackend(defaultBehavior: .queuedForever)
        let image = try await fake.create(target: "vm-1", name: "n", description: "", logger: quiet)
        let states = try await poll(fake, image, times: 50)
        #expect(states.allSatisfy { $0 == .queued })
    }

    @Test func endsInScriptedError() async throws {
        let fake = FakeSnapshotBackend()
        await fake.enqueueCreate(.fail(afterPolls: 2, reason: "quota exceeded"))
        let image = try await fake.create(target: "vm-1", name: "n", description: "", logger: quiet)
        #expect(try await poll(fake, image, times: 3) == [.queued, .error("quota exceeded"), .error("quota exceeded")])
    }

    @Test func transientFailuresForTheNextCalls() async throws {
        let fake = FakeSnapshotBackend()
        await fake.failNext(.create, times: 2, message: "http 503")
        for _ in 0..<2 {
            let error = await #expect(throws: SnapshotBackendError.self) {
                try await fake.create(target: "vm-1", name: "n", description: "", logger: quiet)
            }
            #expect(error?.isTransient == true)
            #expect(error?.message == "http 503")
        }
        let image = try await fake.create(target: "vm-1", name: "n", description: "", logger: quiet)
        #expect(await fake.images.map(\.ref) == [image])
        let outcomes = await fake.calls(of: .create).map(\.outcome)
        #expect(
            outcomes == [
                .failed(message: "http 503", transient: true), .failed(message: "http 503", transient: true),
                .image(image),
            ])
    }

    @Test func permanentFailureRepeatsUntilCleared() async throws {
        let fake = FakeSnapshotBackend()
        await fake.failAlways(.list, message: "forbidden")
        for _ in 0..<3 {
            let error = await #expect(throws: SnapshotBackendError.self) {
                try await fake.list(target: "vm-1", logger: quiet)
            }
            #expect(error?.isTransient == false)
        }
        await fake.clearFailures()
        #expect(try await fake.list(target: "vm-1", logger: quiet).isEmpty)
    }

    @Test func crashBetweenCreateAndReplyIsFoundByRetry() async throws {
        let fake = FakeSnapshotBackend()
        await fake.enqueueCreate(.active, reply: .crashBeforeReply)
        let error = await #expect(throws: SnapshotBackendError.self) {
            try await fake.create(target: "vm-1", name: "nightly", description: "", logger: quiet)
        }
        #expect(error?.isTransient == true)
        let listed = try await fake.list(target: "vm-1", logger: quiet)
        #expect(listed.map(\.name) == ["nightly"])

        let retried = try await fake.create(target: "vm-1", name: "nightly", description: "", logger: quiet)
        #expect(retried == listed[0].id)
        #expect(await fake.images.count == 1)
    }

    @Test func deleteFailureKeepsTheImage() async throws {
        let fake = FakeSnapshotBackend()
        let image = try await fake.create(target: "vm-1", name: "n", description: "", logger: quiet)
        await fake.failNext(.delete, transient: false, message: "image is in use")
        await #expect(throws: SnapshotBackendError.self) { try await fake.delete(image, logger: quiet) }
        #expect(await fake.images.map(\.ref) == [image])
        try await fake.delete(image, logger: quiet)
        #expect(try await fake.status(image, logger: quiet) == .gone)
        try await fake.delete(image, logger: quiet)
    }

    @Test func recordsEveryCallInOrder() async throws {
        let fake = FakeSnapshotBackend(defaultBehavior: .active)
        let image = try await fake.create(target: "vm-1", name: "n", description: "d", logger: quiet)
        _ = try await fake.status(image, logger: quiet)
        _ = try await fake.list(target: "vm-1", logger: quiet)
        try await fake.delete(image, logger: quiet)
        let calls = await fake.calls
        #expect(calls.map(\.operation) == [.create, .status, .list, .delete])
        #expect(calls[0] == .init(operation: .create, target: "vm-1", name: "n", image: nil, outcome: .image(image)))
        #expect(calls[1].outcome == .state(.active))
        #expect(calls[2].outcome == .images([image]))

        var iterator = fake.events.makeAsyncIterator()
        #expect(await iterator.next()?.operation == .create)
    }

    @Test func seededImagesAreListedOldestFirst() async throws {
        let fake = FakeSnapshotBackend()
        let old = await fake.seed(target: "vm-1", name: "old")
        let new = await fake.seed(target: "vm-1", name: "new")
        await fake.seed(target: "vm-2", name: "other")
        let listed = try await fake.list(target: "vm-1", logger: quiet)
        #expect(listed.map(\.id) == [old, new])
        #expect(listed.allSatisfy { $0.state == .active })
        #expect(listed[0].createdAt! < listed[1].createdAt!)
    }
}

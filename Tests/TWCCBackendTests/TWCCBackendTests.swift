import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SnapcronTestKit
import SnapshotBackend
import TWCCStandIn
import Testing

@testable import TWCCBackend

@Suite struct TWCCBackendTests {
    // MARK: - Contract

    @Test func passesTheBackendConformanceSuite() async throws {
        try await withStandIn { standIn in
            let failures = await SnapshotBackendConformance(
                makeBackend: { try makeBackend(standIn) }, targets: ("101", "102")
            ).run()
            #expect(failures.isEmpty, "\(failures)")
            #expect(standIn.complaints.isEmpty, "\(standIn.complaints)")
        }
    }

    @Test func createSendsWhatTwccliSends() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            let image = try await backend.create(
                target: "101", name: "snapcron-web-20261129T010000Z", description: "job web", logger: quiet)
            let put = try #require(standIn.requests(.PUT, "images/").first)
            #expect(put.path == "images/555/save/")
            #expect(put.query.isEmpty)
            #expect(put.headers.first(name: "x-api-key") == standIn.apiKey)
            #expect(put.headers.first(name: "x-api-host") == "openstack-taichung-default-2")
            #expect(put.headers.first(name: "content-type") == "application/json")
            let body = try #require(try JSONSerialization.jsonObject(with: Data(put.body.utf8)) as? [String: String])
            #expect(
                body == [
                    "name": "snapcron-web-20261129T010000Z", "desc": "job web [snapcron]", "os": "Ubuntu",
                    "os_version": "22.04",
                ])
            #expect(standIn.images[Int(image.id)!]?.name == "snapcron-web-20261129T010000Z")
            #expect(standIn.complaints.isEmpty, "\(standIn.complaints)")
        }
    }

    @Test func resolvesASiteByNameAndRejectsUnknownOrAmbiguousSites() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            let image = try await backend.create(target: "db01", name: "snapcron-db-1", description: "", logger: quiet)
            #expect(standIn.images[Int(image.id)!]?.serverID == 556)
            #expect(standIn.images[Int(image.id)!]?.desc == "[snapcron]")

            let twin = await backendError { _ = try await backend.list(target: "twin", logger: quiet) }
            #expect(twin?.isTransient == false)
            #expect(twin?.message.contains("2 VCS sites are named 'twin'") == true)
            let missing = await backendError {
                _ = try await backend.create(target: "999", name: "x", description: "", logger: quiet)
            }
            #expect(missing?.isTransient == false)
            #expect(missing?.message == "no VCS site 999 in project 4242 on openstack-taichung-default-2")
            let bad = await backendError { try backend.validate(target: "web 01/x") }
            #expect(bad?.isTransient == false)
        }
    }

    @Test func listKeepsOnlyImagesOfTheTargetsServer() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            let image = try await backend.create(target: "101", name: "snapcron-a", description: "", logger: quiet)
            _ = try await backend.create(target: "102", name: "snapcron-b", description: "", logger: quiet)
            let listed = try await backend.list(target: "101", logger: quiet)
            // The person's own image of web01 is listed too (it is that server's); the public one is not.
            #expect(Set(listed.map(\.id.id)) == ["2", image.id])
            let mine = try #require(listed.first { $0.id == image })
            #expect(mine.target == "101")
            #expect(mine.createdAt != nil)
            #expect(mine.state == .queued)
        }
    }

    // MARK: - States

    @Test func slowQueuedImageStaysQueuedThenFinishes() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            standIn.setProgression(.slowQueued(reads: 5))
            let image = try await backend.create(target: "101", name: "snapcron-slow", description: "", logger: quiet)
            var seen: [ImageState] = []
            for _ in 0..<7 { seen.append(try await backend.status(image, logger: quiet)) }
            #expect(seen == [.queued, .queued, .queued, .queued, .queued, .saving, .active])
        }
    }

    @Test func stuckQueuedImageNeverBecomesFinal() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            standIn.setProgression(.stuckQueued)
            let image = try await backend.create(target: "101", name: "snapcron-stuck", description: "", logger: quiet)
            for _ in 0..<20 { #expect(try await backend.status(image, logger: quiet) == .queued) }
        }
    }

    @Test func failedImageReportsTheReason() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            standIn.setProgression(.fails("disk read error"))
            let image = try await backend.create(target: "101", name: "snapcron-bad", description: "", logger: quiet)
            let final = try await SnapshotBackendConformance.pollUntilFinal(backend, image, logger: quiet, maxPolls: 10)
            #expect(final == .error("ERROR: disk read error"))
        }
    }

    @Test func imageDeletedBehindOurBackIsGone() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            let image = try await backend.create(target: "101", name: "snapcron-vanish", description: "", logger: quiet)
            standIn.deleteBehindOurBack(Int(image.id)!)
            #expect(try await backend.status(image, logger: quiet) == .gone)
            #expect(try await !backend.list(target: "101", logger: quiet).contains { $0.id == image })
            try await backend.delete(image, logger: quiet)
            #expect(standIn.requests(.DELETE, "images/").isEmpty)
        }
    }

    // MARK: - Transient failures and retries

    @Test(arguments: [500, 502, 503, 504, 429])
    func retriesTransientStatusThenSucceeds(_ status: Int) async throws {
        try await withStandIn { standIn in
            let timing = VirtualTiming()
            let backend = try makeBackend(standIn, timing: timing)
            let image = try await backend.create(target: "101", name: "snapcron-r", description: "", logger: quiet)
            standIn.inject(.reply(status, json: #"{"detail": "try later"}"#), method: .GET, path: "images/", times: 2)
            #expect(try await backend.status(image, logger: quiet) == .queued)
            #expect(standIn.requests(.GET, "images/\(image.id)/").count == 3)
            #expect(timing.sleeps.count == 2)
            // Exponential with jitter: first in [250, 500] ms, second in [500, 1000] ms.
            #expect(timing.sleeps[0] >= .milliseconds(250) && timing.sleeps[0] <= .milliseconds(500))
            #expect(timing.sleeps[1] >= .milliseconds(500) && timing.sleeps[1] <= .milliseconds(1000))
        }
    }

    @Test func givesUpAfterTheAttemptBudgetWithATransientError() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            standIn.inject(.reply(503, json: #"{"detail": "Service Unavailable"}"#), path: "images/", times: 100)
            let error = await backendError { _ = try await backend.status(ImageRef(id: "900"), logger: quiet) }
            #expect(error?.isTransient == true)
            #expect(error?.operation == .status)
            #expect(
                error?.message
                    == "HTTP 503 from GET images/900/: Service Unavailable, gave up after 4 attempts")
            #expect(standIn.requests(.GET, "images/900/").count == 4)
        }
    }

    @Test func honoursRetryAfterOn429() async throws {
        try await withStandIn { standIn in
            let timing = VirtualTiming()
            let backend = try makeBackend(standIn, timing: timing)
            standIn.inject(
                .reply(429, json: #"{"message": "Too Many Requests"}"#, headers: [("Retry-After", "3")]),
                path: "images/")
            _ = try await backend.status(ImageRef(id: "2"), logger: quiet)
            #expect(timing.sleeps == [.seconds(3)])
        }
    }

    @Test func timeoutIsTransientAndRetried() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn, timeout: .milliseconds(300))
            standIn.inject(.hang, method: .GET, path: "images/2/")
            #expect(try await backend.status(ImageRef(id: "2"), logger: quiet) == .active)
            standIn.inject(.hang, method: .GET, path: "images/2/", times: 10)
            let error = await backendError { _ = try await backend.status(ImageRef(id: "2"), logger: quiet) }
            #expect(error?.isTransient == true)
            #expect(error?.message.hasPrefix("GET images/2/ timed out after 300 ms") == true)
        }
    }

    @Test func connectionRefusedIsTransient() async throws {
        let standIn = TWCCStandIn()
        try await standIn.start()
        // AHC keeps trying to connect until the request deadline, so each attempt costs the whole timeout.
        let backend = try makeBackend(standIn, timeout: .milliseconds(200))
        await standIn.stop()
        let error = await backendError { _ = try await backend.list(target: "101", logger: quiet) }
        #expect(error?.isTransient == true, "\(String(describing: error))")
        print("connection refused reads: \(String(describing: error))")
        #expect(error?.message.contains("gave up after 4 attempts") == true)
    }

    @Test func createAfterALostReplyReturnsTheImageItMade() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn, timeout: .milliseconds(300))
            standIn.inject(.lostReply, method: .PUT, path: "images/555/save/")
            let image = try await backend.create(target: "101", name: "snapcron-lost", description: "", logger: quiet)
            #expect(standIn.requests(.PUT, "images/").count == 1)
            #expect(standIn.images.values.filter { $0.name == "snapcron-lost" }.map { String($0.id) } == [image.id])
        }
    }

    @Test func aFreshNameIsSavedWithoutListingTheProjectsImages() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            let made = try await backend.createImage(
                target: "101", name: "snapcron-fresh", description: "", nameIsFresh: true, logger: quiet)
            #expect(standIn.requests(.GET, "images/").isEmpty)
            #expect(standIn.requests(.PUT, "images/").count == 1)
            #expect(standIn.images[Int(made.ref.id)!]?.name == "snapcron-fresh")
        }
    }

    @Test func aFreshNameWhoseSaveReplyIsLostIsLookedUpBeforeSendingAgain() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn, timeout: .milliseconds(300))
            standIn.inject(.lostReply, method: .PUT, path: "images/555/save/")
            let made = try await backend.createImage(
                target: "101", name: "snapcron-fresh-lost", description: "", nameIsFresh: true, logger: quiet)
            #expect(standIn.requests(.PUT, "images/").count == 1)
            #expect(standIn.requests(.GET, "images/").count == 1)
            #expect(
                standIn.images.values.filter { $0.name == "snapcron-fresh-lost" }.map { String($0.id) } == [made.ref.id])
        }
    }

    @Test func aNameThatMayExistIsLookedUpFirst() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            let first = try await backend.createImage(
                target: "101", name: "snapcron-again", description: "", nameIsFresh: false, logger: quiet)
            let again = try await backend.createImage(
                target: "101", name: "snapcron-again", description: "", nameIsFresh: false, logger: quiet)
            #expect(first.ref == again.ref)
            #expect(standIn.requests(.PUT, "images/").count == 1)
            #expect(standIn.requests(.GET, "images/").count == 2)
        }
    }

    @Test func fiveHundredOnCreateLooksBeforeSendingAgain() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            standIn.inject(.reply(500, json: #"{"detail": "boom"}"#), method: .PUT, path: "images/")
            let image = try await backend.create(target: "101", name: "snapcron-500", description: "", logger: quiet)
            #expect(standIn.requests(.PUT, "images/").count == 2)
            #expect(standIn.images[Int(image.id)!]?.name == "snapcron-500")
        }
    }

    // MARK: - Permanent failures

    @Test func unauthorizedFailsAtOnceWithTheGatewaysMessage() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn, key: "11111111-2222-3333-4444-555555555555")
            let (logger, lines) = CapturingLogHandler.logger()
            let error = await backendError {
                _ = try await backend.create(target: "101", name: "snapcron-x", description: "", logger: logger)
            }
            #expect(error?.isTransient == false)
            #expect(error?.message == "HTTP 401 from GET sites/101/: Your request is unauthorized.")
            #expect(standIn.requests.count == 1)
            let printed = lines.withLockedValue { $0 }.joined() + "\(error!)"
            #expect(!printed.contains("11111111-2222"))
        }
    }

    @Test(arguments: [400, 403, 409])
    func otherClientErrorsFailAtOnceWithTheDetail(_ status: Int) async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            standIn.inject(.reply(status, json: #"{"detail": "Image quota exceeded."}"#), method: .PUT, path: "images/")
            let error = await backendError {
                _ = try await backend.create(target: "101", name: "snapcron-q", description: "", logger: quiet)
            }
            #expect(error?.isTransient == false)
            #expect(error?.message == "HTTP \(status) from PUT images/555/save/: Image quota exceeded.")
            #expect(standIn.requests(.PUT, "images/").count == 1)
        }
    }

    @Test func unreadableReplyIsPermanent() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            standIn.inject(.reply(200, json: "<html>portal</html>"), method: .GET, path: "images/2/")
            let error = await backendError { _ = try await backend.status(ImageRef(id: "2"), logger: quiet) }
            #expect(error?.isTransient == false)
            #expect(error?.message.contains("<html>portal</html>") == true)
        }
    }

    // MARK: - Delete

    @Test func refusesToDeleteImagesSnapcronDidNotMake() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            for id in ["1", "2"] {
                let error = await backendError { try await backend.delete(ImageRef(id: id), logger: quiet) }
                #expect(error?.isTransient == false)
                #expect(error?.message.contains("lacks the snapcron marker [snapcron]") == true)
            }
            #expect(standIn.requests(.DELETE, "").isEmpty)
            #expect(standIn.images[2] != nil)
        }
    }

    @Test func deleteWaitsForTheImageToAnswer404() async throws {
        try await withStandIn { standIn in
            let timing = VirtualTiming()
            let backend = try makeBackend(standIn, timing: timing)
            let image = try await backend.create(target: "101", name: "snapcron-d", description: "", logger: quiet)
            let lingering =
                #"{"id": \#(image.id), "name": "snapcron-d", "desc": "[snapcron]", "status": "ACTIVE", "server": {"id": 555}}"#
            standIn.inject(.reply(200, json: lingering), method: .GET, path: "images/\(image.id)/", times: 2)
            try await backend.delete(image, logger: quiet)
            #expect(standIn.requests(.DELETE, "images/\(image.id)/").count == 1)
            #expect(standIn.requests(.GET, "images/\(image.id)/").count == 3)
            #expect(timing.sleeps.count == 1)
            #expect(standIn.images[Int(image.id)!] == nil)
        }
    }

    // MARK: - Limits

    @Test func paceRequestsWithATokenBucket() async throws {
        try await withStandIn { standIn in
            let timing = VirtualTiming()
            let backend = try makeBackend(standIn, requestsPerSecond: 5, timing: timing)
            for _ in 0..<15 { _ = try await backend.status(ImageRef(id: "2"), logger: quiet) }
            // A burst of 5, then one every 200 ms: 10 waits of 200 ms on virtual time.
            #expect(timing.sleeps.count == 10)
            #expect(timing.slept >= .milliseconds(1990) && timing.slept <= .milliseconds(2010))
        }
    }

    @Test func limitsRequestsInFlight() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn, inFlight: 2)
            standIn.inject(.delay(.milliseconds(100)), method: .GET, path: "images/2/", times: 8)
            try await withThrowingTaskGroup(of: ImageState.self) { group in
                for _ in 0..<8 { group.addTask { try await backend.status(ImageRef(id: "2"), logger: quiet) } }
                for try await state in group { #expect(state == .active) }
            }
            #expect(standIn.maxInFlight == 2)
        }
    }
}

import Foundation
import NIOHTTP1
import SnapshotBackend
import TWCCStandIn
import Testing

@testable import TWCCBackend

/// What following many images and creating many images costs in requests.
@Suite struct BatchStatusTests {
    /// 40 images baking for 10 minutes, followed every simulated minute: one request per pass, not one per image.
    @Test func fortyBakingImagesCostOneRequestPerPass() async throws {
        let clock = SimulatedClock()
        try await withStandIn(now: { clock.now() }) { standIn in
            standIn.setProgression(.baking(seconds: 600))
            let backend = try makeBackend(standIn)
            var images: [ImageRef] = []
            for index in 0..<40 {
                images.append(
                    try await backend.create(
                        target: index % 2 == 0 ? "101" : "102", name: "snapcron-bake-\(index)", description: "",
                        logger: quiet))
            }
            standIn.resetRequestCounts()
            let passes = 12
            for pass in 1...passes {
                clock.advance(by: 60)
                let answers = await backend.statuses(of: images, logger: quiet)
                // QUEUED for the first 60 s of the bake, SAVING until 600 s, then ACTIVE.
                let expected: ImageState = pass < 10 ? .saving : .active
                #expect(Set(answers.keys) == Set(images))
                #expect(answers.values.allSatisfy { (try? $0.get()) == expected }, "pass \(pass): \(answers)")
            }
            #expect(standIn.requestCount(.listImages) == passes)
            #expect(standIn.requestTotal == passes, "\(standIn.requestCounts)")
            #expect(standIn.complaints.isEmpty, "\(standIn.complaints)")
        }
    }

    @Test func imagesMissingFromTheListAreAskedOneByOne() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            let kept = try await backend.create(target: "101", name: "snapcron-kept", description: "", logger: quiet)
            let vanished = try await backend.create(
                target: "101", name: "snapcron-gone", description: "", logger: quiet)
            standIn.deleteBehindOurBack(Int(vanished.id)!)
            let foreign = ImageRef(id: "not-a-twcc-id")
            standIn.resetRequestCounts()
            let answers = await backend.statuses(of: [kept, vanished, foreign], logger: quiet)
            #expect(try answers[kept]?.get() == .queued)
            #expect(try answers[vanished]?.get() == .gone)
            #expect(try answers[foreign]?.get() == .gone)
            #expect(standIn.requestCounts == [.listImages: 1, .getImage: 1])
            #expect(standIn.requests(.GET, "images/\(vanished.id)/").count == 1)
        }
    }

    /// A list that leaves an image out (not the project's, say) does not make it gone: its own call decides.
    @Test func anImageTheListLeavesOutGetsItsOwnAnswer() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            let image = try await backend.create(target: "101", name: "snapcron-hidden", description: "", logger: quiet)
            standIn.inject(.reply(200, json: "[]"), method: .GET, path: "images/")
            let answers = await backend.statuses(of: [image, ImageRef(id: "2")], logger: quiet)
            #expect(try answers[image]?.get() == .queued)
            #expect(try answers[ImageRef(id: "2")]?.get() == .active)
        }
    }

    @Test func aFailedListGivesEveryImageItsErrorHonestly() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            let images = [ImageRef(id: "2"), ImageRef(id: "900")]
            standIn.inject(
                .reply(503, json: #"{"detail": "Service Unavailable"}"#), method: .GET, path: "images/", times: 4)
            let transient = await backend.statuses(of: images, logger: quiet)
            for image in images {
                let error = try #require(transient[image].flatMap { try? $0.failure() })
                #expect(error.isTransient)
                #expect(error.image == image)
                #expect(error.message == "HTTP 503 from GET images/: Service Unavailable, gave up after 4 attempts")
            }
            standIn.inject(.reply(403, json: #"{"detail": "Not your project."}"#), method: .GET, path: "images/")
            let permanent = await backend.statuses(of: images, logger: quiet)
            for image in images {
                let error = try #require(permanent[image].flatMap { try? $0.failure() })
                #expect(!error.isTransient)
                #expect(error.message == "HTTP 403 from GET images/: Not your project.")
            }
            // Nothing was asked image by image.
            #expect(standIn.requestCount(.getImage) == 0)
        }
    }

    @Test func listAllReturnsEveryImageOfTheProjectWithItsSite() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            let a = try await backend.create(
                target: "web01", name: "snapcron-a", description: "snapcron:job=a", logger: quiet)
            let b = try await backend.create(
                target: "102", name: "snapcron-b", description: "snapcron:job=b", logger: quiet)
            standIn.resetRequestCounts()
            let all = try #require(try await backend.listAll(logger: quiet))
            #expect(standIn.requestCounts == [.listImages: 1, .listSites: 1])
            let byID = Dictionary(uniqueKeysWithValues: all.map { ($0.id, $0) })
            #expect(Set(byID.keys) == [ImageRef(id: "1"), ImageRef(id: "2"), a, b])
            #expect(byID[a]?.target == "101" && byID[a]?.description == "snapcron:job=a [snapcron]")
            #expect(byID[b]?.target == "102" && byID[b]?.name == "snapcron-b" && byID[b]?.state == .queued)
            #expect(byID[ImageRef(id: "2")]?.target == "101")
            #expect(byID[ImageRef(id: "1")]?.target == "")  // public: no server
        }
    }
}

@Suite struct ServerLookupCacheTests {
    @Test func manyCreatesOnOneSiteLookItUpOnce() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            for index in 0..<20 {
                _ = try await backend.create(target: "101", name: "snapcron-c-\(index)", description: "", logger: quiet)
                _ = try await backend.create(
                    target: "db01", name: "snapcron-d-\(index)", description: "", logger: quiet)
            }
            #expect(standIn.requestCount(.getSite) == 1)
            #expect(standIn.requestCount(.listSites) == 1)
            #expect(standIn.requestCount(.listServers) == 2)
            #expect(standIn.requestCount(.saveImage) == 40)
            _ = try await backend.list(target: "101", logger: quiet)
            #expect(standIn.requestCount(.getSite) == 1)
        }
    }

    @Test func theLookupIsRepeatedAfterTenMinutes() async throws {
        try await withStandIn { standIn in
            let timing = VirtualTiming()
            let backend = try makeBackend(standIn, timing: timing)
            _ = try await backend.create(target: "101", name: "snapcron-1", description: "", logger: quiet)
            timing.advance(by: .seconds(599))
            _ = try await backend.create(target: "101", name: "snapcron-2", description: "", logger: quiet)
            #expect(standIn.requestCount(.getSite) == 1)
            timing.advance(by: .seconds(1))
            _ = try await backend.create(target: "101", name: "snapcron-3", description: "", logger: quiet)
            #expect(standIn.requestCount(.getSite) == 2)
            #expect(standIn.requestCount(.listServers) == 2)
        }
    }

    /// A rebuilt instance has a new server: the save to the remembered one answers 404, and the site is looked up
    /// again within the same create.
    @Test func aSaveThatSaysTheServerIsGoneLooksTheSiteUpAgain() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            _ = try await backend.create(target: "101", name: "snapcron-before", description: "", logger: quiet)
            let server = try #require(standIn.replaceServer(ofSite: 101))
            let image = try await backend.create(target: "101", name: "snapcron-after", description: "", logger: quiet)
            #expect(standIn.images[Int(image.id)!]?.serverID == server)
            #expect(standIn.requests(.PUT, "images/").map(\.path) == [
                "images/555/save/", "images/555/save/", "images/\(server)/save/",
            ])
            #expect(standIn.requestCount(.getSite) == 2)
            // The new server is remembered in turn.
            _ = try await backend.create(target: "101", name: "snapcron-later", description: "", logger: quiet)
            #expect(standIn.requestCount(.getSite) == 2)
        }
    }

    @Test func aSaveThatSays404ForAFreshlyLookedUpServerFailsAtOnce() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            _ = try await backend.create(target: "101", name: "snapcron-1", description: "", logger: quiet)
            standIn.inject(.reply(404, json: #"{"detail": "Not found."}"#), method: .PUT, path: "images/", times: 5)
            let error = await backendError {
                _ = try await backend.create(target: "101", name: "snapcron-2", description: "", logger: quiet)
            }
            #expect(error?.isTransient == false)
            #expect(error?.message == "HTTP 404 from PUT images/555/save/: Not found.")
            // Remembered server, 404, fresh lookup, 404 again: two saves, then a permanent error.
            #expect(standIn.requests(.PUT, "images/").count == 3)
            #expect(standIn.requestCount(.getSite) == 2)
        }
    }
}

extension Result {
    /// The error of a failure; throws the success value's absence otherwise.
    func failure() throws -> Failure {
        guard case .failure(let error) = self else { throw NotAFailure() }
        return error
    }
}

struct NotAFailure: Error {}

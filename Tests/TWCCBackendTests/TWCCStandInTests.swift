import Foundation
import NIOHTTP1
import SnapshotBackend
import TWCCStandIn
import Testing

@testable import TWCCBackend

/// The stand-in's own behaviour that benchmarks rely on: timed baking on an injected clock and request counters.
@Suite struct TWCCStandInTests {
    @Test func timedImagesBakeOnTheInjectedClockNotOnReads() async throws {
        let clock = SimulatedClock()
        try await withStandIn(now: { clock.now() }) { standIn in
            standIn.setProgression(.baking(seconds: 100))
            let backend = try makeBackend(standIn)
            let image = try await backend.create(target: "101", name: "snapcron-bake", description: "", logger: quiet)
            // Reads alone move nothing.
            for _ in 0..<5 { #expect(try await backend.status(image, logger: quiet) == .queued) }
            clock.advance(by: 10)
            #expect(try await backend.status(image, logger: quiet) == .saving)
            clock.advance(by: 89.5)
            #expect(try await backend.status(image, logger: quiet) == .saving)
            #expect(try await backend.list(target: "101", logger: quiet).first { $0.id == image }?.state == .saving)
            clock.advance(by: 0.5)
            #expect(try await backend.list(target: "101", logger: quiet).first { $0.id == image }?.state == .active)
            #expect(try await backend.status(image, logger: quiet) == .active)
            #expect(standIn.images[Int(image.id)!]?.createTime == "2030-01-01T00:00:00.000000Z")
            #expect(standIn.complaints.isEmpty, "\(standIn.complaints)")
        }
    }

    @Test func timedFailureEndsInErrorWithItsReason() async throws {
        let clock = SimulatedClock()
        try await withStandIn(now: { clock.now() }) { standIn in
            standIn.setProgression(.timed(queued: 5, saving: 5, final: "ERROR", reason: "volume busy"))
            let backend = try makeBackend(standIn)
            let image = try await backend.create(target: "102", name: "snapcron-fail", description: "", logger: quiet)
            clock.advance(by: 7)
            #expect(try await backend.status(image, logger: quiet) == .saving)
            clock.advance(by: 3)
            #expect(try await backend.status(image, logger: quiet) == .error("ERROR: volume busy"))
        }
    }

    @Test func countsRequestsPerRoute() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn)
            for _ in 0..<3 { _ = try await backend.status(ImageRef(id: "2"), logger: quiet) }
            _ = try await backend.list(target: "101", logger: quiet)
            #expect(
                standIn.requestCounts == [
                    .getImage: 3, .getSite: 1, .listServers: 1, .listImages: 1,
                ])
            #expect(standIn.requestCount(.getImage) == 3)
            #expect(standIn.requestTotal == 6)
            #expect(TWCCStandIn.Route(method: .PUT, path: "images/555/save/") == .saveImage)
            standIn.resetRequestCounts()
            #expect(standIn.requestTotal == 0 && standIn.requests.isEmpty)
        }
    }

    @Test func requestsAreCountedButNotKeptWhenAskedNotTo() async throws {
        let standIn = TWCCStandIn(keepsRequests: false)
        try await standIn.start()
        let backend = try makeBackend(standIn)
        _ = try await backend.status(ImageRef(id: "2"), logger: quiet)
        #expect(standIn.requestCount(.getImage) == 1)
        #expect(standIn.requests.isEmpty)
        await standIn.stop()
    }

    @Test func addedSitesCanBeImagedAndARebuiltSiteGetsANewServer() async throws {
        try await withStandIn { standIn in
            let site = standIn.addSite(name: "extra")
            let backend = try makeBackend(standIn)
            let image = try await backend.create(target: "extra", name: "snapcron-x", description: "", logger: quiet)
            #expect(standIn.images[Int(image.id)!]?.serverID == site.serverID)
            let server = try #require(standIn.replaceServer(ofSite: site.id))
            #expect(server != site.serverID)
            let again = try await makeBackend(standIn).create(
                target: String(site.id), name: "snapcron-y", description: "", logger: quiet)
            #expect(standIn.images[Int(again.id)!]?.serverID == server)
        }
    }
}

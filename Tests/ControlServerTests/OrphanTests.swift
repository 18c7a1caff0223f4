import ControlProtocol
import Foundation
import SnapcronDaemon
import SnapcronStore
import Testing

/// `orphans` and `prune_orphans`: images of targets no job images now, in-process and over a real socket.
@Suite(.serialized) struct OrphanTests {
    static let before = """
        0 0 1 1 *   old    fake:vm-a   keep=5
        0 0 1 1 *   gone   fake:vm-g

        """
    /// `old` now images vm-b; `gone` left the schedule.
    static let after = """
        0 0 1 1 *   old    fake:vm-b   keep=5

        """

    /// A harness whose `old` made three images of vm-a (the middle one pinned) and `gone` one of vm-g, before the
    /// schedule moved `old` to vm-b and dropped `gone`. Returns the ids of `old`'s images, oldest first, and `gone`'s.
    private func withOrphans(
        _ transport: Transport, _ body: (Harness, _ old: [String], _ gone: String) async throws -> Void
    ) async throws {
        let h = try Harness(schedule: Self.before)
        if transport == .socket { try await h.listen() }
        await h.startScheduler()
        do {
            var ids: [String] = []
            for (job, second) in [("old", 0), ("old", 10), ("old", 20), ("gone", 30)] {
                await h.advance(to: Harness.start.addingTimeInterval(Double(second)))
                let run = try await h.call(.trigger, JobParams(job: job), as: TriggerResult.self, via: transport)
                // Polls of one backend come at most every 5 s: step through them until the image is active.
                for step in 1...9 {
                    await h.advance(to: Harness.start.addingTimeInterval(Double(second + step)))
                }
                let record = try #require(try h.store.run(id: run.runId))
                #expect(record.state == .succeeded, "\(record)")
                ids.append(try #require(record.imageID))
            }
            _ = try await h.call(.pin, PinParams(image: ids[1]), as: ImageInfo.self, via: transport)
            try Self.after.write(toFile: h.schedulePath, atomically: true, encoding: .utf8)
            _ = try await h.call(.reload, NoParams(), as: ReloadResult.self, via: transport)
            try await body(h, Array(ids.prefix(3)), ids[3])
        } catch {
            await h.stop()
            throw error
        }
        await h.stop()
    }

    @Test(arguments: Transport.allCases)
    func aRepointedOrRemovedJobLeavesOrphansListedWithTheReason(_ transport: Transport) async throws {
        try await withOrphans(transport) { h, old, gone in
            let result = try await h.call(.orphans, NoParams(), as: OrphansResult.self, via: transport)
            #expect(Set(result.images.map(\.id)) == Set(old + [gone]))
            for image in result.images where image.job == "old" {
                #expect(image.backend == "fake" && image.target == "vm-a" && image.state == "active")
                #expect(image.reason == "job old now images fake:vm-b")
                #expect(image.pinned == (image.id == old[1]))
                #expect(!image.name.isEmpty)
            }
            let orphan = try #require(result.images.first { $0.job == "gone" })
            #expect(orphan.target == "vm-g" && orphan.reason == "no job gone in the schedule")
            // Retention of the re-pointed job leaves them alone.
            let plan = try await h.call(
                .prune, PruneParams(job: "old", dryRun: true), as: PruneResult.self, via: transport)
            #expect(plan.decisions.isEmpty)
        }
    }

    @Test(arguments: Transport.allCases)
    func pruneOrphansDeletesAllButTheNewestActiveOfEachOldTargetAndNoPinnedOne(_ transport: Transport) async throws {
        try await withOrphans(transport) { h, old, gone in
            let planned = try await h.call(
                .pruneOrphans, PruneOrphansParams(dryRun: true), as: PruneOrphansResult.self, via: transport)
            #expect(planned.dryRun)
            #expect(planned.images.map(\.id) == [old[0]], "newest (\(old[2])) and pinned (\(old[1])) stay")
            let first = try #require(planned.images.first)
            #expect(first.action == "delete" && first.state == "active" && first.job == "old" && first.target == "vm-a")
            #expect(first.reason == "job old now images fake:vm-b")
            #expect(try h.store.images(job: "old").filter { $0.state == .active }.count == 3, "a dry run deletes nothing")
            #expect(await h.backend.images.contains { $0.ref.id == old[0] })

            let deleted = try await h.call(
                .pruneOrphans, PruneOrphansParams(), as: PruneOrphansResult.self, via: transport)
            #expect(!deleted.dryRun)
            #expect(deleted.images.map(\.id) == [old[0]])
            #expect(deleted.images.map(\.state) == ["deleted"])
            #expect(try h.store.image(id: old[0], backend: "fake")?.state == .deleted)
            for id in [old[1], old[2], gone] {
                #expect(try h.store.image(id: id, backend: "fake")?.state == .active, "\(id)")
            }
            #expect(await !h.backend.images.contains { $0.ref.id == old[0] })

            let left = try await h.call(.orphans, NoParams(), as: OrphansResult.self, via: transport)
            #expect(Set(left.images.map(\.id)) == [old[1], old[2], gone])
            let again = try await h.call(
                .pruneOrphans, PruneOrphansParams(), as: PruneOrphansResult.self, via: transport)
            #expect(again.images.isEmpty)
        }
    }

    @Test func strangersMayListOrphansAndDryRunButNotPruneThem() async throws {
        try await withOrphans(.inProcess) { h, old, _ in
            let listed = try await h.call(
                .orphans, NoParams(), as: OrphansResult.self, via: .inProcess, peer: .nobody)
            #expect(listed.images.count == 4)
            let planned = try await h.call(
                .pruneOrphans, PruneOrphansParams(dryRun: true), as: PruneOrphansResult.self, via: .inProcess,
                peer: .nobody)
            #expect(planned.images.map(\.id) == [old[0]])
            for params in [PruneOrphansParams(), PruneOrphansParams(dryRun: false)] {
                do {
                    _ = try await h.call(
                        .pruneOrphans, params, as: PruneOrphansResult.self, via: .inProcess, peer: .nobody)
                    Issue.record("prune_orphans was allowed to nobody")
                } catch let error as RPCError {
                    #expect(error.code == .notPermitted)
                    #expect(error.message.contains("prune_orphans changes state: only root"), "\(error.message)")
                    #expect(error.message.contains("uid 65534"))
                }
            }
            #expect(try h.store.image(id: old[0], backend: "fake")?.state == .active)
        }
    }

    @Test func snapcronctlListsAndPrunesOrphans() async throws {
        try await withOrphans(.socket) { h, old, _ in
            let binary = try Executables.path("snapcronctl")
            func ctl(_ arguments: [String]) async throws -> (status: Int32, stdout: String, stderr: String) {
                try await blocking { try Executables.run(binary, arguments + ["--socket", h.socketPath]) }
            }
            let listed = try await ctl(["images", "--orphaned"])
            #expect(listed.status == 0, "\(listed.stderr)")
            #expect(listed.stdout.contains("REASON") && listed.stdout.contains("fake:vm-a"))
            #expect(listed.stdout.contains("job old now images fake:vm-b"))
            #expect(listed.stdout.contains("no job gone in the schedule"))
            let json = try await ctl(["images", "--orphaned", "--json"])
            let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
            #expect((object?["images"] as? [Any])?.count == 4, "\(json.stdout)")

            let plan = try await ctl(["prune", "--orphaned", "--dry-run"])
            #expect(plan.status == 0, "\(plan.stderr)")
            #expect(plan.stdout.contains(old[0]) && plan.stdout.contains("would delete 1 orphaned image"))
            #expect(try h.store.image(id: old[0], backend: "fake")?.state == .active)
            let pruned = try await ctl(["prune", "--orphaned"])
            #expect(pruned.status == 0, "\(pruned.stderr)")
            #expect(pruned.stdout.contains("deleted 1 of 1 orphaned image"), "\(pruned.stdout)")
            #expect(try h.store.image(id: old[0], backend: "fake")?.state == .deleted)
        }
    }
}

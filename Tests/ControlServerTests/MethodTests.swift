import ControlProtocol
import Foundation
import NIOCore
import SnapcronCore
import SnapcronDaemon
import SnapcronStore
import Testing

/// Every method, in-process and over a real socket: the same test body for both.
@Suite(.serialized) struct MethodTests {
    @Test func jobsAnswersShareOneEncodedBodyUntilSomethingChanges() async throws {
        try await Harness.with(.inProcess) { h in
            func body(_ id: Int) async throws -> (address: UInt, text: String, line: String) {
                let line = Array("{\"jsonrpc\":\"2.0\",\"id\":\(id),\"method\":\"jobs\"}".utf8)
                let response = try #require(await h.service.response(to: line, peer: .root))
                #expect(response.parts.count == 3)
                let address = response.parts[1].withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
                return (address, String(buffer: response.parts[1]), String(decoding: response.data, as: UTF8.self))
            }
            let first = try await body(1)
            let second = try await body(2)
            #expect(first.address == second.address, "the cached body is written again, not copied")
            #expect(first.text == second.text)
            #expect(first.line.hasPrefix("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"jobs\":["))
            #expect(second.line.hasPrefix("{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":"))
            #expect(first.line.hasSuffix("]}}\n"))

            _ = try await h.call(.pause, JobParams(job: "web"), as: PauseResult.self, via: .inProcess)
            let paused = try await body(3)
            #expect(paused.text != first.text, "a pause is seen at once")
            #expect(paused.text.contains("\"paused\":true"))
        }
    }

    @Test(arguments: Transport.allCases)
    func statusJobsAndNextDescribeTheSchedule(_ transport: Transport) async throws {
        try await Harness.with(transport) { h in
            let status = try await h.call(.status, NoParams(), as: StatusResult.self, via: transport)
            #expect(status.version == SnapcronVersion.current)
            #expect(status.jobs == 3)
            #expect(status.nextFire == NextFireInfo(job: "web", at: Harness.start.addingTimeInterval(40)))
            #expect(status.store.ok)
            #expect(status.running.isEmpty && status.lastFailure == nil)
            #expect(status.schedulePath == h.schedulePath)

            let jobs = try await h.call(.jobs, NoParams(), as: JobsResult.self, via: transport).jobs
            #expect(jobs.map(\.name) == ["db", "lab", "web"])
            let web = try #require(jobs.last)
            #expect(web.expression == "* * * * *" && web.target == "vm-web" && web.backend == "fake")
            #expect(web.options == "keep=2" && web.line == 1 && !web.paused)
            #expect(web.nextFire == Harness.start.addingTimeInterval(40))

            let next = try await h.call(.next, NextParams(job: "lab", count: 2), as: NextResult.self, via: transport)
            #expect(next.fires == [Harness.start.addingTimeInterval(100), Harness.start.addingTimeInterval(400)])
            let expression = try await h.call(
                .next, NextParams(expression: "0 9 * * mon", zone: "Asia/Taipei", count: 1), as: NextResult.self,
                via: transport)
            #expect(expression.normalized == "0 9 * * 1" && expression.zone == "Asia/Taipei")
            #expect(expression.fires.count == 1)

            let job = try await h.call(.job, JobParams(job: "db"), as: JobDetailResult.self, via: transport)
            #expect(job.job.name == "db" && job.recentRuns.isEmpty && job.images == 0 && job.lastFire == nil)
        }
    }

    @Test(arguments: Transport.allCases)
    func triggerRunsAJobAndHistoryImagesAndRunShowIt(_ transport: Transport) async throws {
        try await Harness.with(transport) { h in
            let trigger = try await h.call(.trigger, JobParams(job: "web"), as: TriggerResult.self, via: transport)
            #expect(trigger.job == "web" && trigger.state == "claimed")
            await h.scheduler.waitUntilIdle()
            await h.advance(to: Harness.start.addingTimeInterval(2))
            let run = try await h.call(.run, RunParams(id: trigger.runId), as: RunInfo.self, via: transport)
            #expect(run.state == "succeeded" && run.imageState == "active" && run.trigger == "manual")

            let history = try await h.call(.history, HistoryParams(job: "web"), as: HistoryResult.self, via: transport)
            #expect(history.runs.map(\.id) == [trigger.runId])
            #expect(history.runs.first?.hooks == nil, "hook results only when verbose")
            try h.store.recordHookResult(
                HookRecord(
                    runID: trigger.runId, phase: .pre, hookSet: "freeze", result: "exit 0", exitStatus: 0, durationMs: 120,
                    finishedAt: Harness.start))
            let verbose = try await h.call(
                .history, HistoryParams(job: "web", verbose: true), as: HistoryResult.self, via: transport)
            #expect(
                verbose.runs.first?.hooks == [
                    HookInfo(
                        phase: "pre", hookSet: "freeze", result: "exit 0", exitStatus: 0, durationMs: 120,
                        finishedAt: Harness.start)
                ])
            let filtered = try await h.call(
                .history, HistoryParams(state: "failed", since: Harness.start, limit: 5), as: HistoryResult.self,
                via: transport)
            #expect(filtered.runs.isEmpty)

            let images = try await h.call(.images, JobParams(job: "web"), as: ImagesResult.self, via: transport)
            let image = try #require(images.images.first)
            #expect(image.id == run.imageId && image.state == "active" && !image.pinned)
            #expect(image.sizeBytes == 1 << 30, "the size the backend lists, recorded when the image became active")
            #expect(image.keptBy?.contains("newest") == true)

            let detail = try await h.call(.job, JobParams(job: "web"), as: JobDetailResult.self, via: transport)
            #expect(detail.images == 1 && detail.newestActive?.id == image.id && detail.recentRuns.count == 1)

            let fresh = try await h.call(.freshness, NoParams(), as: FreshnessResult.self, via: transport)
            let web = try #require(fresh.jobs.first { $0.job == "web" })
            #expect(web.newestActive != nil && web.periodSeconds == 60)
        }
    }

    @Test(arguments: Transport.allCases)
    func pauseAndResumeArePersisted(_ transport: Transport) async throws {
        try await Harness.with(transport) { h in
            let paused = try await h.call(.pause, JobParams(job: "web"), as: PauseResult.self, via: transport)
            #expect(paused == PauseResult(job: "web", paused: true))
            #expect(try h.store.jobState(name: "web")?.paused == true)
            let jobs = try await h.call(.jobs, NoParams(), as: JobsResult.self, via: transport).jobs
            #expect(jobs.first { $0.name == "web" }?.paused == true)
            let status = try await h.call(.status, NoParams(), as: StatusResult.self, via: transport)
            #expect(status.pausedJobs == ["web"])

            // A paused job's fire is skipped.
            await h.advance(to: Harness.start.addingTimeInterval(41))
            #expect(try h.store.runs(job: "web").first?.state == .skipped)
            // The cached answer moved on with the fire: only web's next fire changed.
            let moved = try await h.call(.jobs, NoParams(), as: JobsResult.self, via: transport).jobs
            #expect(moved.first { $0.name == "web" }?.nextFire == Harness.start.addingTimeInterval(100))
            #expect(moved.first { $0.name == "lab" }?.nextFire == Harness.start.addingTimeInterval(100))
            #expect(moved.first { $0.name == "db" }?.nextFire == jobs.first { $0.name == "db" }?.nextFire)

            _ = try await h.call(.resume, JobParams(job: "web"), as: PauseResult.self, via: transport)
            #expect(try h.store.jobState(name: "web")?.paused == false)
            let after = try await h.call(.jobs, NoParams(), as: JobsResult.self, via: transport).jobs
            #expect(after.first { $0.name == "web" }?.paused == false)
        }
    }

    @Test(arguments: Transport.allCases)
    func pinProtectsAnImageFromPrune(_ transport: Transport) async throws {
        try await Harness.with(transport) { h in
            var ids: [String] = []
            // 6 s apart: one backend's poll passes are at least 5 s apart.
            for second in [0, 6, 12] {
                let run = try await h.call(.trigger, JobParams(job: "web"), as: TriggerResult.self, via: transport)
                await h.advance(to: Harness.start.addingTimeInterval(Double(second + 1)))
                await h.advance(to: Harness.start.addingTimeInterval(Double(second + 2)))
                ids.append(try #require(try h.store.run(id: run.runId)?.imageID))
            }
            // Retention ran after each success: keep=2 deleted the oldest.
            #expect(try h.store.images(job: "web").map(\.id) == [ids[2], ids[1]])
            let gone = try await h.send(
                #"{"jsonrpc":"2.0","id":5,"method":"pin","params":{"image":"\#(ids[0])"}}"#, via: transport)
            #expect(gone?.contains(#""code":-32003"#) == true && gone?.contains("was deleted") == true, "\(gone ?? "")")

            // history's filters, each with something to find.
            let since = try await h.call(
                .history, HistoryParams(job: "web", since: Harness.start.addingTimeInterval(2)), as: HistoryResult.self,
                via: transport)
            #expect(since.runs.map(\.imageId) == [ids[2], ids[1]])
            let succeeded = try await h.call(
                .history, HistoryParams(state: "succeeded", limit: 1), as: HistoryResult.self, via: transport)
            #expect(succeeded.runs.map(\.imageId) == [ids[2]])
            let oldest = ids[1]
            let pinned = try await h.call(.pin, PinParams(image: oldest), as: ImageInfo.self, via: transport)
            #expect(pinned.pinned && pinned.job == "web")

            let plan = try await h.call(
                .prune, PruneParams(job: "web", dryRun: true), as: PruneResult.self, via: transport)
            #expect(plan.dryRun && plan.policy == "keep=2" && plan.deleting.isEmpty)
            #expect(plan.decisions.allSatisfy { $0.action == "keep" && !$0.reasons.isEmpty })
            #expect(plan.decisions.first { $0.id == oldest }?.reasons.contains { $0.contains("pinned") } == true)

            _ = try await h.call(.unpin, PinParams(image: oldest, job: "web"), as: ImageInfo.self, via: transport)
            let pruned = try await h.call(.prune, PruneParams(job: "web"), as: PruneResult.self, via: transport)
            #expect(!pruned.dryRun && pruned.deleting.isEmpty)  // keep=2 and two images: nothing to delete
        }
    }

    @Test(arguments: Transport.allCases)
    func reloadAppliesAValidScheduleAndRefusesABrokenOne(_ transport: Transport) async throws {
        try await Harness.with(transport) { h in
            try (Harness.schedule + "@daily   extra   fake:vm-extra\n").write(
                toFile: h.schedulePath, atomically: true, encoding: .utf8)
            let reload = try await h.call(.reload, NoParams(), as: ReloadResult.self, via: transport)
            #expect(reload.jobs == 4)
            #expect(try await h.call(.jobs, NoParams(), as: JobsResult.self, via: transport).jobs.count == 4)

            try "* * * * *  web  fake:vm-web  keep=2\n0 25 * * *  bad  fake:vm-bad\n".write(
                toFile: h.schedulePath, atomically: true, encoding: .utf8)
            do {
                _ = try await h.call(.reload, NoParams(), as: ReloadResult.self, via: transport)
                Issue.record("a broken schedule was accepted")
            } catch let error as RPCError {
                #expect(error.code == .invalidSchedule)
                #expect(error.message.contains("the running schedule stays"))
                let diagnostic = try #require(error.data?.diagnostics?.first)
                #expect(diagnostic.line == 2 && diagnostic.column == 3 && diagnostic.severity == "error")
                #expect(diagnostic.message.contains("hour"))
                #expect(diagnostic.rendered.contains("^"))
            }
            let status = try await h.call(.status, NoParams(), as: StatusResult.self, via: transport)
            #expect(status.jobs == 4)  // the old schedule is still live
        }
    }

    @Test(arguments: Transport.allCases)
    func checkValidatesTextWithoutApplyingIt(_ transport: Transport) async throws {
        try await Harness.with(transport) { h in
            let good = try await h.call(
                .check, CheckParams(text: "@hourly  one  fake:vm-1\n"), as: CheckResult.self, via: transport)
            #expect(good.valid && good.jobs == 1 && good.errors.isEmpty)
            let bad = try await h.call(
                .check, CheckParams(text: "@hourly  one  nowhere:vm-1\n61 * * * * two fake:x\n", file: "mine"),
                as: CheckResult.self, via: transport)
            #expect(!bad.valid)
            #expect(bad.errors.filter { $0.severity == "error" }.map(\.line) == [1, 2])
            #expect(bad.errors.allSatisfy { $0.file == "mine" })
            #expect(try await h.call(.status, NoParams(), as: StatusResult.self, via: transport).jobs == 3)
        }
    }
}

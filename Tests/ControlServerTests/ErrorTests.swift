import ControlProtocol
import Foundation
import SnapcronDaemon
import Testing

/// Every error path, in-process and over a real socket.
@Suite(.serialized) struct ErrorTests {
    private func error(_ line: String, _ h: Harness, _ transport: Transport, peer: PeerCredentials? = .root)
        async throws -> (RequestID, RPCError)
    {
        let answer = try #require(try await h.send(line, via: transport, peer: peer))
        let response = try ControlCoding.decoder.decode(RPCResponse<JSONValue>.self, from: Data(answer.utf8))
        return (response.id, try #require(response.error, "no error for \(line): \(answer)"))
    }

    @Test(arguments: Transport.allCases)
    func badRequestsGetTheirJSONRPCError(_ transport: Transport) async throws {
        try await Harness.with(transport) { h in
            let cases: [(String, RPCErrorCode, String)] = [
                ("{\"jsonrpc\":\"2.0\",", .parseError, "not valid JSON"),
                ("\u{7f}ELF\u{02}\u{01}\u{01}", .parseError, "not valid JSON"),
                ("[1,2]", .invalidRequest, "batch"),
                (#"{"jsonrpc":"2.0","id":4,"method":"shutdown"}"#, .methodNotFound, "unknown method 'shutdown'"),
                (
                    #"{"jsonrpc":"2.0","id":4,"method":"trigger","params":{"job":true}}"#, .invalidParams,
                    "'job' must be a string"
                ),
                (
                    #"{"jsonrpc":"2.0","id":4,"method":"history","params":{"limit":0}}"#, .invalidParams,
                    "limit must be 1-10000"
                ),
                (
                    #"{"jsonrpc":"2.0","id":4,"method":"history","params":{"limit":1e20}}"#, .invalidParams,
                    "history: parameter 'limit' must be an integer (got 1e+20)"
                ),
                (
                    #"{"jsonrpc":"2.0","id":4,"method":"next","params":{"job":"web","count":1.5}}"#, .invalidParams,
                    "next: parameter 'count' must be an integer (got 1.5)"
                ),
                (
                    #"{"jsonrpc":"2.0","id":4,"method":"history","params":{"since":"yesterday"}}"#, .invalidParams,
                    "history: parameter 'since' must be an RFC 3339 time such as 2026-11-29T09:00:00Z"
                ),
                (
                    #"{"jsonrpc":"2.0","id":4,"method":"history","params":{"state":"exploded"}}"#, .invalidParams,
                    "unknown state"
                ),
                (
                    #"{"jsonrpc":"2.0","id":4,"method":"next","params":{}}"#, .invalidParams,
                    "exactly one of job and expression"
                ),
                (
                    #"{"jsonrpc":"2.0","id":4,"method":"next","params":{"expression":"0 0 * * 8"}}"#, .invalidParams,
                    "column 9"
                ),
                (
                    #"{"jsonrpc":"2.0","id":4,"method":"status","params":{"verbose":true}}"#, .invalidParams,
                    "unknown parameter"
                ),
                (
                    #"{"jsonrpc":"2.0","id":4,"method":"trigger","params":{"job":"wbe"}}"#, .notFound,
                    "did you mean 'web'?"
                ),
                (
                    #"{"jsonrpc":"2.0","id":4,"method":"images","params":{"job":"nope"}}"#, .notFound,
                    "no job named 'nope'"
                ),
                (#"{"jsonrpc":"2.0","id":4,"method":"run","params":{"id":999}}"#, .notFound, "no run with id 999"),
                (#"{"jsonrpc":"2.0","id":4,"method":"pin","params":{"image":"img-x"}}"#, .notFound, "no image 'img-x'"),
                (#"{"jsonrpc":"2.0","id":4,"method":"pause","params":{"job":"nope"}}"#, .notFound, "no job"),
                (
                    #"{"jsonrpc":"2.0","id":4,"method":"prune","params":{"job":"nope","dry_run":true}}"#, .notFound,
                    "no job"
                ),
            ]
            for (line, code, message) in cases {
                let (_, error) = try await error(line, h, transport)
                #expect(error.code == code, "\(line)")
                #expect(error.message.contains(message), "\(line): \(error.message)")
            }
        }
    }

    @Test(arguments: Transport.allCases)
    func errorsKeepTheRequestID(_ transport: Transport) async throws {
        try await Harness.with(transport) { h in
            let (id, _) = try await error(#"{"jsonrpc":"2.0","id":"abc","method":"nope"}"#, h, transport)
            #expect(id == .string("abc"))
            let (unknown, _) = try await error("garbage", h, transport)
            #expect(unknown == .null)
        }
    }

    @Test func aNotificationIsCarriedOutButNotAnswered() async throws {
        try await Harness.with(.inProcess) { h in
            let answer = try await h.send(
                #"{"jsonrpc":"2.0","method":"pause","params":{"job":"web"}}"#, via: .inProcess)
            #expect(answer == nil)
            #expect(try h.store.jobState(name: "web")?.paused == true)
        }
    }

    @Test(arguments: Transport.allCases)
    func triggeringABusyTargetIsAConflict(_ transport: Transport) async throws {
        let h = try Harness(behavior: .queuedForever)
        if transport == .socket { try await h.listen() }
        await h.startScheduler()
        _ = try await h.call(.trigger, JobParams(job: "web"), as: TriggerResult.self, via: transport)
        await h.advance(to: Harness.start.addingTimeInterval(1))
        let (_, error) = try await error(
            #"{"jsonrpc":"2.0","id":1,"method":"trigger","params":{"job":"web"}}"#, h, transport)
        #expect(error.code == .conflict)
        #expect(error.message.contains("still unfinished"))
        let status = try await h.call(.status, NoParams(), as: StatusResult.self, via: transport)
        #expect(status.running.count == 1 && status.running.first?.job == "web")
        await h.stop()
    }

    @Test func strangersMayReadButNotChange() async throws {
        try await Harness.with(.inProcess) { h in
            _ = try await h.call(.status, NoParams(), as: StatusResult.self, via: .inProcess, peer: .nobody)
            _ = try await h.call(.jobs, NoParams(), as: JobsResult.self, via: .inProcess, peer: .nobody)
            _ = try await h.call(
                .prune, PruneParams(job: "web", dryRun: true), as: PruneResult.self, via: .inProcess, peer: .nobody)
            for line in [
                #"{"jsonrpc":"2.0","id":1,"method":"trigger","params":{"job":"web"}}"#,
                #"{"jsonrpc":"2.0","id":1,"method":"pause","params":{"job":"web"}}"#,
                #"{"jsonrpc":"2.0","id":1,"method":"prune","params":{"job":"web"}}"#,
                #"{"jsonrpc":"2.0","id":1,"method":"reload"}"#,
                #"{"jsonrpc":"2.0","id":1,"method":"pin","params":{"image":"x"}}"#,
            ] {
                let (_, error) = try await error(line, h, .inProcess, peer: .nobody)
                #expect(error.code == .notPermitted)
                #expect(error.message.contains("only root, snapcrond's user and members of group 'root'"))
                #expect(error.message.contains("uid 65534"))
            }
            let (_, unknown) = try await error(
                #"{"jsonrpc":"2.0","id":1,"method":"trigger","params":{"job":"web"}}"#, h, .inProcess, peer: nil)
            #expect(unknown.code == .notPermitted)
            #expect(try h.store.runs().isEmpty)
            #expect(try h.store.jobState(name: "web")?.paused != true)
        }
    }

    @Test(arguments: Transport.allCases)
    func aFailingStoreIsAnInternalErrorThatSaysSo(_ transport: Transport) async throws {
        let h = try Harness()
        if transport == .socket { try await h.listen() }
        try h.store.close()
        for line in [
            #"{"jsonrpc":"2.0","id":1,"method":"history","params":{"job":"web"}}"#,
            #"{"jsonrpc":"2.0","id":1,"method":"images","params":{"job":"web"}}"#,
        ] {
            let (id, failure) = try await error(line, h, transport)
            #expect(id == .number(1))
            #expect(failure.code == .internalError)
            #expect(failure.message.hasPrefix("the state database failed:"), "\(failure.message)")
        }
        await h.stop()
    }

    @Test func aJobPausedByItsScheduleLineCannotBeResumedFromTheSocket() async throws {
        let h = try Harness(schedule: Harness.schedule + "0 4 * * *     held  fake:vm-held  paused=yes\n")
        await h.startScheduler()
        let (_, refused) = try await error(
            #"{"jsonrpc":"2.0","id":1,"method":"resume","params":{"job":"held"}}"#, h, .inProcess)
        #expect(refused.code == .conflict)
        #expect(refused.message.contains("paused by its schedule line (paused=yes at \(h.schedulePath):4)"))
        #expect(refused.message.contains("remove that option and reload"))
        #expect(h.scheduler.pausedJobs == ["held"])
        // Pausing it again is harmless.
        _ = try await h.call(.pause, JobParams(job: "held"), as: PauseResult.self, via: .inProcess)
        await h.stop()
    }

    @Test func membersOfTheSocketGroupMayChange() async throws {
        let h = try Harness(access: ControlAccess(ownUID: 0, groupID: 65534, groupName: "nogroup"))
        await h.startScheduler()
        let result = try await h.call(
            .pause, JobParams(job: "web"), as: PauseResult.self, via: .inProcess, peer: .nobody)
        #expect(result.paused)
        let other = PeerCredentials(pid: 3, uid: 4242, gid: 4242)
        let refused = await h.service.respond(
            to: Array(#"{"jsonrpc":"2.0","id":1,"method":"resume","params":{"job":"web"}}"#.utf8), peer: other)
        #expect(String(decoding: try #require(refused), as: UTF8.self).contains("-32001"))
        await h.stop()
    }
}

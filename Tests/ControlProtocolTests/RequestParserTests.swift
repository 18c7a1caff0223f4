import ControlProtocol
import Foundation
import Testing

@Suite struct RequestParserTests {
    private func failure(_ line: String) -> RequestParser.Failure? {
        if case .failure(let failure) = RequestParser.parse(Array(line.utf8)) { return failure }
        return nil
    }

    private func request(_ line: String) throws -> ParsedRequest {
        switch RequestParser.parse(Array(line.utf8)) {
        case .success(let request): return request
        case .failure(let failure): throw failure.error
        }
    }

    @Test func parsesARequestWithNumberOrStringID() throws {
        let numbered = try request(#"{"jsonrpc":"2.0","id":7,"method":"trigger","params":{"job":"web"}}"#)
        #expect(numbered.id == .number(7))
        #expect(numbered.method == .trigger)
        #expect(try numbered.decodeParams(JobParams.self) == JobParams(job: "web"))
        let named = try request(#"{"jsonrpc":"2.0","id":"a-1","method":"status"}"#)
        #expect(named.id == .string("a-1"))
        #expect(try named.decodeParams(NoParams.self) == NoParams())
    }

    @Test func aRequestWithoutIDIsANotification() throws {
        #expect(try request(#"{"jsonrpc":"2.0","method":"status"}"#).id == nil)
    }

    @Test(arguments: [
        ("{not json", RPCErrorCode.parseError),
        ("\u{00}\u{01}\u{fe}garbage", .parseError),
        ("", .parseError),
        ("[]", .invalidRequest),
        (#"[{"jsonrpc":"2.0","id":1,"method":"status"}]"#, .invalidRequest),
        ("42", .invalidRequest),
        (#"{"id":1,"method":"status"}"#, .invalidRequest),
        (#"{"jsonrpc":"1.0","id":1,"method":"status"}"#, .invalidRequest),
        (#"{"jsonrpc":"2.0","id":{},"method":"status"}"#, .invalidRequest),
        (#"{"jsonrpc":"2.0","id":1.5,"method":"status"}"#, .invalidRequest),
        (#"{"jsonrpc":"2.0","id":1,"method":7}"#, .invalidRequest),
        (#"{"jsonrpc":"2.0","id":1,"method":"explode"}"#, .methodNotFound),
    ])
    func refusesBadEnvelopes(_ line: String, _ code: RPCErrorCode) {
        #expect(failure(line)?.error.code == code, "\(line)")
    }

    @Test func answersEnvelopeErrorsWithTheRequestIDWhenKnown() {
        #expect(failure(#"{"jsonrpc":"2.0","id":9,"method":"explode"}"#)?.id == .number(9))
        #expect(failure("{oops")?.id == RequestID.null)
    }

    /// The parameter type of each method these tests call.
    private static let parameterTypes: [ControlMethod: any ControlParams.Type] = [
        .trigger: JobParams.self, .next: NextParams.self, .history: HistoryParams.self, .run: RunParams.self,
        .pin: PinParams.self, .check: CheckParams.self, .prune: PruneParams.self,
        .pruneOrphans: PruneOrphansParams.self,
    ]

    /// The `invalidParams` message for `params` of `method`, or nil when they decode.
    private func paramsError(_ method: ControlMethod, _ params: String) throws -> String? {
        let parsed = try request(#"{"jsonrpc":"2.0","id":1,"method":"\#(method.rawValue)","params":\#(params)}"#)
        let type = try #require(Self.parameterTypes[method])
        do {
            _ = try parsed.decodeParams(type)
            return nil
        } catch {
            #expect(error.code == .invalidParams)
            return error.message
        }
    }

    @Test(arguments: [
        (ControlMethod.trigger, #"{"job":5}"#, "trigger: parameter 'job' must be a string (got 5)"),
        (.trigger, "{}", "trigger: missing parameter 'job'"),
        (.trigger, #"{"job":null}"#, "trigger: parameter 'job' must be a string"),
        (.trigger, #"{"jbo":"web"}"#, "unknown parameter 'jbo' for trigger (expected: job)"),
        (.trigger, "[1]", "params of trigger must be an object, not an array"),
        (.history, #"{"limit":"ten"}"#, #"history: parameter 'limit' must be an integer (got "ten")"#),
        (.history, #"{"limit":1e20}"#, "history: parameter 'limit' must be an integer (got 1e+20)"),
        (.history, #"{"limit":-1e300}"#, "history: parameter 'limit' must be an integer (got -1e+300)"),
        (.next, #"{"count":1.5}"#, "next: parameter 'count' must be an integer (got 1.5)"),
        (.run, #"{"id":"7"}"#, #"run: parameter 'id' must be an integer (got "7")"#),
        (
            .history, #"{"since":"yesterday"}"#,
            #"history: parameter 'since' must be an RFC 3339 time such as 2026-11-29T09:00:00Z (got "yesterday")"#
        ),
        (
            .history, #"{"since":1795942800}"#,
            "history: parameter 'since' must be an RFC 3339 time such as 2026-11-29T09:00:00Z (got 1795942800)"
        ),
        (
            .check, #"{"text":["0 3 * * * web local:/a","0 4 * * * db local:/b"]}"#,
            #"check: parameter 'text' must be a string (got ["0 3 * * * web local:/a","0 4 * * * db…)"#
        ),
        (.prune, #"{"job":"a","dry_run":"yes"}"#, #"prune: parameter 'dry_run' must be a boolean (got "yes")"#),
        (
            .pruneOrphans, #"{"dry_run":1}"#,
            "prune_orphans: parameter 'dry_run' must be a boolean (got 1)"
        ),
        (
            .pruneOrphans, #"{"job":"a"}"#,
            "unknown parameter 'job' for prune_orphans (expected: dry_run)"
        ),
    ])
    func refusesBadParamsWithTheNameAndTheExpectedType(_ method: ControlMethod, _ params: String, _ message: String)
        throws
    {
        let actual = try paramsError(method, params)
        #expect(actual == message, "\(actual ?? "decoded")")
    }

    /// Every member of every method, given a value of each wrong type, is named with its type.
    @Test func everyWrongTypeNamesTheParameterAndItsType() throws {
        let wrongValues: [ParamType: [String]] = [
            .string: ["5", "true", "[1]", #"{"a":1}"#],
            .integer: ["1.5", "1e20", #""7""#, "true", "[]"],
            .boolean: [#""yes""#, "1", "{}"],
            .time: [#""yesterday""#, #""2026-11-29 09:00:00""#, "1795942800", "false"],
        ]
        for (method, type) in Self.parameterTypes {
            for member in type.members {
                for value in try #require(wrongValues[member.type]) {
                    let message = try paramsError(method, #"{"\#(member.name)":\#(value)}"#)
                    let expected = "\(method.rawValue): parameter '\(member.name)' must be \(member.type) (got "
                    #expect(
                        message?.hasPrefix(expected) == true, "\(method) \(member.name)=\(value): \(message ?? "ok")")
                }
            }
        }
    }

    @Test func acceptsTimesWithAnOffsetAndNullForOptionalMembers() throws {
        let parsed = try request(
            #"{"jsonrpc":"2.0","id":1,"method":"history","params":{"since":"2026-11-29T17:00:00+08:00","limit":null}}"#)
        let params = try parsed.decodeParams(HistoryParams.self)
        #expect(params.since == Date(timeIntervalSince1970: 1_795_942_800))
        #expect(params.limit == nil)
    }

    @Test func pruneWithDryRunOnlyReads() throws {
        #expect(
            try request(#"{"jsonrpc":"2.0","id":1,"method":"prune","params":{"job":"a","dry_run":true}}"#).changesState
                == false)
        #expect(try request(#"{"jsonrpc":"2.0","id":1,"method":"prune","params":{"job":"a"}}"#).changesState)
        #expect(try request(#"{"jsonrpc":"2.0","id":1,"method":"status"}"#).changesState == false)
    }

    @Test func pruneOrphansWithDryRunOnlyReadsAndOrphansAlwaysReads() throws {
        let dryRun = #"{"jsonrpc":"2.0","id":1,"method":"prune_orphans","params":{"dry_run":true}}"#
        #expect(try request(dryRun).changesState == false)
        #expect(try request(#"{"jsonrpc":"2.0","id":1,"method":"prune_orphans"}"#).changesState)
        #expect(
            try request(#"{"jsonrpc":"2.0","id":1,"method":"prune_orphans","params":{"dry_run":false}}"#).changesState)
        #expect(try request(#"{"jsonrpc":"2.0","id":1,"method":"orphans"}"#).changesState == false)
        #expect(try request(dryRun).decodeParams(PruneOrphansParams.self) == PruneOrphansParams(dryRun: true))
    }

    @Test func responsesRoundTrip() throws {
        let result = ResponseWriter.result(
            id: .string("x\"y"), encodedResult: try ControlCoding.encoder.encode(PauseResult(job: "web", paused: true)))
        #expect(result.last == UInt8(ascii: "\n"))
        let decoded = try ControlCoding.decoder.decode(RPCResponse<PauseResult>.self, from: result)
        #expect(decoded.id == .string("x\"y"))
        #expect(decoded.result == PauseResult(job: "web", paused: true))
        let error = ResponseWriter.error(id: .number(3), RPCError(.notFound, "no job named 'x'"))
        let decodedError = try ControlCoding.decoder.decode(RPCResponse<PauseResult>.self, from: error)
        #expect(decodedError.error == RPCError(.notFound, "no job named 'x'"))
        #expect(decodedError.result == nil)
    }
}

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

    @Test(arguments: [
        (#"{"jsonrpc":"2.0","id":1,"method":"trigger","params":{"job":5}}"#, "parameter 'job' must be a string"),
        (#"{"jsonrpc":"2.0","id":1,"method":"trigger","params":{}}"#, "missing parameter 'job'"),
        (#"{"jsonrpc":"2.0","id":1,"method":"trigger","params":{"jbo":"web"}}"#, "unknown parameter 'jbo'"),
        (#"{"jsonrpc":"2.0","id":1,"method":"trigger","params":[1]}"#, "must be an object"),
        (#"{"jsonrpc":"2.0","id":1,"method":"history","params":{"limit":"ten"}}"#, "'limit' must be an integer"),
        (#"{"jsonrpc":"2.0","id":1,"method":"history","params":{"since":"yesterday"}}"#, "ISO8601"),
        (
            #"{"jsonrpc":"2.0","id":1,"method":"prune","params":{"job":"a","dry_run":"yes"}}"#,
            "'dry_run' must be a boolean"
        ),
    ])
    func refusesBadParamsWithTheName(_ line: String, _ message: String) throws {
        let parsed = try request(line)
        let parameters: [any ControlParams.Type] = [JobParams.self, HistoryParams.self, PruneParams.self]
        let type = parameters[parsed.method == .trigger ? 0 : parsed.method == .history ? 1 : 2]
        do {
            _ = try parsed.decodeParams(type)
            Issue.record("no error for \(line)")
        } catch {
            #expect(error.code == .invalidParams)
            #expect(error.message.contains(message), "\(error.message)")
        }
    }

    @Test func pruneWithDryRunOnlyReads() throws {
        #expect(
            try request(#"{"jsonrpc":"2.0","id":1,"method":"prune","params":{"job":"a","dry_run":true}}"#).changesState
                == false)
        #expect(try request(#"{"jsonrpc":"2.0","id":1,"method":"prune","params":{"job":"a"}}"#).changesState)
        #expect(try request(#"{"jsonrpc":"2.0","id":1,"method":"status"}"#).changesState == false)
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

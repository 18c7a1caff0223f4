import BackendTypes
import Foundation
import NIOCore
import NIOHTTP1
import SnapcronCore
import SnapshotBackend
import TWCCStandIn
import Testing

@testable import TWCCBackend

/// Defect 11: the API key must reach the API and nothing else, and no reply may hold a call for ever.
@Suite struct KeySafetyTests {
    /// A redirect to another loopback port (standing in for another host) that records what it receives.
    @Test(arguments: [301, 302, 303, 307, 308])
    func aRedirectIsNotFollowedSoTheKeyNeverLeaves(_ status: Int) async throws {
        try await withStandIn { api in
            try await withStandIn { elsewhere in
                let location = "\(elsewhere.baseURL)/api/v3/\(api.platform)/images/2/"
                api.inject(
                    .reply(status, json: "", headers: [("Location", location)]), method: .GET, path: "images/2/",
                    times: 10)
                let backend = try makeBackend(api)
                let error = await backendError { _ = try await backend.status(ImageRef(id: "2"), logger: quiet) }
                #expect(elsewhere.requests.allSatisfy { $0.headers["x-api-key"].isEmpty })
                #expect(elsewhere.requestTotal == 0, "the redirect was followed: \(elsewhere.requests.map(\.uri))")
                #expect(error?.isTransient == false)
                #expect(
                    error?.message
                        == "GET images/2/: HTTP \(status) redirect to \(location) not followed (the API key goes to "
                        + "base_url only)", "\(String(describing: error))")
                #expect(api.requestCount(.getImage) == 1)
            }
        }
    }

    /// A server that sends its head at once and then one byte every 20 ms for ever.
    @Test(.timeLimit(.minutes(1)))
    func aBodyThatTricklesForeverIsCutAtTheRequestTimeout() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(
                standIn, timeout: .milliseconds(300), retry: .init(maxAttempts: 2))
            standIn.inject(.trickle(every: .milliseconds(20)), method: .GET, path: "images/2/", times: 2)
            let clock = ContinuousClock()
            let started = clock.now
            let error = await backendError { _ = try await backend.status(ImageRef(id: "2"), logger: quiet) }
            let elapsed = clock.now - started
            #expect(error?.isTransient == true)
            #expect(
                error?.message == "GET images/2/ timed out after 300 ms, gave up after 2 attempts",
                "\(String(describing: error))")
            #expect(standIn.requestCount(.getImage) == 2)
            // Two attempts of 300 ms each (back-offs are virtual): cut, not held for ever. The bound is loose on
            // purpose: the whole suite runs in parallel on two shared cores (24 s seen there, 0.6 s alone).
            #expect(elapsed < .seconds(45), "took \(elapsed)")
            // The next call is not held up by the cut connections.
            #expect(try await backend.status(ImageRef(id: "2"), logger: quiet) == .active)
        }
    }

    @Test(
        arguments: [
            "http://example.invalid", "http://example.invalid:8080/", "http://10.0.0.1", "http://128.0.0.1",
            "http://127.0.0.1.nip.io", "http://localhost.example", "http://[::2]:80",
            "http://127.0.0.1@example.invalid",
        ])
    func plainHTTPToAnotherHostIsRefusedAtConfigTime(_ url: String) throws {
        #expect {
            try TWCCBackend.Configuration(
                backend: "cloud", settings: ["project_id": ConfigValue.integer(1), "base_url": .string(url)],
                apiKey: try APIKey("k"))
        } throws: { error in
            let error = error as? SnapshotBackendError
            return error?.isTransient == false && error?.operation == .validate
                && error?.message.hasPrefix("setting base_url: '\(url)' ") == true
                && (error?.message.contains("plain http") == true || error?.message.contains("user info") == true)
        }
    }

    @Test(
        arguments: [
            "https://apigateway.twcc.ai", "https://example.invalid:8443", "http://127.0.0.1:8080", "http://127.9.8.7",
            "http://localhost:9000", "http://LOCALHOST", "http://[::1]:8080", "http://[0:0:0:0:0:0:0:1]",
        ])
    func httpsOrLoopbackIsAccepted(_ url: String) throws {
        let configuration = try TWCCBackend.Configuration(
            backend: "cloud", settings: ["project_id": ConfigValue.integer(1), "base_url": .string(url)],
            apiKey: try APIKey("k"))
        #expect(configuration.baseURL.hasPrefix(url.hasSuffix("/") ? String(url.dropLast()) : url))
    }

    @Test func aBackendBuiltInCodeStillRefusesToSendTheKeyOverPlainHTTP() async throws {
        try await withStandIn { standIn in
            let backend = try makeBackend(standIn, baseURL: "http://example.invalid")
            let error = await backendError { _ = try await backend.status(ImageRef(id: "2"), logger: quiet) }
            #expect(error?.isTransient == false)
            #expect(error?.message.hasPrefix("refusing to send the API key: base_url 'http://example.invalid'") == true)
        }
    }
}

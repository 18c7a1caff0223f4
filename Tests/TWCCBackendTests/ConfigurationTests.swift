import BackendTypes
import Foundation
import SnapcronConfig
import SnapcronCore
import SnapshotBackend
import Testing
import TWCCDescriptor

@testable import TWCCBackend

@Suite struct ConfigurationTests {
    @Test func buildsFromTheConfigFilesSettings() throws {
        let config = try SnapcronConfig.parse(
            """
            [backends.cloud]
            type = "twcc"
            project_id = 4242
            requests_per_second = 2.5
            max_requests_in_flight = 3
            request_timeout_seconds = 12
            api_key_credential = "twcc-api-key"
            """, file: "snapcron.toml")
        let settings = try #require(config.backends["cloud"]).settings
        let configuration = try TWCCBackend.Configuration(
            backend: "cloud", settings: settings, apiKey: try APIKey("k"))
        #expect(configuration.baseURL == "https://apigateway.twcc.ai")
        #expect(configuration.platform == "openstack-taichung-default-2")
        #expect(configuration.projectID == 4242)
        #expect(configuration.requestsPerSecond == 2.5)
        #expect(configuration.maxRequestsInFlight == 3)
        #expect(configuration.requestTimeout == .seconds(12))
    }

    @Test(
        arguments: [
            ([:], "setting project_id: missing"),
            (["project_id": ConfigValue.string("42")], "setting project_id: expected an integer greater than 0"),
            (
                ["project_id": .integer(1), "base_url": .string("ftp://x")],
                "setting base_url: expected an http(s) URL, got 'ftp://x'"
            ),
            (
                ["project_id": .integer(1), "base_url": .string("http://example.invalid")],
                "setting base_url: 'http://example.invalid' is plain http, which would send the API key unencrypted; "
                    + "use https:// (http:// is allowed only for loopback hosts: 127.0.0.0/8, ::1, localhost)"
            ),
            (
                ["project_id": .integer(1), "platform": .string("a/b")],
                "setting platform: 'a/b' is not a platform name"
            ),
            (
                ["project_id": .integer(1), "requests_per_second": .integer(0)],
                "setting requests_per_second: expected a number greater than 0"
            ),
        ] as [([String: ConfigValue], String)])
    func rejectsBadSettings(_ settings: [String: ConfigValue], _ message: String) throws {
        #expect {
            try TWCCBackend.Configuration(backend: "cloud", settings: settings, apiKey: try APIKey("k"))
        } throws: { error in
            let error = error as? SnapshotBackendError
            return error?.message == message && error?.isTransient == false
        }
    }

    @Test func trailingSlashOfTheBaseURLIsDropped() throws {
        let configuration = TWCCBackend.Configuration(
            baseURL: "http://127.0.0.1:8080//", projectID: 1, apiKey: try APIKey("k"))
        #expect(configuration.baseURL == "http://127.0.0.1:8080")
    }
}

@Suite struct APIKeyTests {
    func directory() throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("twcc-key-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    func write(_ text: String, to url: URL, mode: Int) throws {
        try text.write(to: url, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: url.path)
    }

    @Test func readsASystemdCredential() throws {
        let dir = try directory()
        try write("0b3c2e1a-5d4f-4e6a-9b8c-7d6e5f4a3b2c\n", to: dir.appendingPathComponent("twcc-api-key"), mode: 0o400)
        let key = try APIKey.load(
            settings: ["api_key_credential": ConfigValue.string("twcc-api-key")],
            environment: ["CREDENTIALS_DIRECTORY": dir.path])
        #expect(key.secret == "0b3c2e1a-5d4f-4e6a-9b8c-7d6e5f4a3b2c")
        #expect("\(key)" == "<api key redacted>")
        #expect(String(reflecting: key) == "<api key redacted>")
    }

    @Test func credentialNeedsCredentialsDirectory() {
        #expect(throws: APIKey.LoadError.self) { try APIKey.load(credential: "twcc-api-key", environment: [:]) }
        #expect(throws: APIKey.LoadError.self) {
            try APIKey.load(credential: "../etc/passwd", environment: ["CREDENTIALS_DIRECTORY": "/tmp"])
        }
    }

    @Test func refusesAWorldReadableKeyFile() throws {
        let file = try directory().appendingPathComponent("key")
        try write("secret-key\n", to: file, mode: 0o644)
        #expect {
            try APIKey.load(file: file.path)
        } throws: { error in
            "\(error)".contains("readable by everyone (mode 0644)") && !"\(error)".contains("secret-key")
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: file.path)
        #expect(try APIKey.load(file: file.path).secret == "secret-key")
    }

    @Test func rejectsKeysThatCannotGoInAHeader() {
        #expect(throws: APIKey.LoadError.self) { try APIKey("  \n") }
        #expect(throws: APIKey.LoadError.self) { try APIKey("abc\r\nX-Evil: 1") }
    }

    @Test func needsExactlyOneSource() {
        #expect(throws: APIKey.LoadError.self) { try APIKey.load(settings: [String: ConfigValue](), environment: [:]) }
        #expect(throws: APIKey.LoadError.self) {
            try APIKey.load(
                settings: ["api_key_credential": ConfigValue.string("a"), "api_key_file": .string("/b")],
                environment: [:])
        }
    }
}

import BackendTypes
import ExecDescriptor
import Foundation
import LocalDescriptor
import SnapcronConfig
import Testing
import TWCCDescriptor

@testable import SnapcronCore

/// A temporary directory for real files with real modes, removed at deinit.
final class TemporaryDirectory {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "snapcron-tests-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func file(_ name: String, _ contents: String, mode: Int) throws -> String {
        let file = path + "/" + name
        try contents.write(toFile: file, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: file)
        return file
    }
}

func configErrors(_ text: String) -> DiagnosticList {
    do {
        _ = try SnapcronConfig.parse(text, file: "snapcron.toml")
        return []
    } catch {
        return error
    }
}

@Suite struct ConfigTests {
    @Test func noFileMeansEmbeddedDefault() throws {
        let config = try SnapcronConfig.loadIfPresent(path: "/nonexistent/snapcron.toml")
        #expect(config == .default())
        #expect(config.file == nil)
        #expect(config.stateDirectory == "/var/lib/snapcron")
        #expect(config.socketPath == "/run/snapcron/control.sock")
        #expect(config.socketGroup == "snapcron")
        #expect(config.maxConcurrentCreates == 4)
        #expect(config.schedulePath == "/etc/snapcron/schedule")
        #expect(config.backends.keys.sorted() == ["local"])
        #expect(config.backends["local"]?.type == .local)
        #expect(config.backends["local"]?.local?.imagesDirectory == "/var/lib/snapcron/images")
        #expect(SnapcronConfig.default(stateDir: "/srv/snap").backends["local"]?.local?.imagesDirectory == "/srv/snap/images")
    }

    @Test func missingFileIsAnErrorForLoad() {
        #expect {
            _ = try SnapcronConfig.load(path: "/nonexistent/snapcron.toml")
        } throws: { error in
            (error as? DiagnosticList)?.first?.description
                == "/nonexistent/snapcron.toml: error: cannot read config: no such file '/nonexistent/snapcron.toml'"
        }
    }

    @Test func parsesShippedExample() throws {
        let example = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("etc/snapcron.toml").path
        let config = try SnapcronConfig.load(path: example)
        #expect(config.file == example)
        #expect(config.stateDirectory == "/var/lib/snapcron")
        #expect(config.socketPath == "/run/snapcron/control.sock")
        #expect(config.maxConcurrentCreates == 4)
        #expect(config.backends.keys.sorted() == ["local"])
        #expect(config.backends["local"]?.maxConcurrent == 2)
        #expect(config.backends["local"]?.local?.imagesDirectory == "/var/lib/snapcron/images")
    }

    @Test func parsesFullConfigWithEveryBackendType() throws {
        let directory = try TemporaryDirectory()
        let keyFile = try directory.file("twcc-key", "secret\n", mode: 0o600)
        let config = try SnapcronConfig.parse(
            """
            [daemon]
            state_dir = "/srv/snapcron"
            socket_path = "/run/snap.sock"
            socket_group = "ops"
            max_concurrent_creates = 8
            schedule_path = "/srv/schedule"

            [backends.disk]
            type = "local"
            reflink = false

            [backends.zfs]
            type = "exec"
            create = ["/usr/bin/zfs-snap", "create", "{target}", "{name}"]
            status = ["/usr/bin/zfs-snap", "status", "{image}"]
            max_concurrent = 1
            requests_per_second = 0.5

            [backends.cloud]
            type = "twcc"
            platform = "openstack-taichung-default-2"
            project_id = 4242
            api_key_file = "\(keyFile)"
            requests_per_second = 5

            [backends.cloud2]
            type = "twcc"
            api_key_credential = "twcc-api-key"
            """, file: "snapcron.toml")
        #expect(config.stateDirectory == "/srv/snapcron")
        #expect(config.socketPath == "/run/snap.sock")
        // The same rule on both sides of the socket: --socket, the config's socket_path, $RUNTIME_DIRECTORY, default.
        let systemd = ["RUNTIME_DIRECTORY": "/run/snapcron:/run/other"]
        #expect(config.controlSocketPath(override: "/tmp/s.sock", environment: systemd) == "/tmp/s.sock")
        #expect(config.controlSocketPath(override: nil, environment: systemd) == "/run/snap.sock")
        let plain = SnapcronConfig.default(stateDir: "/x")
        #expect(plain.controlSocketPath(override: nil, environment: systemd) == "/run/snapcron/control.sock")
        let runtime = ["RUNTIME_DIRECTORY": "/run/sc"]
        #expect(plain.controlSocketPath(override: nil, environment: runtime) == "/run/sc/control.sock")
        #expect(plain.controlSocketPath(override: nil, environment: [:]) == SnapcronConfig.defaultSocketPath)
        #expect(config.socketGroup == "ops")
        #expect(config.maxConcurrentCreates == 8)
        #expect(config.schedulePath == "/srv/schedule")
        #expect(config.backends.keys.sorted() == ["cloud", "cloud2", "disk", "zfs"])
        #expect(
            config.backends["disk"]?.local == LocalBackendSettings(imagesDirectory: "/srv/snapcron/images", reflink: false))
        #expect(SnapcronConfig.default(stateDir: "/x").backends["local"]?.local?.reflink == true)
        let zfs = try #require(config.backends["zfs"])
        #expect(zfs.type == .exec)
        #expect(zfs.maxConcurrent == 1)
        #expect(zfs.local == nil)
        #expect(zfs.settings["create"]?.strings == ["/usr/bin/zfs-snap", "create", "{target}", "{name}"])
        #expect(zfs.settings["requests_per_second"] == .float(0.5))
        #expect(zfs.settings["type"] == nil)
        let cloud = try #require(config.backends["cloud"])
        #expect(cloud.type == .twcc)
        #expect(cloud.settings["project_id"]?.integer == 4242)
        #expect(cloud.settings["api_key_file"]?.string == keyFile)
        #expect(cloud.settings["requests_per_second"]?.number == 5)
        #expect(config.backends["cloud2"]?.settings["api_key_credential"] == .string("twcc-api-key"))
    }

    @Test func fileWithoutBackendsKeepsBuiltInLocalUnderItsStateDir() throws {
        let config = try SnapcronConfig.parse("[daemon]\nstate_dir = \"/data/snap\"\n", file: "snapcron.toml")
        #expect(config.backends.keys.sorted() == ["local"])
        #expect(config.backends["local"]?.local?.imagesDirectory == "/data/snap/images")
    }

    @Test func syntaxErrorHasLineAndColumn() throws {
        let errors = configErrors("[daemon]\nstate_dir = \"/x\"\nmax_concurrent_creates = = 4\n")
        #expect(errors.count == 1)
        let error = try #require(errors.first)
        #expect(error.file == "snapcron.toml")
        #expect(error.line == 3)
        #expect(error.columns != nil)
        #expect(error.sourceLine == "max_concurrent_creates = = 4")
        #expect(error.description.hasPrefix("snapcron.toml:3:26: error: could not determine value type (while parsing value)"))
        #expect(error.description.contains("3 | max_concurrent_creates = = 4"))
    }

    @Test func duplicateKeyIsASyntaxError() {
        let errors = configErrors("[daemon]\nsocket_group = \"a\"\nsocket_group = \"b\"\n")
        #expect(errors.first?.line == 3)
    }

    @Test func unknownTypeNamesKeyPath() {
        let errors = configErrors("[backends.cloud]\ntype = \"tw cc\"\napi_key_credential = \"k\"\n")
        #expect(errors.count == 1)
        #expect(
            errors.first?.description == """
                snapcron.toml: error: backends.cloud: unknown type 'tw cc' (expected local, exec, twcc, libvirt)
                snapcron.toml: note: did you mean 'twcc'?
                """)
    }

    struct BadConfig: Sendable, CustomTestStringConvertible {
        var name: String
        var toml: String
        var message: String
        var note: String? = nil
        var testDescription: String { name }
    }

    @Test(arguments: [
        BadConfig(
            name: "unknown daemon key", toml: "[daemon]\nstate_dri = \"/x\"", message: "daemon: unknown key 'state_dri'",
            note: "did you mean 'state_dir'?"),
        BadConfig(
            name: "unknown top-level table", toml: "[deamon]\nstate_dir = \"/x\"", message: "unknown key 'deamon'",
            note: "did you mean 'daemon'?"),
        BadConfig(
            name: "unknown backend key", toml: "[backends.d]\ntype = \"local\"\nimage_dir = \"/x\"",
            message: "backends.d: unknown key 'image_dir'", note: "did you mean 'images_dir'?"),
        BadConfig(
            name: "key of another type", toml: "[backends.d]\ntype = \"local\"\nrequests_per_second = 3",
            message: "backends.d: unknown key 'requests_per_second'", note: "known keys are type, max_concurrent, max_concurrent_creates, hooks, images_dir, reflink"),
        BadConfig(
            name: "reflink not a boolean", toml: "[backends.d]\ntype = \"local\"\nreflink = \"no\"",
            message: "backends.d.reflink: expected true or false, got \"no\""),
        BadConfig(
            name: "inline secret", toml: "[backends.c]\ntype = \"twcc\"\napi_key = \"abc\"",
            message: "backends.c.api_key: secrets are never inline",
            note: "use api_key_credential (systemd LoadCredential=) or api_key_file (not world-readable)"),
        BadConfig(
            name: "twcc without key", toml: "[backends.c]\ntype = \"twcc\"",
            message: "backends.c: missing api_key_credential or api_key_file (the API key is never inline)"),
        BadConfig(
            name: "both key sources", toml: "[backends.c]\ntype = \"twcc\"\napi_key_credential = \"k\"\napi_key_file = \"/k\"",
            message: "backends.c: give api_key_credential or api_key_file, not both"),
        BadConfig(
            name: "credential path", toml: "[backends.c]\ntype = \"twcc\"\napi_key_credential = \"../k\"",
            message: "backends.c.api_key_credential: invalid credential name '../k'",
            note: "give the name of a LoadCredential= entry; it is read from $CREDENTIALS_DIRECTORY"),
        BadConfig(
            name: "missing type", toml: "[backends.d]\nimages_dir = \"/x\"",
            message: "backends.d: missing key 'type' (expected local, exec, twcc, libvirt)"),
        BadConfig(
            name: "wrong value type", toml: "[daemon]\nmax_concurrent_creates = \"4\"",
            message: "daemon.max_concurrent_creates: expected an integer of at least 1, got \"4\""),
        BadConfig(
            name: "zero limit", toml: "[backends.d]\ntype = \"local\"\nmax_concurrent = 0",
            message: "backends.d.max_concurrent: expected an integer of at least 1, got 0"),
        BadConfig(
            name: "relative path", toml: "[daemon]\nstate_dir = \"var/lib\"",
            message: "daemon.state_dir: expected an absolute path, got 'var/lib'"),
        BadConfig(
            name: "bad argv", toml: "[backends.x]\ntype = \"exec\"\ncreate = \"zfs snapshot\"",
            message: "backends.x.create: expected a non-empty array of strings (an argv), got \"zfs snapshot\""),
        BadConfig(
            name: "bad rate", toml: "[backends.x]\ntype = \"exec\"\ncreate = [\"true\"]\nrequests_per_second = 0",
            message: "backends.x.requests_per_second: expected a number greater than 0, got 0"),
        BadConfig(
            name: "bad backend name", toml: "[backends.My_Cloud]\ntype = \"local\"",
            message:
                "backends.My_Cloud: invalid backend name 'My_Cloud' (use lowercase letters, digits and '-', starting with a letter or digit)"
        ),
        BadConfig(
            name: "daemon not a table", toml: "daemon = 3", message: "daemon: expected a table, got integer"),
        BadConfig(
            name: "store without url", toml: "[store]\nnode_name = \"a\"",
            message: "store: missing url (postgresql://USER@HOST[:PORT]/DATABASE)"),
        BadConfig(
            name: "store not postgresql", toml: "[store]\nurl = \"sqlite:/var/lib/x.db\"",
            message: "store.url: 'sqlite:/var/lib/x.db' is not a postgresql:// url",
            note: "SQLite needs no [store]: it is the default"),
        BadConfig(
            name: "password in the store url", toml: "[store]\nurl = \"postgresql://snap:hunter2@db/state\"",
            message: "store.url: secrets are never inline: the url holds a password",
            note: "use password_credential (systemd LoadCredential=) or password_file (not world-readable)"),
        BadConfig(
            name: "inline store password", toml: "[store]\nurl = \"postgresql://snap@db/state\"\npassword = \"x\"",
            message: "store.password: secrets are never inline",
            note: "use password_credential (systemd LoadCredential=) or password_file (not world-readable)"),
        BadConfig(
            name: "short lease", toml: "[store]\nurl = \"postgresql://snap@db/state\"\nlease = \"2s\"",
            message: "store.lease: must be at least 5s, got '2s'"),
        BadConfig(
            name: "bad node name", toml: "[store]\nurl = \"postgresql://snap@db/state\"\nnode_name = \"a b\"",
            message: "store.node_name: 'a b' is not a node name (letters, digits, '-', '_', '.'; at most 63)"),
    ])
    func rejects(_ row: BadConfig) {
        let errors = configErrors(row.toml)
        #expect(errors.count == 1, "\(errors)")
        #expect(errors.first?.message == row.message)
        #expect(errors.first?.note == row.note)
        #expect(errors.first?.line == nil)
    }

    @Test func readsTheSharedStore() throws {
        let directory = try TemporaryDirectory()
        let password = try directory.file("pg-password", "secret\n", mode: 0o600)
        let config = try SnapcronConfig.parse(
            """
            [store]
            url = "postgresql://snap@db.example:6543/state"
            password_file = "\(password)"
            node_name = "node-a"
            lease = "45s"
            """, file: "snapcron.toml")
        var expected = SharedStoreSettings(url: "postgresql://snap@db.example:6543/state")
        expected.passwordFile = password
        expected.nodeName = "node-a"
        expected.lease = .seconds(45)
        #expect(config.store == expected)
        #expect(try SnapcronConfig.parse("[daemon]\n", file: "snapcron.toml").store == nil)
        let errors = configErrors("[store]\nurl = \"postgresql://snap@db/state\"\npassword_file = \"\(password)x\"\n")
        #expect(errors.first?.message.hasPrefix("store.password_file: cannot read") == true, "\(errors)")
    }

    @Test func reportsEveryErrorAtOnce() {
        let errors = configErrors(
            "[daemon]\nstate_dir = \"rel\"\nbogus = 1\n[backends.a]\ntype = \"nope\"\n[backends.b]\ntype = \"twcc\"\n")
        #expect(errors.errorCount == 4, "\(errors)")
        #expect(errors.summary == "4 errors")
    }

    @Test(arguments: [0o600, 0o640, 0o400])
    func acceptsPrivateKeyFile(_ mode: Int) throws {
        let directory = try TemporaryDirectory()
        let key = try directory.file("key", "k", mode: mode)
        let config = try SnapcronConfig.parse(
            "[backends.c]\ntype = \"twcc\"\napi_key_file = \"\(key)\"\n", file: "snapcron.toml")
        #expect(config.backends["c"]?.settings["api_key_file"]?.string == key)
    }

    @Test(arguments: [0o644, 0o604, 0o666])
    func refusesWorldReadableKeyFile(_ mode: Int) throws {
        let directory = try TemporaryDirectory()
        let key = try directory.file("key", "k", mode: mode)
        let errors = configErrors("[backends.c]\ntype = \"twcc\"\napi_key_file = \"\(key)\"\n")
        #expect(errors.count == 1)
        let octal = "0" + String(mode, radix: 8)
        #expect(errors.first?.message == "backends.c.api_key_file: '\(key)' is readable by everyone (mode \(octal))")
        #expect(errors.first?.note == "chmod o-rwx \(key)")
    }

    /// The daemon refuses these at start (`TWCCBackend.Configuration.problem(withBaseURL:)`); the config reader, and
    /// so `snapcronctl check`, says the same.
    @Test(arguments: [
        ("http://api.twcc.ai", "'http://api.twcc.ai' is plain http, which would send the API key unencrypted; use https:// (http:// is allowed only for loopback hosts: 127.0.0.0/8, ::1, localhost)"),
        ("http://10.0.0.1:8080", "'http://10.0.0.1:8080' is plain http, which would send the API key unencrypted; use https:// (http:// is allowed only for loopback hosts: 127.0.0.0/8, ::1, localhost)"),
        ("https://user@api.twcc.ai", "'https://user@api.twcc.ai' must not contain user info (user@host)"),
        ("ftp://api.twcc.ai", "expected an http(s) URL, got 'ftp://api.twcc.ai'"),
    ])
    func refusesABaseURLTheDaemonWouldRefuse(_ url: String, _ message: String) {
        let errors = configErrors("[backends.c]\ntype = \"twcc\"\napi_key_credential = \"k\"\nbase_url = \"\(url)\"\n")
        #expect(errors.count == 1, "\(errors)")
        #expect(errors.first?.message == "backends.c.base_url: \(message)")
    }

    @Test(arguments: ["https://api.twcc.ai", "http://127.0.0.1:8080", "http://localhost", "http://[::1]:9000"])
    func acceptsHTTPSOrLoopbackHTTPBaseURL(_ url: String) throws {
        let config = try SnapcronConfig.parse(
            "[backends.c]\ntype = \"twcc\"\napi_key_credential = \"k\"\nbase_url = \"\(url)\"\n", file: "snapcron.toml")
        #expect(config.backends["c"]?.settings["base_url"]?.string == url)
    }

    @Test func refusesMissingKeyFile() {
        let errors = configErrors("[backends.c]\ntype = \"twcc\"\napi_key_file = \"/nonexistent/key\"\n")
        #expect(errors.first?.message == "backends.c.api_key_file: cannot read '/nonexistent/key': no such file or directory")
    }
}

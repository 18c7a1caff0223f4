import CExecShims  // posix_spawn_file_actions_addclosefrom_np
import Foundation

#if canImport(Glibc)
    import Glibc  // geteuid, getpwnam, chown, socket, bind, posix_spawn, waitpid
#endif

/// A throwaway PostgreSQL server for the tests: `initdb` into a fresh temporary folder, `postgres` on a loopback
/// port and a Unix socket in that folder, one role with a password and its database; stopped and removed by
/// ``stop()``.
///
/// PostgreSQL refuses to run as root, so when the tests run as root the server runs as the `postgres` system user
/// that Debian's package creates (through `runuser`), in a folder that user owns. The server trades durability for
/// speed (`fsync=off`): a test server never survives a power cut.
public final class PostgresServer: Sendable {
    /// Why a server could not be started or used.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// The role the tests connect as (not a superuser), and its password.
    public static let role = "snapcron"
    public let password: String
    /// The database made for ``role`` at start; ``createDatabase()`` makes more.
    public let database = "snapcron"
    public let host = "127.0.0.1"
    public let port: Int
    /// The folder holding the data directory, the socket and the log.
    public let directory: URL
    /// How long `initdb` plus start-up took.
    public let startDuration: Duration

    private let binaries: URL
    private let runAsPostgres: Bool
    /// Whether the server takes TLS (a self-signed certificate for 127.0.0.1, see ``certificatePath``).
    public let tls: Bool
    /// The server's certificate (PEM), which a client may trust as its CA, when started with TLS.
    public var certificatePath: String? { tls ? directory.appendingPathComponent("tls/server.crt").path : nil }
    private var dataDirectory: URL { directory.appendingPathComponent("data") }
    private var socketDirectory: URL { directory.appendingPathComponent("socket") }
    public var logFile: URL { directory.appendingPathComponent("postgres.log") }

    /// `postgresql://snapcron@127.0.0.1:PORT/DATABASE`: the password is given separately, never in the URL.
    public func url(database: String? = nil) -> String {
        "postgresql://\(Self.role)@\(host):\(port)/\(database ?? self.database)"
    }

    /// Whether `SNAPCRON_SKIP_POSTGRES_TESTS=1` asks to skip the tests that need a server.
    public static let skipRequested = ProcessInfo.processInfo.environment["SNAPCRON_SKIP_POSTGRES_TESTS"] == "1"

    /// The newest PostgreSQL found under /usr/lib/postgresql (Debian's layout), or nil.
    public static func findBinaries() -> URL? {
        let root = URL(fileURLWithPath: "/usr/lib/postgresql")
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []
        return versions.compactMap(Int.init).sorted(by: >).lazy
            .map { root.appendingPathComponent("\($0)/bin") }
            .first { FileManager.default.isExecutableFile(atPath: $0.appendingPathComponent("postgres").path) }
    }

    /// Creates a cluster in a new folder under the temporary directory and starts it; fails with a message saying
    /// what is missing (the package, the `postgres` user) or what the server said.
    public static func start(tls: Bool = false) throws -> PostgresServer {
        let clock = ContinuousClock()
        let began = clock.now
        guard let binaries = findBinaries() else {
            throw Failure(
                "no PostgreSQL server under /usr/lib/postgresql: install Debian's postgresql (scripts/install-deps "
                    + "--tests), or set SNAPCRON_SKIP_POSTGRES_TESTS=1 to skip these tests")
        }
        let runAsPostgres = geteuid() == 0
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("snapcron-postgres-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        if runAsPostgres {
            guard let user = getpwnam("postgres") else {
                throw Failure("the tests run as root but there is no postgres user to run the server as")
            }
            guard chown(directory.path, user.pointee.pw_uid, user.pointee.pw_gid) == 0 else {
                throw Failure("cannot give \(directory.path) to the postgres user: errno \(errno)")
            }
        }
        chmod(directory.path, 0o700)
        var generator = SystemRandomNumberGenerator()
        let password = (0..<2).map { _ in String(generator.next() as UInt64, radix: 16) }.joined()
        let server = PostgresServer(
            binaries: binaries, runAsPostgres: runAsPostgres, directory: directory, port: try freeLoopbackPort(),
            password: password, tls: tls, startDuration: .zero)
        do {
            try server.initializeAndStart()
        } catch {
            try? server.stop()
            throw error
        }
        return PostgresServer(
            binaries: binaries, runAsPostgres: runAsPostgres, directory: directory, port: server.port,
            password: password, tls: tls, startDuration: clock.now - began)
    }

    private init(
        binaries: URL, runAsPostgres: Bool, directory: URL, port: Int, password: String, tls: Bool,
        startDuration: Duration
    ) {
        self.tls = tls
        self.binaries = binaries
        self.runAsPostgres = runAsPostgres
        self.directory = directory
        self.port = port
        self.password = password
        self.startDuration = startDuration
    }

    private func initializeAndStart() throws {
        try runTool(
            "initdb",
            [
                "-D", dataDirectory.path, "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync",
                "--auth-local=trust", "--auth-host=scram-sha-256",
            ])
        try runTool("mkdir", ["-m", "0700", socketDirectory.path], tool: URL(fileURLWithPath: "/bin/mkdir"))
        if tls {
            let folder = directory.appendingPathComponent("tls").path
            try runTool("mkdir", ["-m", "0700", folder], tool: URL(fileURLWithPath: "/bin/mkdir"))
            try runTool(
                "openssl",
                [
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", folder + "/server.key",
                    "-out", folder + "/server.crt",
                ], tool: URL(fileURLWithPath: "/usr/bin/openssl"))
            try runTool("chmod", ["0644", folder + "/server.crt"], tool: URL(fileURLWithPath: "/bin/chmod"))
            try runTool("chmod", ["0711", folder], tool: URL(fileURLWithPath: "/bin/chmod"))
        }
        try startServer()
        try administer("CREATE ROLE \(Self.role) LOGIN PASSWORD '\(password)'")
        try administer("CREATE DATABASE \(database) OWNER \(Self.role)")
    }

    private func startServer() throws {
        // Loopback TCP (password, as a remote node would connect) and a socket in the private folder (trust, for
        // the harness's own administration).
        let options = [
            "-k", socketDirectory.path, "-h", host, "-p", "\(port)", "-c", "fsync=off",
            "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=400",
        ] + (tls ? ["-c", "ssl=on", "-c", "ssl_cert_file=\(directory.path)/tls/server.crt",
                    "-c", "ssl_key_file=\(directory.path)/tls/server.key"] : [])
        let optionText = options.joined(separator: " ")
        try runTool("pg_ctl", ["-D", dataDirectory.path, "-l", logFile.path, "-w", "-t", "30", "-o", optionText, "start"])
    }

    /// Stops the server and keeps its data, as a restart or a failover does; ``resume()`` starts it again on the
    /// same port. Connected clients lose their connections.
    public func pause() throws {
        try runTool("pg_ctl", ["-D", dataDirectory.path, "-m", "fast", "-w", "stop"])
    }

    /// Starts the server ``pause()`` stopped.
    public func resume() throws { try startServer() }

    /// Stops the server (fast shutdown: running sessions are ended) and removes its folder
    /// (`SNAPCRON_KEEP_POSTGRES=1` keeps it for a look).
    public func stop() throws {
        defer {
            if ProcessInfo.processInfo.environment["SNAPCRON_KEEP_POSTGRES"] != "1" {
                try? FileManager.default.removeItem(at: directory)
            }
        }
        if FileManager.default.fileExists(atPath: dataDirectory.appendingPathComponent("postmaster.pid").path) {
            try runTool("pg_ctl", ["-D", dataDirectory.path, "-m", "fast", "-w", "stop"])
        }
    }

    /// Makes a new, empty database owned by ``role`` and returns its name.
    public func createDatabase() throws -> String {
        let name = "test_\(UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: ""))"
        try administer("CREATE DATABASE \(name) OWNER \(Self.role)")
        return name
    }

    /// Runs SQL as the superuser over the private socket (`psql`, stops at the first error); returns its output.
    @discardableResult
    public func administer(_ sql: String, database: String = "postgres") throws -> String {
        try runTool(
            "psql",
            [
                "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", socketDirectory.path, "-p", "\(port)",
                "-U", "postgres", "-d", database, "-c", sql,
            ])
    }

    /// Runs one of PostgreSQL's programs (as `postgres` when the tests are root, from `/`); throws with its output
    /// unless it exits 0.
    ///
    /// Spawned directly and reaped with waitpid, with every descriptor above stderr closed and the output in a
    /// file: `pg_ctl start` leaves a server behind, and Foundation's Process would wait for that server to close
    /// the descriptors it inherited (a hang), as would a pipe.
    @discardableResult
    private func runTool(_ name: String, _ arguments: [String], tool: URL? = nil) throws -> String {
        let program = (tool ?? binaries.appendingPathComponent(name)).path
        let command =
            (runAsPostgres ? ["/usr/sbin/runuser", "-u", "postgres", "--"] : []) + ["/usr/bin/env", "-C", "/", program]
            + arguments
        let outputPath = FileManager.default.temporaryDirectory
            .appendingPathComponent("snapcron-postgres-tool-\(UUID().uuidString)").path
        defer { unlink(outputPath) }

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        snapcron_exec_add_closefrom(&actions, 3)
        let argv: [UnsafeMutablePointer<CChar>?] = command.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, command[0], &actions, nil, argv, environ)
        guard spawned == 0 else { throw Failure("cannot start \(command[0]): errno \(spawned)") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            guard errno == EINTR else { throw Failure("waitpid for \(name) failed: errno \(errno)") }
        }
        let text = (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? ""
        // WIFEXITED and WEXITSTATUS, which Swift's Glibc module does not export.
        let exited = status & 0x7f == 0
        let exitStatus = (status >> 8) & 0xff
        guard exited && exitStatus == 0 else {
            let log = (try? String(contentsOf: logFile, encoding: .utf8)).map { "\nserver log:\n\($0.suffix(2000))" }
            let how = exited ? "exited with \(exitStatus)" : "was killed by signal \(status & 0x7f)"
            throw Failure("\(name) \(how): \(text)\(log ?? "")")
        }
        return text
    }

    /// A loopback port nobody listens on now (the kernel's choice for port 0).
    private static func freeLoopbackPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket() failed: errno \(errno)") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { throw Failure("bind() failed: errno \(errno)") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw Failure("getsockname() failed: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

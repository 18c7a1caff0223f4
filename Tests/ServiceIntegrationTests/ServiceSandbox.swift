import Foundation

#if canImport(Glibc)
    import Glibc  // geteuid, usleep
#endif

/// A systemd 252 booted by `scripts/systemd-sandbox`, with snapcron installed into it by the Makefile's own
/// `install-files` rule, run inside (DESTDIR empty: systemd-sysusers, the catalog and daemon-reload for real).
///
/// Like `SystemdIntegrationTests/Sandbox.swift`, tests talk to it only through the script. The sandbox's /etc,
/// /usr/local and /var are overlays whose writes land in its folder, so the state database can be read from the
/// host once the sandbox is stopped.
struct ServiceSandbox {
    struct Failure: Error, CustomStringConvertible { var description: String }

    struct Output {
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    static let unit = "snapcron.service"
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let script = packageRoot.appendingPathComponent("scripts/systemd-sandbox")
    static let skipRequested = ProcessInfo.processInfo.environment["SNAPCRON_SKIP_SYSTEMD_TESTS"] == "1"

    let directory: URL

    /// Boots a sandbox and runs `make install-files` inside it with the binaries of this build.
    static func bootWithSnapcronInstalled() throws -> ServiceSandbox {
        guard geteuid() == 0 else {
            throw Failure(
                description: """
                    the systemd end-to-end tests need root: they boot systemd 252 as PID 1 of private namespaces \
                    (scripts/systemd-sandbox). Run them as root, or set SNAPCRON_SKIP_SYSTEMD_TESTS=1 to skip them.
                    """)
        }
        let directory = packageRoot.appendingPathComponent(".build/systemd-sandboxes/\(UUID().uuidString)")
        let sandbox = ServiceSandbox(directory: directory)
        try sandbox.succeed(["start", directory.path])
        do { try sandbox.make("install-files") } catch {
            try? sandbox.stop()
            throw error
        }
        return sandbox
    }

    /// Runs a target of the project's Makefile inside, as root on a machine running systemd, with the binaries of
    /// this build (the debug build, stripped on the way as `make install` does: 114 MB -> 59 MB, quicker to copy).
    @discardableResult func make(_ target: String) throws -> String {
        let binaries = try Self.builtBinariesDirectory()
        return try exec("make", "--no-print-directory", "-C", Self.packageRoot.path, target, "BUILT=\(binaries.path)")
    }

    /// Where snapcrond and snapcronctl were built: next to this test binary (`SNAPCRON_BIN_DIR` overrides it).
    static func builtBinariesDirectory() throws -> URL {
        var candidates: [URL] = []
        if let path = ProcessInfo.processInfo.environment["SNAPCRON_BIN_DIR"] {
            candidates.append(URL(fileURLWithPath: path))
        }
        if let executable = Bundle.main.executableURL { candidates.append(executable.deletingLastPathComponent()) }
        candidates += Bundle.allBundles.filter { $0.bundlePath.hasSuffix(".xctest") }.map {
            $0.bundleURL.deletingLastPathComponent()
        }
        candidates.append(packageRoot.appendingPathComponent(".build/debug"))
        guard
            let found = candidates.first(where: { directory in
                ["snapcrond", "snapcronctl"].allSatisfy {
                    FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent($0).path)
                }
            })
        else {
            throw Failure(description: "snapcrond and snapcronctl not built; run swift build or set SNAPCRON_BIN_DIR")
        }
        return found
    }

    /// A path on the host for a path inside (only under /srv, /var, /etc and /usr/local: the writable trees).
    func hostPath(_ inside: String) -> String {
        for (prefix, folder) in [
            ("/srv/", "srv/"), ("/var/", "var/"), ("/etc/", "etc/"), ("/usr/local/", "usr-local/"),
        ] where inside.hasPrefix(prefix) { return directory.path + "/" + folder + inside.dropFirst(prefix.count) }
        return directory.path + "/unreachable" + inside
    }

    /// Writes a file under /srv (the sandbox sees the host folder directly) and copies it to `path` inside.
    func writeFile(_ path: String, _ contents: String, mode: String = "0644") throws {
        let staged = "/srv/staged-\(UUID().uuidString)"
        try contents.write(toFile: hostPath(staged), atomically: true, encoding: .utf8)
        try exec("sh", "-c", "install -D -m \(mode) \(staged) \(path) && rm -f \(staged)")
    }

    /// Adds a drop-in to snapcron.service and reloads systemd.
    func addDropIn(named name: String, _ contents: String) throws {
        try writeFile("/etc/systemd/system/snapcron.service.d/\(name).conf", "[Service]\n" + contents)
        try exec("systemctl", "daemon-reload")
    }

    /// Powers the sandbox off and removes its folder (`SNAPCRON_KEEP_SANDBOX=1` keeps it).
    func stop() throws { try succeed(["stop", directory.path]) }

    func remove() {
        if ProcessInfo.processInfo.environment["SNAPCRON_KEEP_SANDBOX"] != "1" {
            try? FileManager.default.removeItem(at: directory)
        }
    }

    @discardableResult func exec(_ command: String...) throws -> String { try exec(command) }

    @discardableResult func exec(_ command: [String]) throws -> String {
        try succeed(["exec", directory.path] + command).standardOutput
    }

    /// Runs a command inside and returns everything it said, whatever its exit status.
    func attempt(_ command: String...) throws -> Output { try Self.run(["exec", directory.path] + command) }

    func properties(_ names: String..., of unit: String = ServiceSandbox.unit) throws -> [String: String] {
        let text = try exec(["systemctl", "show", unit] + names.flatMap { ["-p", $0] })
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            result[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return result
    }

    /// Journal entries (`journalctl -o json ARGS`), string fields only.
    func journal(_ arguments: String...) throws -> [[String: String]] {
        let text = try succeed(["journal", directory.path, "-o", "json"] + arguments).standardOutput
        return try text.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
            return object.compactMapValues { $0 as? String }
        }
    }

    /// The whole journal, every field of every entry, as text (`journalctl -o export`).
    func wholeJournal() throws -> String { try succeed(["journal", directory.path, "-o", "export"]).standardOutput }

    func wait(_ what: String, timeout: Duration = .seconds(30), until condition: () throws -> Bool) throws {
        let deadline = ContinuousClock.now + timeout
        while try !condition() {
            guard ContinuousClock.now < deadline else {
                throw Failure(description: "timed out after \(timeout) waiting for \(what)")
            }
            usleep(100_000)
        }
    }

    @discardableResult func succeed(_ arguments: [String]) throws -> Output {
        let output = try Self.run(arguments)
        guard output.status == 0 else {
            throw Failure(
                description: "systemd-sandbox \(arguments.joined(separator: " ")) exited \(output.status): "
                    + output.standardError + output.standardOutput)
        }
        return output
    }

    static func run(_ arguments: [String]) throws -> Output {
        let process = Process()
        process.executableURL = script
        process.arguments = arguments
        // Standard error to a file: reading two pipes one after the other could deadlock on a full one.
        let errorFile = packageRoot.appendingPathComponent(".build/systemd-sandboxes/stderr-\(UUID().uuidString)")
        try FileManager.default.createDirectory(
            at: errorFile.deletingLastPathComponent(), withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: errorFile.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: errorFile) }
        let output = Pipe()
        process.standardOutput = output
        process.standardError = try FileHandle(forWritingTo: errorFile)
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Output(
            status: process.terminationStatus, standardOutput: String(decoding: data, as: UTF8.self),
            standardError: (try? String(contentsOf: errorFile, encoding: .utf8)) ?? "")
    }
}

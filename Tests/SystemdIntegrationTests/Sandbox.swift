import Foundation

#if canImport(Glibc)
    import Glibc  // geteuid, usleep
#endif

/// One systemd 252 booted by `scripts/systemd-sandbox` in a folder of its own under `.build/systemd-sandboxes`.
///
/// Tests talk to it only through the script, as a person would: `exec` for `systemctl`, `journal` for
/// `journalctl`. Real time is unavoidable here (a real systemd, a real watchdog), so waits poll with deadlines.
struct Sandbox {
    /// Why a sandbox could not be used.
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    /// The result of one run of the script.
    struct Output {
        var status: Int32
        var standardOutput: String
        var standardError: String
    }

    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let script = packageRoot.appendingPathComponent("scripts/systemd-sandbox")

    /// Whether `SNAPCRON_SKIP_SYSTEMD_TESTS=1` asks to skip these tests (e.g. a developer without root).
    static let skipRequested = ProcessInfo.processInfo.environment["SNAPCRON_SKIP_SYSTEMD_TESTS"] == "1"

    let directory: URL

    /// Boots a sandbox and installs the probe binary into its `/srv/bin`.
    static func boot() throws -> Sandbox {
        guard geteuid() == 0 else {
            throw Failure(
                description: """
                    the systemd end-to-end tests need root: they boot systemd 252 as PID 1 of private namespaces \
                    (scripts/systemd-sandbox). Run them as root, or set SNAPCRON_SKIP_SYSTEMD_TESTS=1 to skip them.
                    """
            )
        }
        let directory = packageRoot.appendingPathComponent(".build/systemd-sandboxes/\(UUID().uuidString)")
        let sandbox = Sandbox(directory: directory)
        try sandbox.succeed(["start", directory.path])
        try sandbox.succeed(["install-bin", directory.path, probeExecutable().path])
        return sandbox
    }

    /// The probe, built next to this test binary (`SNAPCRON_NOTIFY_PROBE` overrides its path).
    static func probeExecutable() throws -> URL {
        if let path = ProcessInfo.processInfo.environment["SNAPCRON_NOTIFY_PROBE"] {
            return URL(fileURLWithPath: path)
        }
        let testBinary = Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
        let url = testBinary.deletingLastPathComponent().appendingPathComponent("snapcron-notify-probe")
        guard FileManager.default.isExecutableFile(atPath: url.path) else {
            throw Failure(
                description: "snapcron-notify-probe not found at \(url.path); build it or set SNAPCRON_NOTIFY_PROBE")
        }
        return url
    }

    /// Powers the sandbox off (the script checks its cgroup is empty) and removes its folder.
    func stop() throws {
        try succeed(["stop", directory.path])
        if ProcessInfo.processInfo.environment["SNAPCRON_KEEP_SANDBOX"] != "1" {
            try? FileManager.default.removeItem(at: directory)
        }
    }

    /// Installs a unit file with these contents into the sandbox's `/etc/systemd/system` and reloads systemd.
    func installUnit(named name: String, contents: String) throws {
        let file = directory.appendingPathComponent(name)
        try contents.write(to: file, atomically: true, encoding: .utf8)
        try succeed(["install-unit", directory.path, file.path])
    }

    /// Runs a command inside and returns its standard output; throws unless it exits 0.
    @discardableResult
    func exec(_ command: String...) throws -> String {
        try exec(command)
    }

    /// Runs a command inside and returns its standard output; throws unless it exits 0.
    @discardableResult
    func exec(_ command: [String]) throws -> String {
        try succeed(["exec", directory.path] + command).standardOutput
    }

    /// `systemctl show` properties of a unit.
    func properties(of unit: String, _ names: String...) throws -> [String: String] {
        let text = try exec(["systemctl", "show", unit] + names.flatMap { ["-p", $0] })
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            result[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return result
    }

    /// The journal entries of a unit (`journalctl -o json -u UNIT`), string fields only.
    func journal(unit: String) throws -> [[String: String]] {
        let text = try succeed(["journal", directory.path, "-o", "json", "-u", unit]).standardOutput
        return try text.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
            return object.compactMapValues { $0 as? String }
        }
    }

    /// Polls until `condition` holds, or fails after `timeout`.
    func wait(
        _ what: String,
        timeout: Duration = .seconds(20),
        until condition: () throws -> Bool
    ) throws {
        let deadline = ContinuousClock.now + timeout
        while try !condition() {
            guard ContinuousClock.now < deadline else {
                throw Failure(description: "timed out after \(timeout) waiting for \(what)")
            }
            usleep(50_000)
        }
    }

    /// Runs the script; throws with its output unless it exits 0.
    @discardableResult
    func succeed(_ arguments: [String]) throws -> Output {
        let output = try Self.run(arguments)
        guard output.status == 0 else {
            throw Failure(
                description: "systemd-sandbox \(arguments.joined(separator: " ")) exited \(output.status): "
                    + output.standardError + output.standardOutput
            )
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
            at: errorFile.deletingLastPathComponent(),
            withIntermediateDirectories: true
        )
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
            status: process.terminationStatus,
            standardOutput: String(decoding: data, as: UTF8.self),
            standardError: (try? String(contentsOf: errorFile, encoding: .utf8)) ?? ""
        )
    }
}

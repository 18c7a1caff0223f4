import Foundation

#if canImport(Glibc)
    import Glibc  // geteuid, usleep
#endif

/// One systemd 252 booted by `scripts/systemd-sandbox` in a folder of its own under `.build/systemd-sandboxes`,
/// shared by the end-to-end test targets.
///
/// Tests talk to it only through the script, as a person would: `exec` for `systemctl`, `journal` for
/// `journalctl`. Real time is unavoidable here (a real systemd, a real watchdog), so waits poll with deadlines.
public struct SystemdSandbox: Sendable {
    /// Why a sandbox could not be used.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// The result of one run of the script, or of a command inside.
    public struct Output: Sendable {
        public var status: Int32
        public var standardOutput: String
        public var standardError: String
    }

    public static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    public static let script = packageRoot.appendingPathComponent("scripts/systemd-sandbox")

    /// Whether `SNAPCRON_SKIP_SYSTEMD_TESTS=1` asks to skip these tests (e.g. a developer without root).
    public static let skipRequested = ProcessInfo.processInfo.environment["SNAPCRON_SKIP_SYSTEMD_TESTS"] == "1"

    public let directory: URL
    /// The harness script this sandbox is driven by (the checkout's own by default).
    public var scriptURL: URL = SystemdSandbox.script

    /// Boots a fresh sandbox in a new folder under `.build/systemd-sandboxes` of this checkout.
    public static func start() throws -> SystemdSandbox {
        try start(
            directory: packageRoot.appendingPathComponent(".build/systemd-sandboxes/\(UUID().uuidString)"))
    }

    /// Boots a fresh sandbox in `directory` with the harness script `script`; fails with a clear message when not
    /// root.
    public static func start(directory: URL, script: URL = SystemdSandbox.script) throws -> SystemdSandbox {
        guard geteuid() == 0 else {
            throw Failure(
                description: """
                    the systemd end-to-end tests need root: they boot systemd 252 as PID 1 of private namespaces \
                    (scripts/systemd-sandbox). Run them as root, or set SNAPCRON_SKIP_SYSTEMD_TESTS=1 to skip them.
                    """)
        }
        let sandbox = SystemdSandbox(directory: directory, scriptURL: script)
        try sandbox.succeed(["start", sandbox.directory.path])
        return sandbox
    }

    /// Powers the sandbox off; the script checks that its cgroup is empty.
    public func stop() throws { try succeed(["stop", directory.path]) }

    /// Removes the sandbox's folder (`SNAPCRON_KEEP_SANDBOX=1` keeps it for a look).
    public func remove() {
        if ProcessInfo.processInfo.environment["SNAPCRON_KEEP_SANDBOX"] != "1" {
            try? FileManager.default.removeItem(at: directory)
        }
    }

    /// Runs a command inside and returns its standard output; throws unless it exits 0.
    @discardableResult public func exec(_ command: String...) throws -> String { try exec(command) }

    @discardableResult public func exec(_ command: [String]) throws -> String {
        try succeed(["exec", directory.path] + command).standardOutput
    }

    /// Runs a command inside and returns everything it said, whatever its exit status.
    public func attempt(_ command: String...) throws -> Output {
        try Self.run(["exec", directory.path] + command, script: scriptURL)
    }

    /// `systemctl show` properties of a unit.
    public func properties(_ names: String..., of unit: String) throws -> [String: String] {
        try properties(names, of: unit)
    }

    public func properties(_ names: [String], of unit: String) throws -> [String: String] {
        let text = try exec(["systemctl", "show", unit] + names.flatMap { ["-p", $0] })
        var result: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            result[String(line[..<equals])] = String(line[line.index(after: equals)...])
        }
        return result
    }

    /// Journal entries (`journalctl -o json ARGS`), string fields only.
    public func journal(_ arguments: String...) throws -> [[String: String]] {
        let text = try succeed(["journal", directory.path, "-o", "json"] + arguments).standardOutput
        return try text.split(separator: "\n").map { line in
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
            return object.compactMapValues { $0 as? String }
        }
    }

    /// The whole journal, every field of every entry, as text (`journalctl -o export`).
    public func wholeJournal() throws -> String {
        try succeed(["journal", directory.path, "-o", "export"]).standardOutput
    }

    /// Polls until `condition` holds, or fails after `timeout`.
    public func wait(_ what: String, timeout: Duration = .seconds(30), until condition: () throws -> Bool) throws {
        let deadline = ContinuousClock.now + timeout
        while try !condition() {
            guard ContinuousClock.now < deadline else {
                throw Failure(description: "timed out after \(timeout) waiting for \(what)")
            }
            usleep(50_000)
        }
    }

    /// Runs the script; throws with its output unless it exits 0.
    @discardableResult public func succeed(_ arguments: [String]) throws -> Output {
        let output = try Self.run(arguments, script: scriptURL)
        guard output.status == 0 else {
            throw Failure(
                description: "systemd-sandbox \(arguments.joined(separator: " ")) exited \(output.status): "
                    + output.standardError + output.standardOutput)
        }
        return output
    }

    public static func run(_ arguments: [String], script: URL = SystemdSandbox.script) throws -> Output {
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

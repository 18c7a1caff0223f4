import ExecBackend
import Foundation
import Logging
import SnapcronTestKit
import SnapshotBackend

#if canImport(Glibc)
    import Glibc
#endif

let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// The package root, found from this file's path.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// The shipped adapter script.
let qemuAdapter = packageRoot + "/etc/exec/qemu-snapshot"

/// Whether qemu-img is installed (Debian package qemu-utils, installed by scripts/install-deps).
let hasQemuImg = FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-img")

/// A scratch directory under the system temporary directory, removed by `remove()`.
struct Scratch {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("snapcron-exec-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }

    /// Writes an executable `/bin/sh` script called `name` and returns its path.
    @discardableResult
    func script(_ name: String, _ body: String) throws -> String {
        let file = path + "/" + name
        try writeExecutable("#!/bin/sh\n" + body + "\n", to: file)
        return file
    }

    /// Makes an empty qcow2 disk with `qemu-img create -f qcow2` and returns its path.
    func qcow2(_ name: String, size: String = "8M") throws -> String {
        let file = path + "/" + name
        let result = try run(["/usr/bin/qemu-img", "create", "-q", "-f", "qcow2", file, size])
        guard result.status == 0 else { throw TestFailure("qemu-img create failed: \(result.output)") }
        return file
    }

    func read(_ name: String) throws -> String {
        try String(contentsOfFile: path + "/" + name, encoding: .utf8)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs a helper command for a test and returns its exit status and combined output.
@discardableResult
func run(_ argv: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: argv[0])
    process.arguments = Array(argv.dropFirst())
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}

/// The snapshot tags of a qcow2 disk, as `qemu-img snapshot -l` shows them.
func qemuSnapshotTags(_ disk: String) throws -> [String] {
    let result = try run(["/usr/bin/qemu-img", "snapshot", "-l", disk])
    guard result.status == 0 else { throw TestFailure("qemu-img snapshot -l failed: \(result.output)") }
    return result.output.split(separator: "\n").dropFirst(2).compactMap { line in
        line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.map(String.init)
    }
}

/// Whether a process with this pid still exists (zombies of other parents count as gone soon after).
func processExists(_ pid: pid_t) -> Bool {
    kill(pid, 0) == 0 || errno == EPERM
}

/// Waits up to `seconds` for `pid` to disappear; true when it did.
func waitUntilGone(_ pid: pid_t, seconds: Double = 20) async -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if !processExists(pid) { return true }
        try? await Task.sleep(for: .milliseconds(20))
    }
    return !processExists(pid)
}

/// Runs `body` and returns the `SnapshotBackendError` it throws, or nil when it throws nothing.
func backendError(_ body: () async throws -> Void) async -> SnapshotBackendError? {
    do {
        try await body()
        return nil
    } catch let error as SnapshotBackendError {
        return error
    } catch {
        return SnapshotBackendError.permanent(backend: "?", .create, "not a SnapshotBackendError: \(error)")
    }
}

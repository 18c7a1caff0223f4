import Foundation
import Logging
import NIOConcurrencyHelpers
import SnapshotBackend

@testable import LibvirtBackend
@testable import LibvirtDescriptor

/// A logger that drops everything.
let quiet = Logger(label: "libvirt-tests", factory: { _ in SwiftLogNoOpLogHandler() })

/// A log handler that keeps each message, to check what the backend tells the operator.
struct RecordingLogHandler: LogHandler {
    let messages: NIOLockedValueBox<[String]>
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        messages.withLockedValue { $0.append("\(event.level): \(event.message) \(event.metadata ?? [:])") }
    }

    /// A logger and the messages it has recorded so far.
    static func make() -> (Logger, @Sendable () -> [String]) {
        let box = NIOLockedValueBox<[String]>([])
        let logger = Logger(label: "libvirt-tests") { _ in RecordingLogHandler(messages: box) }
        return (logger, { box.withLockedValue { $0 } })
    }
}

/// A folder of its own, removed at deinit; readable by others, since QEMU runs as `libvirt-qemu`.
final class ScratchDirectory: @unchecked Sendable {  // immutable
    let path: String

    init(under parent: String = NSTemporaryDirectory()) throws {
        path = (parent.hasSuffix("/") ? parent : parent + "/") + "snapcron-libvirt-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(
            atPath: path, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func write(_ name: String, _ contents: String) throws -> String {
        let file = path + "/" + name
        try contents.write(toFile: file, atomically: true, encoding: .utf8)
        return file
    }
}

/// What a command printed and how it ended.
struct CommandResult {
    var status: Int32
    var output: String
}

/// Runs `arguments` (the first one found on PATH), output and errors together, on a thread of its own: a test
/// that waited for a command on the cooperative pool (2 threads on a 2-core machine) would starve other suites.
@discardableResult
func run(_ arguments: [String]) async throws -> CommandResult {
    try await offloaded { try runBlocking(arguments) }
}

/// `work`, which blocks, on a new thread; the caller suspends meanwhile.
func offloaded<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value) async throws -> Value {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try work() }) }.start()
    }
}

/// ``run(_:)`` on the calling thread, for code that is not async (set-up done once, deinit).
@discardableResult
func runBlocking(_ arguments: [String]) throws -> CommandResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    process.standardInput = FileHandle.nullDevice
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return CommandResult(status: process.terminationStatus, output: String(decoding: data, as: UTF8.self))
}

/// Whether an executable exists at `path`.
func isExecutable(_ path: String) -> Bool {
    FileManager.default.isExecutableFile(atPath: path)
}

extension LibvirtBackend {
    /// A backend over `uri` with the given mode and quiesce.
    static func make(
        uri: String, mode: LibvirtBackendSettings.Mode = .full, quiesce: LibvirtBackendSettings.Quiesce = .auto,
        overlayDirectory: String? = nil, name: String = "kvm"
    ) -> LibvirtBackend {
        LibvirtBackend(
            name: name,
            settings: LibvirtBackendSettings(
                uri: uri, mode: mode, quiesce: quiesce, overlayDirectory: overlayDirectory))
    }
}

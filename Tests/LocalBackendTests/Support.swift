import Foundation
import LocalBackend
import Logging
import SnapshotBackend

#if canImport(Glibc)
import Glibc
#endif

let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

/// A scratch directory under the system temporary directory, removed by `remove()`.
struct Scratch {
    let path: String

    init() throws {
        path =
            FileManager.default.temporaryDirectory
            .appendingPathComponent("snapcron-local-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    var images: String { path + "/images" }

    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }

    func backend(hook: LocalBackend.CopyHook? = nil, entryHook: LocalBackend.EntryHook? = nil) -> LocalBackend {
        LocalBackend(
            configuration: .init(
                imagesDirectory: images, now: { Date(timeIntervalSince1970: 1_700_000_000) }, copyHook: hook,
                entryHook: entryHook))
    }
}

/// Writes a file of `size` bytes that holds `extents` of non-zero data and holes elsewhere.
func writeSparseFile(_ path: String, size: Int64, extents: [(offset: Int64, length: Int)]) throws {
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard descriptor >= 0 else { throw POSIXError(.init(rawValue: errno)!) }
    defer { close(descriptor) }
    guard ftruncate(descriptor, off_t(size)) == 0 else { throw POSIXError(.init(rawValue: errno)!) }
    for (index, extent) in extents.enumerated() {
        let bytes = (0..<extent.length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index &+ 1) }
        let written = bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, off_t(extent.offset)) }
        guard written == extent.length else { throw POSIXError(.init(rawValue: errno)!) }
    }
}

func writeFile(_ path: String, _ text: String, mode: Int = 0o644) throws {
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
}

/// What `/usr/bin/sha256sum` prints for `path`.
func sha256sum(_ path: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
    process.arguments = [path]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return String(decoding: output, as: UTF8.self).split(separator: " ").first.map(String.init) ?? ""
}

func lstatOf(_ path: String) -> stat? {
    var info = stat()
    return lstat(path, &info) == 0 ? info : nil
}

func manifestJSON(_ folder: String) throws -> [String: Any] {
    let data = try Data(contentsOf: URL(fileURLWithPath: folder + "/manifest.json"))
    return try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
}

/// Pauses the copy thread at a checkpoint until the test lets it go, and tells the test when it got there.
final class CopyGate: @unchecked Sendable {
    let arrivals: AsyncStream<LocalBackend.CopyCheckpoint>
    private let continuation: AsyncStream<LocalBackend.CopyCheckpoint>.Continuation
    private let release = DispatchSemaphore(value: 0)
    private let pauseAt: @Sendable (LocalBackend.CopyCheckpoint) -> Bool

    init(pauseAt: @escaping @Sendable (LocalBackend.CopyCheckpoint) -> Bool) {
        self.pauseAt = pauseAt
        (arrivals, continuation) = AsyncStream.makeStream()
    }

    /// The hook to give the backend.
    var hook: LocalBackend.CopyHook {
        { [self] checkpoint in
            guard pauseAt(checkpoint) else { return }
            continuation.yield(checkpoint)
            release.wait()
        }
    }

    /// Waits until the copy is paused at the checkpoint.
    func waitForArrival() async -> LocalBackend.CopyCheckpoint? {
        for await checkpoint in arrivals { return checkpoint }
        return nil
    }

    func letGo() {
        release.signal()
    }
}

/// Runs an action once, from whichever thread gets there first (a copy thread's hook).
final class Once: @unchecked Sendable {
    private let lock = NSLock()
    private var done = false

    func run(_ action: () -> Void) {
        let first = lock.withLock {
            defer { done = true }
            return !done
        }
        if first { action() }
    }
}

/// Every regular file below `path` whose content contains `needle` (symlinks are not followed).
func filesContaining(_ needle: String, below path: String) -> [String] {
    guard let enumerator = FileManager.default.enumerator(atPath: path) else { return [] }
    var found: [String] = []
    while let relative = enumerator.nextObject() as? String {
        let full = path + "/" + relative
        guard let info = lstatOf(full), (info.st_mode & S_IFMT) == S_IFREG else { continue }
        guard let data = FileManager.default.contents(atPath: full) else { continue }
        if String(decoding: data, as: UTF8.self).contains(needle) { found.append(relative) }
    }
    return found
}

/// The final state of `image`, or nil when its copy has not finished within `limit` (a copy thread stuck for good,
/// which the test must report rather than wait on for ever).
///
/// The limit is a watchdog only: a working copy answers as soon as it is done.
func finalState(of image: ImageRef, in backend: LocalBackend, within limit: Duration) async -> ImageState? {
    let gate = FirstAnswer<ImageState?>()
    return await withCheckedContinuation { continuation in
        gate.set(continuation)
        Task { gate.answer(await backend.awaitCompletion(of: image)) }
        Task {
            try? await Task.sleep(for: limit)
            gate.answer(nil)
        }
    }
}

/// Resumes a continuation with the first answer given; later answers are dropped.
final class FirstAnswer<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var continuation: CheckedContinuation<Value, Never>?
    private var early: Value??

    func set(_ continuation: CheckedContinuation<Value, Never>) {
        let pending: Value?? = lock.withLock {
            if let early { return early }
            self.continuation = continuation
            return nil
        }
        if let pending { continuation.resume(returning: pending!) }
    }

    func answer(_ value: Value) {
        let waiting: CheckedContinuation<Value, Never>? = lock.withLock {
            if let continuation {
                self.continuation = nil
                early = .some(value)
                return continuation
            }
            if early == nil { early = .some(value) }
            return nil
        }
        waiting?.resume(returning: value)
    }
}

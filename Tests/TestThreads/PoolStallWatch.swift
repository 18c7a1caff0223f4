import Foundation

/// A diagnosis aid, on when `SNAPCRON_TEST_STALL_DUMP` names a file: a thread of its own puts a probe job on the
/// cooperative pool every 0.2 s. Each wait over 1 s is logged to `<file>.log`; when one passes 3 s (at most every
/// 20 s), every thread's backtrace, taken by gdb, is appended to the file: what held the pool.
enum PoolStallWatch {
    /// Started by the first test that carries one of this module's traits.
    static let started: Bool = {
        guard let path = ProcessInfo.processInfo.environment["SNAPCRON_TEST_STALL_DUMP"], !path.isEmpty else {
            return false
        }
        Thread { watch(dumpingTo: path) }.start()
        return true
    }()

    private static func watch(dumpingTo path: String) {
        let lastProbeRan = ProbeTime()
        var lastDump = Date.distantPast
        while true {
            Thread.sleep(forTimeInterval: 0.2)
            Task.detached { lastProbeRan.set(Date()) }
            let waited = Date().timeIntervalSince(lastProbeRan.get())
            guard waited > 1 else { continue }
            append("pool waited \(String(format: "%.1f", waited)) s at \(Date())\n", to: path + ".log")
            guard waited > 3, Date().timeIntervalSince(lastDump) > 20 else { continue }
            lastDump = Date()
            append("=== pool waited \(waited) s at \(Date())\n", to: path)
            guard let file = FileHandle(forWritingAtPath: path) else { continue }
            file.seekToEndOfFile()
            let gdb = Process()
            gdb.executableURL = URL(fileURLWithPath: "/usr/bin/gdb")
            gdb.arguments = ["-p", "\(getpid())", "-batch", "-ex", "thread apply all bt 30"]
            gdb.standardOutput = file
            gdb.standardError = file
            if (try? gdb.run()) != nil { gdb.waitUntilExit() }
            try? file.close()
        }
    }

    private static func append(_ text: String, to path: String) {
        if !FileManager.default.fileExists(atPath: path) {
            FileManager.default.createFile(atPath: path, contents: nil)
        }
        guard let file = FileHandle(forWritingAtPath: path) else { return }
        file.seekToEndOfFile()
        file.write(Data(text.utf8))
        try? file.close()
    }
}

/// When the watcher's last probe ran.
private final class ProbeTime: @unchecked Sendable {  // guarded by the lock
    private let lock = NSLock()
    private var value = Date()

    func get() -> Date { lock.withLock { value } }
    func set(_ date: Date) { lock.withLock { value = date } }
}

import Foundation
import SystemdSandbox

/// A systemd 252 booted by `scripts/systemd-sandbox`, with snapcron installed into it by the Makefile's own
/// `install-files` rule, run inside (DESTDIR empty: systemd-sysusers, the catalog and daemon-reload for real).
/// The sandbox's /etc, /usr/local and /var are overlays whose writes land in its folder, so the state database
/// can be read from the host once the sandbox is stopped.
typealias ServiceSandbox = SystemdSandbox

extension SystemdSandbox {
    static let unit = "snapcron.service"

    /// Boots a sandbox and runs `make install-files` inside it with the binaries of this build.
    static func bootWithSnapcronInstalled() throws -> SystemdSandbox {
        let sandbox = try start()
        do { try sandbox.make("install-files") } catch {
            try? sandbox.stop()
            throw error
        }
        return sandbox
    }

    /// `systemctl show` properties of snapcron.service.
    func properties(_ names: String...) throws -> [String: String] { try properties(names, of: Self.unit) }

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
}

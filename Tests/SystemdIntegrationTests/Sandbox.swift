import Foundation
import SystemdSandbox

/// The probe's sandbox: the shared one, with the probe binary installed into its `/srv/bin`.
typealias Sandbox = SystemdSandbox

extension SystemdSandbox {
    /// Boots a sandbox and installs the probe binary into its `/srv/bin`.
    static func boot() throws -> SystemdSandbox {
        let sandbox = try start()
        try sandbox.succeed(["install-bin", sandbox.directory.path, probeExecutable().path])
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

    /// Installs a unit file with these contents into the sandbox's `/etc/systemd/system` and reloads systemd.
    func installUnit(named name: String, contents: String) throws {
        let file = directory.appendingPathComponent(name)
        try contents.write(to: file, atomically: true, encoding: .utf8)
        try succeed(["install-unit", directory.path, file.path])
    }
}

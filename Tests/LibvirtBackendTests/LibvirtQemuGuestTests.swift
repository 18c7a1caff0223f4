import Foundation
import Logging
import SnapcronConfig
import SnapcronCore
import SnapcronStore
import SnapcronTestKit
import SnapshotBackend
import TestThreads
import Testing

@testable import LibvirtBackend
@testable import LibvirtDescriptor
@testable import SnapcronDaemon

#if canImport(Glibc)
    import Glibc
#endif

/// libvirtd for the real-guest tests: the one already running, or one this process starts (as root, with the
/// packages of scripts/install-deps). Nil, with the reason, when neither can be had.
final class SystemLibvirtd: Sendable {
    static let uri = "qemu:///system"
    /// Whether these tests started libvirtd, and so may restart it.
    let startedHere: Bool

    private init(startedHere: Bool) {
        self.startedHere = startedHere
    }

    static let shared: Result<SystemLibvirtd, Unavailable> = start()

    struct Unavailable: Error, CustomStringConvertible {
        var description: String
    }

    private static func start() -> Result<SystemLibvirtd, Unavailable> {
        let needed = ["/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "/usr/bin/virsh", "/usr/bin/qemu-system-x86_64",
            "/usr/bin/qemu-img"]
        if let missing = needed.first(where: { !isExecutable($0) }) {
            return .failure(
                Unavailable(
                    description: "\(missing) is missing (apt-get install libvirt-daemon-system qemu-system-x86 "
                        + "qemu-utils; scripts/install-deps does)"))
        }
        if isAnswering() { return .success(SystemLibvirtd(startedHere: false)) }
        guard getuid() == 0 else {
            return .failure(Unavailable(description: "libvirtd is not running and only root may start it"))
        }
        do {
            try launch()
        } catch {
            return .failure(Unavailable(description: "cannot start libvirtd: \(error)"))
        }
        guard isAnswering(within: 60) else {
            return .failure(Unavailable(description: "libvirtd started but does not answer on \(uri) within 60 s"))
        }
        return .success(SystemLibvirtd(startedHere: true))
    }

    /// Starts virtlogd (QEMU's log sink; a second copy exits when one runs) and libvirtd as daemons.
    ///
    /// libvirtd runs in a mount namespace of its own where /dev/kvm cannot be opened and QEMU shares libvirtd's
    /// /dev: on a host without udev, /dev/kvm is root's alone, and libvirt then finds its cached QEMU capabilities
    /// stale and probes QEMU again (about 40 s) at every define. The test guests run under TCG anyway. Nothing of
    /// this is visible outside that namespace.
    private static func launch() throws {
        _ = try spawn(["/usr/sbin/virtlogd", "--daemon"])
        let script = """
            set -e
            touch /run/snapcron-test-no-kvm && chmod 000 /run/snapcron-test-no-kvm
            if [ -e /dev/kvm ]; then mount --bind /run/snapcron-test-no-kvm /dev/kvm; fi
            { cat /etc/libvirt/qemu.conf; echo 'namespaces = [ ]'; } >/run/snapcron-test-qemu.conf
            mount --bind /run/snapcron-test-qemu.conf /etc/libvirt/qemu.conf
            exec /usr/sbin/libvirtd --daemon
            """
        let status = try spawn(["/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", script])
        if status != 0 {
            throw Unavailable(
                description: "libvirtd --daemon exited with \(status) (see /var/log/libvirt/libvirtd.log)")
        }
    }

    /// Runs a daemon's starter and waits for it (not for the daemon it leaves behind), with stdin, stdout and
    /// stderr on /dev/null: a daemon that kept the test's pipes would hold their readers for ever. posix_spawn and
    /// waitpid rather than Foundation's Process, which here did not notice the starter's exit.
    private static func spawn(_ arguments: [String]) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        for descriptor: Int32 in [0, 1, 2] {
            let mode = descriptor == 0 ? O_RDONLY : O_WRONLY
            posix_spawn_file_actions_addopen(&actions, descriptor, "/dev/null", mode, 0)
        }
        var argv = arguments.map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid = pid_t()
        let spawned = posix_spawn(&pid, arguments[0], &actions, nil, &argv, environ)
        guard spawned == 0 else {
            throw Unavailable(description: "cannot run \(arguments[0]): \(String(cString: strerror(spawned)))")
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        // WIFEXITED / WEXITSTATUS, which Swift does not import.
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Whether libvirtd answers on ``uri``, asking until `seconds` have passed.
    private static func isAnswering(within seconds: Double = 0) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            // Bounded: a libvirtd that accepts but never answers must not hang the tests.
            if (try? runBlocking(["timeout", "20", "/usr/bin/virsh", "-c", uri, "version"]))?.status == 0 { return true }
            guard Date() < deadline else { return false }
            usleep(200_000)
        }
    }

    /// Stops libvirtd (SIGTERM, SIGKILL after 15 s, by the pid in its pid file) and starts it again; the guests
    /// keep running.
    func restart() throws {
        let text = try String(contentsOfFile: "/run/libvirtd.pid", encoding: .utf8)
        guard let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw Unavailable(description: "no pid in /run/libvirtd.pid: '\(text)'")
        }
        kill(pid, SIGTERM)
        let deadline = Date().addingTimeInterval(15)
        while kill(pid, 0) == 0, Date() < deadline { usleep(100_000) }
        if kill(pid, SIGKILL) == 0 { usleep(500_000) }
        try Self.launch()
        guard Self.isAnswering(within: 60) else { throw Unavailable(description: "libvirtd did not come back") }
    }
}

/// A running guest under TCG (no KVM needed) with one qcow2 disk and no operating system, defined for one test
/// and removed after it with its files.
final class TinyGuest: @unchecked Sendable {  // immutable
    let name: String
    let directory: ScratchDirectory
    let disk: String

    init(format: String = "qcow2") async throws {
        name = "snapcron-test-" + UUID().uuidString.prefix(8).lowercased()
        // Under /var/tmp, open to others: QEMU runs as libvirt-qemu and must reach the disk.
        directory = try ScratchDirectory(under: "/var/tmp")
        disk = directory.path + "/disk." + (format == "qcow2" ? "qcow2" : "img")
        try expectSuccess(await run(["/usr/bin/qemu-img", "create", "-q", "-f", format, disk, "16M"]))
        let definition = try directory.write(
            "domain.xml",
            """
            <domain type='qemu'>
              <name>\(name)</name>
              <memory unit='MiB'>32</memory>
              <vcpu>1</vcpu>
              <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
              <on_poweroff>destroy</on_poweroff>
              <devices>
                <emulator>/usr/bin/qemu-system-x86_64</emulator>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='\(format)'/>
                  <source file='\(disk)'/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                <video><model type='none'/></video>
                <memballoon model='none'/>
              </devices>
            </domain>
            """)
        try expectSuccess(await virsh("define", definition))
        try expectSuccess(await virsh("start", name))
    }

    deinit {
        _ = try? runBlocking(virshArguments(["destroy", name]))
        _ = try? runBlocking(virshArguments(["undefine", name, "--snapshots-metadata"]))
    }

    /// The files of the guest's disk as libvirt sees them, the one it writes to first.
    func chain() async throws -> [String] {
        let xml = try await virsh("dumpxml", name)
        try expectSuccess(xml)
        return try LibvirtXML.disks(inDomain: xml.output).first?.chain ?? []
    }

    /// The files of the chain that starts at `file`, as qemu-img reads them from the files themselves.
    static func backingChain(of file: String) async throws -> [String] {
        let info = try await run(["/usr/bin/qemu-img", "info", "-U", "--backing-chain", "--output=json", file])
        try expectSuccess(info)
        let images = try JSONSerialization.jsonObject(with: Data(info.output.utf8)) as? [[String: Any]] ?? []
        return images.compactMap { $0["filename"] as? String }
    }

    /// Internal snapshot tags inside a qcow2 file.
    static func internalSnapshots(of file: String) async throws -> [String] {
        let info = try await run(["/usr/bin/qemu-img", "info", "-U", "--output=json", file])
        try expectSuccess(info)
        let object = try JSONSerialization.jsonObject(with: Data(info.output.utf8)) as? [String: Any]
        return (object?["snapshots"] as? [[String: Any]] ?? []).compactMap { $0["name"] as? String }
    }
}

@discardableResult
func virsh(_ arguments: String...) async throws -> CommandResult {
    try await run(virshArguments(arguments))
}

/// virsh on the system URI, bounded: a guest's first start waits for libvirtd to probe QEMU, which is slow on a
/// loaded machine.
func virshArguments(_ arguments: [String]) -> [String] {
    ["timeout", "120", "/usr/bin/virsh", "-c", SystemLibvirtd.uri] + arguments
}

struct CommandFailed: Error, CustomStringConvertible {
    var description: String
}

func expectSuccess(_ result: CommandResult) throws {
    if result.status != 0 { throw CommandFailed(description: "exit \(result.status): \(result.output)") }
}

/// The backend on a real guest: libvirtd and QEMU (TCG), as root. Skipped, with the reason printed, where libvirtd
/// cannot be had.
@Suite(.onOwnThreads, .serialized) struct LibvirtQemuGuestTests {
    /// The running libvirtd, or nil after printing why these tests skip.
    func libvirtd(_ test: String = #function) async throws -> SystemLibvirtd? {
        // Its first use starts libvirtd and waits for it: not on the cooperative pool.
        switch try await offloaded({ SystemLibvirtd.shared }) {
        case .success(let daemon): return daemon
        case .failure(let reason):
            print("LibvirtQemuGuestTests.\(test) skipped: \(reason)")
            return nil
        }
    }

    @Test func diskOnlySnapshotsOfARunningGuestMergeBackWhenDeleted() async throws {
        guard try await libvirtd() != nil else { return }
        let guest = try await TinyGuest()
        let (logger, messages) = RecordingLogHandler.make()
        let backend = LibvirtBackend.make(uri: SystemLibvirtd.uri, mode: .diskOnly, quiesce: .auto)
        let folder = guest.directory.path
        let first = "snapcron-nightly-20261207T010000Z"
        let second = "snapcron-nightly-20261208T010000Z"

        let one = try await backend.createImage(
            target: guest.name, name: first, description: "created by snapcron (snapcron:job=nightly run=1)",
            logger: logger)
        #expect(one.state == .active)
        // No guest agent here: `auto` logs it and takes a crash-consistent snapshot.
        #expect(
            messages().contains { $0.contains("Snapshot not quiesced, taking a crash-consistent one") },
            "\(messages())")
        #expect(try await guest.chain() == ["\(folder)/disk.\(first).qcow2", guest.disk])
        // Idempotent by name: no second overlay.
        #expect(try await backend.create(target: guest.name, name: first, description: "", logger: quiet) == one.ref)
        #expect(try await guest.chain().count == 2)

        let two = try await backend.create(target: guest.name, name: second, description: "run 2", logger: quiet)
        let grown = ["\(folder)/disk.\(second).qcow2", "\(folder)/disk.\(first).qcow2", guest.disk]
        #expect(try await guest.chain() == grown)
        #expect(try await TinyGuest.backingChain(of: grown[0]) == grown)
        let listed = try await backend.list(target: guest.name, logger: quiet)
        #expect(Set(listed.map(\.name)) == [first, second])
        #expect(listed.allSatisfy { $0.description.hasSuffix("[snapcron]") && $0.state == .active })
        #expect(try await backend.status(one.ref, logger: quiet) == .active)

        // The older one sits under the newer overlay: merged into the disk below it while the guest runs.
        try await backend.delete(one.ref, logger: quiet)
        #expect(try await backend.status(one.ref, logger: quiet) == .gone)
        #expect(try await guest.chain() == ["\(folder)/disk.\(second).qcow2", guest.disk])
        #expect(!FileManager.default.fileExists(atPath: "\(folder)/disk.\(first).qcow2"))

        // The newest overlay is the one the guest writes to: an active commit, then a pivot back to the disk.
        try await backend.delete(two, logger: quiet)
        #expect(try await backend.status(two, logger: quiet) == .gone)
        #expect(try await guest.chain() == [guest.disk])
        #expect(try await TinyGuest.backingChain(of: guest.disk) == [guest.disk])
        #expect(!FileManager.default.fileExists(atPath: "\(folder)/disk.\(second).qcow2"))
        #expect(try await backend.list(target: guest.name, logger: quiet).isEmpty)
        try await backend.delete(two, logger: quiet)  // already gone: fine
    }

    @Test func overlaysGoToOverlayDirWhenSet() async throws {
        guard try await libvirtd() != nil else { return }
        let guest = try await TinyGuest()
        let overlays = try ScratchDirectory(under: "/var/tmp")
        let backend = LibvirtBackend.make(
            uri: SystemLibvirtd.uri, mode: .diskOnly, quiesce: .never, overlayDirectory: overlays.path)
        let image = try await backend.create(target: guest.name, name: "s1", description: "", logger: quiet)
        let overlay = "\(overlays.path)/\(guest.name).vda.s1.qcow2"
        #expect(try await guest.chain() == [overlay, guest.disk])
        try await backend.delete(image, logger: quiet)
        #expect(try await guest.chain() == [guest.disk])
        #expect(!FileManager.default.fileExists(atPath: overlay))
    }

    @Test func quiesceAlwaysFailsWithoutAGuestAgent() async throws {
        guard try await libvirtd() != nil else { return }
        let guest = try await TinyGuest()
        let backend = LibvirtBackend.make(uri: SystemLibvirtd.uri, mode: .diskOnly, quiesce: .always)
        let error = try await #require(throws: SnapshotBackendError.self) {
            _ = try await backend.create(target: guest.name, name: "s1", description: "", logger: quiet)
        }
        #expect(!error.isTransient)
        #expect(
            error.description.hasPrefix(
                "kvm create failed for \(guest.name): quiesce = \"always\" and the snapshot could not be quiesced: "),
            "\(error)")
        #expect(error.description.contains("agent"), "\(error)")
        #expect(try await backend.list(target: guest.name, logger: quiet).isEmpty)
        #expect(try await guest.chain() == [guest.disk])
    }

    @Test func fullSnapshotsAreInternalToTheQcow2Disk() async throws {
        guard try await libvirtd() != nil else { return }
        let guest = try await TinyGuest()
        let backend = LibvirtBackend.make(uri: SystemLibvirtd.uri, mode: .full)
        let image = try await backend.create(target: guest.name, name: "s1", description: "full", logger: quiet)
        #expect(try await TinyGuest.internalSnapshots(of: guest.disk) == ["s1"])
        #expect(try await guest.chain() == [guest.disk])
        try await backend.delete(image, logger: quiet)
        #expect(try await TinyGuest.internalSnapshots(of: guest.disk).isEmpty)

        // Undefined while it runs (the snapshot's metadata goes with it): its images are gone.
        let kept = try await backend.create(target: guest.name, name: "s2", description: "", logger: quiet)
        try expectSuccess(await virsh("undefine", guest.name, "--snapshots-metadata"))
        try expectSuccess(await virsh("destroy", guest.name))
        #expect(try await backend.status(kept, logger: quiet) == .gone)
    }

    @Test func fullModeRefusesARawDisk() async throws {
        guard try await libvirtd() != nil else { return }
        let guest = try await TinyGuest(format: "raw")
        let backend = LibvirtBackend.make(uri: SystemLibvirtd.uri, mode: .full)
        let error = try await #require(throws: SnapshotBackendError.self) {
            _ = try await backend.create(target: guest.name, name: "s1", description: "", logger: quiet)
        }
        #expect(!error.isTransient)
        #expect(
            error.description
                == "kvm create failed for \(guest.name): mode = \"full\" needs every disk in qcow2, but disk vda of "
                + "domain \(guest.name) (\(guest.disk)) is raw; use mode = \"disk-only\" for it (permanent)")
        // disk-only takes any format.
        let diskOnly = LibvirtBackend.make(uri: SystemLibvirtd.uri, mode: .diskOnly, quiesce: .never)
        let image = try await diskOnly.create(target: guest.name, name: "s1", description: "", logger: quiet)
        try await diskOnly.delete(image, logger: quiet)
        #expect(try await guest.chain() == [guest.disk])
    }

    /// The whole way: snapcron.toml read, the backend built by the daemon's factory, three fires of a job with
    /// `keep=2` through the scheduler; retention deletes the oldest snapshot and its overlay is merged into the disk.
    @Test func retentionThroughTheSchedulerMergesTheOldestOverlay() async throws {
        guard try await libvirtd() != nil else { return }
        let guest = try await TinyGuest()
        let config = try SnapcronConfig.parse(
            """
            [backends.kvm]
            type = "libvirt"
            mode = "disk-only"
            quiesce = "never"
            """, file: "snapcron.toml")
        let backends = try LiveBackends.make(config)
        let start = Date(timeIntervalSince1970: 1_780_000_000)
        let schedule = try ScheduleFile.parse(
            text: "@yearly nightly kvm:\(guest.name) keep=2\n", file: "schedule", config: config, now: start)
        let clock = ManualClock(now: start)
        let store = try SnapcronDatabase.inMemory()
        let scheduler = SchedulerService(
            jobs: schedule.jobs, store: store, backends: backends, clock: clock, logger: quiet)
        let loop = Task { try await scheduler.run() }
        defer { loop.cancel() }

        var names: [String] = []
        for _ in 0..<3 {
            let run = try await scheduler.triggerAndFinish(job: "nightly", store: store, clock: clock, minutes: 200)
            names.append(run.imageName ?? "")
            // Retention runs after the run; its delete merges in libvirtd's time, so wait for the chain too.
            for _ in 0..<250 {
                await scheduler.waitUntilIdle()
                if try await guest.chain().count <= 3 { break }
                try await Task.sleep(for: .milliseconds(20))
            }
            clock.advance(by: 60)
        }
        let runs = try store.runs(job: "nightly")
        #expect(runs.count == 3)
        #expect(runs.allSatisfy { $0.state == .succeeded }, "\(runs.map { "\($0.state) \($0.error ?? "")" })")
        let folder = guest.directory.path
        #expect(try await guest.chain() == [
            "\(folder)/disk.\(names[2]).qcow2", "\(folder)/disk.\(names[1]).qcow2", guest.disk,
        ])
        #expect(!FileManager.default.fileExists(atPath: "\(folder)/disk.\(names[0]).qcow2"))
        let images = try store.images(job: "nightly", includeDeleted: true)
        #expect(images.filter { $0.deletedAt != nil }.map(\.name) == [names[0]])
    }

    @Test func reconnectsAfterLibvirtdRestarts() async throws {
        guard let libvirtd = try await libvirtd() else { return }
        guard libvirtd.startedHere else {
            print("LibvirtQemuGuestTests.reconnectsAfterLibvirtdRestarts skipped: libvirtd was running before the tests")
            return
        }
        let guest = try await TinyGuest()
        let (logger, messages) = RecordingLogHandler.make()
        let backend = LibvirtBackend.make(uri: SystemLibvirtd.uri, mode: .diskOnly, quiesce: .never)
        let image = try await backend.create(target: guest.name, name: "s1", description: "", logger: logger)
        try await offloaded { try libvirtd.restart() }
        // The same backend, its connection broken by the restart: the next calls reconnect by themselves.
        #expect(try await backend.status(image, logger: logger) == .active)
        #expect(messages().contains { $0.contains("reconnecting") }, "\(messages())")
        try await backend.delete(image, logger: logger)
        #expect(try await guest.chain() == [guest.disk])
    }
}

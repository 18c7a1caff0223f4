import Foundation
import Testing

/// Whether libvirtd and QEMU are installed (scripts/install-deps installs them).
let hasLibvirtd = ["/usr/sbin/libvirtd", "/usr/sbin/virtlogd", "/usr/bin/virsh", "/usr/bin/qemu-system-x86_64"]
    .allSatisfy { FileManager.default.isExecutableFile(atPath: $0) }

/// The libvirt backend under the shipped hardened unit, with libvirtd and a guest inside the same booted systemd:
/// the default unit cannot reach libvirtd's socket, the drop-in of docs/backends.md can, and then runs create,
/// retention and the merge of an overlay from snapcron's own user.
///
/// Part of ``ServiceTests`` (an extension), so that it is serialized with them: these tests block their thread
/// while the sandbox works, and one more such suite beside them would take every thread of the cooperative pool
/// of a 2-core machine from the other suites.
extension ServiceTests {
    static let overlays = "/var/lib/snapcron-overlays"
    static let guestDisk = "/var/lib/libvirt/images/web01.qcow2"

    @Test(.enabled(if: hasLibvirtd, "needs libvirt-daemon-system and qemu-system-x86 (scripts/install-deps)"))
    func theDocumentedDropInLetsTheHardenedUnitSnapshotAndMergeAGuest() throws {
        let sandbox = try ServiceSandbox.bootWithSnapcronInstalled()
        defer { sandbox.remove() }
        do {
            try Self.startLibvirtdAndGuest(in: sandbox)
            try sandbox.writeFile(
                "/etc/snapcron/snapcron.toml",
                """
                [backends.kvm]
                type = "libvirt"
                overlay_dir = "\(Self.overlays)"
                quiesce = "never"

                """)
            try sandbox.writeFile("/etc/snapcron/schedule", "@yearly web kvm:web01 keep=1 retries=0\n")
            // The documented overlay folder: snapcron's group may remove overlays, QEMU may reach them.
            try sandbox.exec("install", "-d", "-m", "0771", "-o", "root", "-g", "snapcron", Self.overlays)
            try sandbox.exec("systemctl", "start", Self.unit)

            // The default unit: the socket is root:libvirt 0770 and snapcron is not in that group.
            let refused = try sandbox.attempt("snapcronctl", "trigger", "web", "--wait")
            #expect(refused.status != 0)
            #expect(
                (refused.standardOutput + refused.standardError).contains(
                    "cannot connect to libvirt at qemu:///system: Failed to connect socket to "
                        + "'/var/run/libvirt/libvirt-sock': Permission denied (transient)"),
                "\(refused)")

            try sandbox.addDropIn(
                named: "libvirt",
                """
                SupplementaryGroups=libvirt
                PrivateUsers=no
                ReadWritePaths=\(Self.overlays)

                """)
            try sandbox.exec("systemctl", "restart", Self.unit)
            usleep(1_100_000)  // a run is claimed per second: not the refused run's second
            let first = try sandbox.exec("snapcronctl", "trigger", "web", "--wait")
            #expect(first.contains("ACTIVE"), "\(first)")
            let firstOverlays = try sandbox.exec("ls", Self.overlays)
            usleep(1_100_000)  // image names carry the second, and so does a run's claim
            let second = try sandbox.exec("snapcronctl", "trigger", "web", "--wait")
            #expect(second.contains("ACTIVE"), "\(second)")

            // Retention (keep=1) deleted the first snapshot: its overlay merged into the disk and removed by
            // snapcron's user; the guest runs on the second overlay over the disk.
            try sandbox.wait("the first snapshot to be deleted") {
                try sandbox.exec("ls", Self.overlays).split(separator: "\n").count == 1
            }
            let overlay = try sandbox.exec("ls", Self.overlays).trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(!firstOverlays.contains(overlay), "the kept overlay is the second run's")
            let chain = try sandbox.exec(
                "qemu-img", "info", "-U", "--backing-chain", "\(Self.overlays)/\(overlay)")
            #expect(
                chain.split(separator: "\n").filter { $0.hasPrefix("image: ") }
                    == ["image: \(Self.overlays)/\(overlay)", "image: \(Self.guestDisk)"], "\(chain)")
            let snapshots = try sandbox.exec("virsh", "-c", "qemu:///system", "snapshot-list", "web01", "--name")
            #expect(snapshots.split(separator: "\n").count == 1, "\(snapshots)")
            let journal = try sandbox.exec("journalctl", "-u", Self.unit, "-o", "cat")
            #expect(journal.contains("Snapshot deleted"), "\(journal)")
            try sandbox.exec("systemctl", "stop", Self.unit)
        } catch {
            try? sandbox.stop()
            throw error
        }
        try sandbox.stop()
    }

    /// libvirtd and virtlogd as transient services inside, with the socket of group `libvirt` (mode 0770) and no
    /// polkit (not installed here): access is the socket's permission alone. QEMU shares libvirtd's /dev (the
    /// sandbox's /dev is private already). Then a guest under TCG with one qcow2 disk and no operating system.
    static func startLibvirtdAndGuest(in sandbox: ServiceSandbox) throws {
        try sandbox.writeFile(
            "/etc/libvirt/libvirtd.conf",
            """
            unix_sock_group = "libvirt"
            unix_sock_rw_perms = "0770"
            auth_unix_rw = "none"
            auth_unix_ro = "none"

            """)
        try sandbox.exec("sh", "-c", "printf 'namespaces = [ ]\\n' >>/etc/libvirt/qemu.conf")
        try sandbox.exec("systemd-run", "--unit=test-virtlogd", "/usr/sbin/virtlogd")
        try sandbox.exec("systemd-run", "--unit=test-libvirtd", "/usr/sbin/libvirtd")
        try sandbox.wait("libvirtd to answer") {
            (try? sandbox.exec("timeout", "20", "virsh", "-c", "qemu:///system", "version")) != nil
        }
        try sandbox.exec("install", "-d", "/var/lib/libvirt/images")
        try sandbox.exec("qemu-img", "create", "-q", "-f", "qcow2", Self.guestDisk, "16M")
        try sandbox.writeFile(
            "/var/lib/libvirt/images/web01.xml",
            """
            <domain type='qemu'>
              <name>web01</name>
              <memory unit='MiB'>32</memory>
              <vcpu>1</vcpu>
              <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
              <devices>
                <emulator>/usr/bin/qemu-system-x86_64</emulator>
                <disk type='file' device='disk'>
                  <driver name='qemu' type='qcow2'/>
                  <source file='\(Self.guestDisk)'/>
                  <target dev='vda' bus='virtio'/>
                </disk>
                <video><model type='none'/></video>
                <memballoon model='none'/>
              </devices>
            </domain>

            """)
        try sandbox.exec("virsh", "-c", "qemu:///system", "define", "/var/lib/libvirt/images/web01.xml")
        try sandbox.exec("timeout", "120", "virsh", "-c", "qemu:///system", "start", "web01")
    }
}

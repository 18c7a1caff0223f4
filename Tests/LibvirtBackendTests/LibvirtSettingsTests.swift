import BackendTypes
import Foundation
import SnapcronConfig
import SnapcronCore
import Testing

@testable import LibvirtBackend
@testable import LibvirtDescriptor

/// `[backends.NAME] type = "libvirt"` read from snapcron.toml, and the XML the backend writes and reads.
@Suite struct LibvirtSettingsTests {
    func errors(_ text: String) -> [String] {
        do {
            _ = try SnapcronConfig.parse(text, file: "snapcron.toml")
            return []
        } catch {
            return error.map(\.description)
        }
    }

    @Test func readsEverySetting() throws {
        let config = try SnapcronConfig.parse(
            """
            [backends.kvm]
            type = "libvirt"
            uri = "qemu+ssh://root@host1/system"
            mode = "disk-only"
            quiesce = "always"
            overlay_dir = "/srv/overlays"
            max_concurrent = 2

            [backends.lab]
            type = "libvirt"
            """, file: "snapcron.toml")
        let kvm = try #require(config.backends["kvm"])
        #expect(kvm.type == .libvirt)
        #expect(kvm.maxConcurrent == 2)
        #expect(
            kvm.libvirt
                == LibvirtBackendSettings(
                    uri: "qemu+ssh://root@host1/system", mode: .diskOnly, quiesce: .always,
                    overlayDirectory: "/srv/overlays"))
        // The defaults.
        #expect(
            config.backends["lab"]?.libvirt
                == LibvirtBackendSettings(uri: "qemu:///system", mode: .diskOnly, quiesce: .auto))
        let backend = try #require(BackendType.libvirt.factory).makeBackend(
            kvm, context: BackendContext(stateDirectory: "/var/lib/snapcron", environment: [:]))
        #expect(backend.name == "kvm")
        #expect((backend as? LibvirtBackend)?.settings.uri == "qemu+ssh://root@host1/system")
    }

    @Test func reportsEveryProblemWithItsKey() {
        #expect(
            errors(
                """
                [backends.kvm]
                type = "libvirt"
                uri = "/var/run/libvirt/libvirt-sock"
                mode = "snapshot"
                quiesce = true
                overlay_dir = "overlays"
                max_concurrent = 0
                target = "web01"
                """)
                == [
                    "snapcron.toml: error: backends.kvm: unknown key 'target'\nsnapcron.toml: note: known keys are "
                        + "type, max_concurrent, max_concurrent_creates, hooks, uri, mode, quiesce, overlay_dir",
                    "snapcron.toml: error: backends.kvm.max_concurrent: expected an integer of at least 1, got 0",
                    "snapcron.toml: error: backends.kvm.uri: '/var/run/libvirt/libvirt-sock' is not a libvirt "
                        + "connection URI such as \"qemu:///system\"",
                    "snapcron.toml: error: backends.kvm.mode: expected \"disk-only\" or \"full\", got \"snapshot\"",
                    "snapcron.toml: error: backends.kvm.quiesce: expected \"auto\" or \"always\" or \"never\", got true",
                    "snapcron.toml: error: backends.kvm.overlay_dir: expected an absolute path, got 'overlays'",
                ])
    }

    @Test func refusesSettingsThatFullModeWouldIgnore() {
        let found = errors(
            """
            [backends.kvm]
            type = "libvirt"
            mode = "full"
            quiesce = "always"
            overlay_dir = "/srv/overlays"
            """)
        #expect(
            found == [
                "snapcron.toml: error: backends.kvm.quiesce: \"always\" needs mode = \"disk-only\"\n"
                    + "snapcron.toml: note: full snapshots save the guest's memory too and never ask its agent to quiesce",
                "snapcron.toml: error: backends.kvm.overlay_dir: is used only by mode = \"disk-only\"\n"
                    + "snapcron.toml: note: full snapshots are internal: they live inside the guest's qcow2 disks",
            ])
    }

    @Test func targetRule() {
        #expect(TargetRule.libvirt.problem(with: "web01") == nil)
        #expect(TargetRule.libvirt.problem(with: "6695eb01-f6a4-8304-79aa-97f2502e193f") == nil)
        #expect(TargetRule.libvirt.problem(with: "") != nil)
        #expect(TargetRule.libvirt.problem(with: "vm/1") == "'vm/1' contains '/', which no libvirt domain name has")
    }

    @Test func snapshotDefinitionEscapesAndListsEveryDisk() {
        let xml = LibvirtXML.snapshotDefinition(
            name: "s<1>", description: "a & 'b'",
            disks: [.external(disk: "vda", overlay: "/srv/vm/web.s1.qcow2"), .excluded(disk: "hdc")])
        #expect(
            xml == """
                <domainsnapshot>
                  <name>s&lt;1&gt;</name>
                  <description>a &amp; &apos;b&apos;</description>
                  <memory snapshot='no'/>
                  <disks>
                    <disk name='vda' snapshot='external' type='file'><driver type='qcow2'/><source file='/srv/vm/web.s1.qcow2'/></disk>
                    <disk name='hdc' snapshot='no'/>
                  </disks>
                </domainsnapshot>

                """)
    }

    @Test func readsDisksWithTheirChainsAndSnapshotsWithTheirOverlays() throws {
        let disks = try LibvirtXML.disks(
            inDomain: """
                <domain type='kvm'><name>web</name><devices>
                  <disk type='file' device='disk'>
                    <driver name='qemu' type='qcow2'/>
                    <source file='/srv/vm/web.s2.qcow2'/>
                    <backingStore type='file'><format type='qcow2'/><source file='/srv/vm/web.s1.qcow2'/>
                      <backingStore type='file'><format type='qcow2'/><source file='/srv/vm/web.qcow2'/><backingStore/></backingStore>
                    </backingStore>
                    <target dev='vda' bus='virtio'/>
                  </disk>
                  <disk type='block' device='disk'><driver type='raw'/><source dev='/dev/vg/data'/><target dev='vdb'/></disk>
                  <disk type='file' device='cdrom'><target dev='hdc'/><readonly/></disk>
                </devices></domain>
                """)
        #expect(disks.map(\.target) == ["vda", "vdb", "hdc"])
        #expect(disks[0].chain == ["/srv/vm/web.s2.qcow2", "/srv/vm/web.s1.qcow2", "/srv/vm/web.qcow2"])
        #expect(disks[1].chain == ["/dev/vg/data"])
        #expect(disks[1].type == "block")
        #expect(disks.map(\.isSnapshotted) == [true, true, false])
        #expect(
            try LibvirtBackend.overlayPath(for: disks[0], domain: "web", snapshot: "s3", directory: nil)
                == "/srv/vm/web.s3.qcow2")
        #expect(
            try LibvirtBackend.overlayPath(for: disks[1], domain: "web", snapshot: "s3", directory: "/srv/ov/")
                == "/srv/ov/web.vdb.s3.qcow2")
        #expect(throws: LibvirtProblem.self) {
            try LibvirtBackend.overlayPath(for: disks[1], domain: "web", snapshot: "s3", directory: nil)
        }

        let record = try LibvirtXML.snapshot(
            """
            <domainsnapshot><name>s2</name><description>nightly [snapcron]</description>
              <creationTime>1796622067</creationTime>
              <disks><disk name='vda' snapshot='external' type='file'><source file='/srv/vm/web.s2.qcow2'/></disk>
                <disk name='hdc' snapshot='no'/></disks>
              <domain><devices><disk><source file='/srv/vm/web.s1.qcow2'/><target dev='vda'/></disk></devices></domain>
            </domainsnapshot>
            """)
        #expect(record.name == "s2")
        #expect(record.description == "nightly [snapcron]")
        #expect(record.createdAt == Date(timeIntervalSince1970: 1_796_622_067))
        #expect(record.overlays == [SnapshotRecord.Overlay(disk: "vda", file: "/srv/vm/web.s2.qcow2")])
    }
}

import CLibvirtLoader
import Foundation
import Logging
import SnapcronTestKit
import SnapshotBackend
import Testing

@testable import LibvirtBackend
@testable import LibvirtDescriptor

/// The backend against libvirt's test driver: real libvirt code in-process (snapshot XML parsing and checking,
/// snapshot lists, errors), no hypervisor and no libvirtd.
///
/// Every connection to a `test:///FILE` URI gets a private copy of the domains in FILE, so a backend holds its own
/// world for as long as it lives. The test driver of libvirt 9 takes internal (`full`) snapshots only: it refuses
/// `VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY` and has no block commit, so `disk-only` is proven on a real guest
/// (``LibvirtQemuGuestTests``).
@Suite struct LibvirtTestDriverTests {
    /// Two running guests with one qcow2 disk each, and one with a raw disk.
    static let nodeXML = """
        <node>
          <domain type='test'>
            <name>web01</name>
            <uuid>6695eb01-f6a4-8304-79aa-97f2502e193f</uuid>
            <memory>65536</memory>
            <os><type>hvm</type></os>
            <devices>
              <disk type='file' device='disk'>
                <driver name='qemu' type='qcow2'/>
                <source file='/srv/vm/web01.qcow2'/>
                <target dev='vda' bus='virtio'/>
              </disk>
              <disk type='file' device='cdrom'>
                <driver name='qemu' type='raw'/>
                <source file='/srv/iso/installer.iso'/>
                <target dev='hdc' bus='ide'/>
                <readonly/>
              </disk>
            </devices>
          </domain>
          <domain type='test'>
            <name>web02</name>
            <uuid>0f3a1c9e-2b7d-4e55-9a61-3c2d8e7f1a04</uuid>
            <memory>65536</memory>
            <os><type>hvm</type></os>
            <devices>
              <disk type='file' device='disk'>
                <driver name='qemu' type='qcow2'/>
                <source file='/srv/vm/web02.qcow2'/>
                <target dev='vda' bus='virtio'/>
              </disk>
            </devices>
          </domain>
          <domain type='test'>
            <name>rawdb</name>
            <memory>65536</memory>
            <os><type>hvm</type></os>
            <devices>
              <disk type='file' device='disk'>
                <driver name='qemu' type='qcow2'/>
                <source file='/srv/vm/rawdb-system.qcow2'/>
                <target dev='vda' bus='virtio'/>
              </disk>
              <disk type='file' device='disk'>
                <driver name='qemu' type='raw'/>
                <source file='/srv/vm/rawdb-data.img'/>
                <target dev='vdb' bus='virtio'/>
              </disk>
            </devices>
          </domain>
        </node>
        """

    let directory: ScratchDirectory
    let uri: String

    init() throws {
        directory = try ScratchDirectory()
        uri = "test://" + (try directory.write("node.xml", Self.nodeXML))
    }

    @Test func passesTheBackendConformanceSuite() async throws {
        let uri = uri
        let failures = await SnapshotBackendConformance(
            makeBackend: { LibvirtBackend.make(uri: uri) }, targets: ("web01", "web02")
        ).run()
        #expect(failures.isEmpty, "\(failures)")
    }

    @Test func createIsActiveAtOnceAndCarriesTheMarkerAndTheRunsDescription() async throws {
        let backend = LibvirtBackend.make(uri: uri)
        let before = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))
        let created = try await backend.createImage(
            target: "web01", name: "snapcron-nightly-20261207T010000Z",
            description: "created by snapcron (snapcron:job=nightly run=7)", logger: quiet)
        #expect(created.state == .active)
        #expect(created.ref.id == "6695eb01-f6a4-8304-79aa-97f2502e193f/snapcron-nightly-20261207T010000Z")
        let listed = try await backend.list(target: "web01", logger: quiet)
        let entry = try #require(listed.first)
        #expect(listed.count == 1)
        #expect(entry.name == "snapcron-nightly-20261207T010000Z")
        #expect(entry.description == "created by snapcron (snapcron:job=nightly run=7) [snapcron]")
        #expect(entry.target == "web01")
        // libvirt's creation time, in whole seconds, between the call and now (however slow the machine).
        let createdAt = try #require(entry.createdAt)
        #expect(createdAt >= before && createdAt <= Date())
    }

    @Test func aTargetByUUIDIsTheSameDomain() async throws {
        let backend = LibvirtBackend.make(uri: uri)
        let image = try await backend.create(
            target: "6695eb01-f6a4-8304-79aa-97f2502e193f", name: "by-uuid", description: "", logger: quiet)
        #expect(try await backend.list(target: "web01", logger: quiet).map(\.id) == [image])
        #expect(try await backend.status(image, logger: quiet) == .active)
        // The same name through the other spelling is the same image.
        #expect(try await backend.create(target: "web01", name: "by-uuid", description: "", logger: quiet) == image)
    }

    @Test func unknownDomainFailsPermanentlyNamingIt() async throws {
        let backend = LibvirtBackend.make(uri: uri)
        let error = try await #require(throws: SnapshotBackendError.self) {
            _ = try await backend.create(target: "web99", name: "s1", description: "", logger: quiet)
        }
        #expect(!error.isTransient)
        #expect(error.target == "web99")
        #expect(error.description.contains("no domain 'web99' on \(uri)"), "\(error)")
        #expect(try await backend.list(target: "web99", logger: quiet).isEmpty)
    }

    @Test func fullModeRefusesARawDiskNamingDomainAndDisk() async throws {
        let backend = LibvirtBackend.make(uri: uri, mode: .full)
        let error = try await #require(throws: SnapshotBackendError.self) {
            _ = try await backend.create(target: "rawdb", name: "s1", description: "", logger: quiet)
        }
        #expect(!error.isTransient)
        #expect(
            error.description
                == "kvm create failed for rawdb: mode = \"full\" needs every disk in qcow2, but disk vdb of domain "
                + "rawdb (/srv/vm/rawdb-data.img) is raw; use mode = \"disk-only\" for it (permanent)")
        #expect(try await backend.list(target: "rawdb", logger: quiet).isEmpty)
    }

    @Test func unreachableLibvirtdIsATransientErrorNamingTargetAndURI() async throws {
        let uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
        let backend = LibvirtBackend.make(uri: uri, mode: .diskOnly)
        let error = try await #require(throws: SnapshotBackendError.self) {
            _ = try await backend.create(target: "web01", name: "s1", description: "", logger: quiet)
        }
        #expect(error.isTransient)
        #expect(error.target == "web01")
        #expect(error.description.hasPrefix("kvm create failed for web01: cannot connect to libvirt at \(uri): "))
        #expect(error.description.contains("/nonexistent/libvirt-sock"), "\(error)")
        let statusError = try await #require(throws: SnapshotBackendError.self) {
            _ = try await backend.status(
                ImageRef(id: "6695eb01-f6a4-8304-79aa-97f2502e193f/s1"), logger: quiet)
        }
        #expect(statusError.isTransient, "an unreachable libvirtd must never read as a gone image")
    }

    @Test func deleteRefusesASnapshotWithoutTheMarker() async throws {
        let backend = LibvirtBackend.make(uri: uri)
        // A snapshot someone took by hand, on the backend's own connection (the test driver's state is per
        // connection).
        try await backend.connection.perform(logger: quiet) { session in
            let domain = try #require(try session.domain("web01"))
            _ = try domain.createSnapshot(
                xml: LibvirtXML.snapshotDefinition(name: "before-upgrade", description: "by hand", disks: nil),
                flags: 0)
        }
        let image = ImageRef(id: "6695eb01-f6a4-8304-79aa-97f2502e193f/before-upgrade")
        let error = try await #require(throws: SnapshotBackendError.self) {
            try await backend.delete(image, logger: quiet)
        }
        #expect(!error.isTransient)
        #expect(error.description.contains("refusing to delete snapshot 'before-upgrade' of domain web01"), "\(error)")
        #expect(try await backend.status(image, logger: quiet) == .active)
        #expect(try await backend.list(target: "web01", logger: quiet).map(\.name) == ["before-upgrade"])
    }

    @Test func imagesOfAnUndefinedDomainAreGone() async throws {
        let backend = LibvirtBackend.make(uri: uri)
        let image = try await backend.create(target: "web02", name: "s1", description: "", logger: quiet)
        try await backend.connection.perform(logger: quiet) { session in
            let domain = try #require(try session.domain("web02"))
            #expect(snapcron_virDomainDestroy(domain.pointer) == 0)
            #expect(snapcron_virDomainUndefineFlags(domain.pointer, VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA.rawValue) == 0)
        }
        #expect(try await backend.status(image, logger: quiet) == .gone)
        try await backend.delete(image, logger: quiet)
        #expect(try await backend.list(target: "web02", logger: quiet).isEmpty)
    }

    @Test(arguments: [
        "", "not-a-uuid/x", "6695eb01-f6a4-8304-79aa-97f2502e193f/", "6695eb01-f6a4-8304-79aa-97f2502e193f/nope",
    ])
    func unknownImageIdsAreGone(_ id: String) async throws {
        let backend = LibvirtBackend.make(uri: uri)
        #expect(try await backend.status(ImageRef(id: id), logger: quiet) == .gone)
        try await backend.delete(ImageRef(id: id), logger: quiet)
    }

    @Test func aReconnectedBackendAnswersAgain() async throws {
        let backend = LibvirtBackend.make(uri: uri)
        #expect(try await backend.list(target: "web01", logger: quiet).isEmpty)
        await backend.connection.disconnect()
        // The test driver's state lives with its connection: a new connection starts from the file again.
        let image = try await backend.create(target: "web01", name: "after", description: "", logger: quiet)
        #expect(try await backend.status(image, logger: quiet) == .active)
    }

    @Test func badTargetsAreRejectedWithoutAConnection() {
        let backend = LibvirtBackend.make(uri: "qemu+unix:///system?socket=/nonexistent/libvirt-sock")
        for target in ["", "a/b", "web\n01", String(repeating: "x", count: 256)] {
            #expect(throws: SnapshotBackendError.self) { try backend.validate(target: target) }
        }
        #expect(throws: Never.self) { try backend.validate(target: "web-01.example") }
    }
}

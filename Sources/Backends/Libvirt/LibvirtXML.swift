import Foundation

#if canImport(FoundationXML)
    import FoundationXML
#endif

/// One `<disk>` of a domain's definition, as far as snapshots care.
struct DomainDisk: Sendable, Hashable {
    /// `disk`, `cdrom`, `floppy` or `lun`.
    var device: String
    /// Where its data lives: `file`, `block`, `network`, `volume`.
    var type: String
    /// The guest's name of the disk (`vda`), the one snapshots and block jobs use.
    var target: String
    /// The driver's format (`qcow2`, `raw`), when given.
    var format: String?
    /// The file (or block device) the guest writes to, then the files below it, top first; empty without a source.
    var chain: [String]
    var isReadOnly: Bool
    /// The disk's own `snapshot=` default (`no`, `internal`, `external`), when set.
    var snapshotPolicy: String?

    /// The file the guest writes to.
    var activeFile: String? { chain.first }

    /// Whether a snapshot takes this disk: a writable hard disk not excluded by its definition.
    var isSnapshotted: Bool {
        device == "disk" && !isReadOnly && snapshotPolicy != "no"
    }
}

/// What snapcron reads from a snapshot's XML.
struct SnapshotRecord: Sendable, Hashable {
    var name: String
    var description: String
    var createdAt: Date?
    /// Each disk snapshotted externally and its overlay (the file created at the snapshot, holding what the guest
    /// wrote since).
    var overlays: [Overlay]

    struct Overlay: Sendable, Hashable {
        var disk: String
        var file: String
    }
}

/// Reading and writing the XML documents libvirt exchanges (domain definitions, snapshot definitions).
enum LibvirtXML {
    /// The disks of a domain definition, with the backing chain libvirt reports for a running domain.
    static func disks(inDomain xml: String) throws(LibvirtProblem) -> [DomainDisk] {
        let document = try parse(xml, what: "domain definition")
        let disks = (try? document.nodes(forXPath: "/domain/devices/disk")) ?? []
        return disks.compactMap { node in
            guard let disk = node as? XMLElement else { return nil }
            let target = disk.child("target")?.attribute("dev")
            guard let target else { return nil }
            var chain: [String] = []
            var layer: XMLElement? = disk
            while let current = layer, let file = current.child("source").flatMap(Self.sourcePath) {
                chain.append(file)
                layer = current.child("backingStore")
            }
            return DomainDisk(
                device: disk.attribute("device") ?? "disk", type: disk.attribute("type") ?? "file", target: target,
                format: disk.child("driver")?.attribute("type"), chain: chain,
                isReadOnly: disk.child("readonly") != nil, snapshotPolicy: disk.attribute("snapshot"))
        }
    }

    /// The name, description, creation time and external overlays of a snapshot definition.
    static func snapshot(_ xml: String) throws(LibvirtProblem) -> SnapshotRecord {
        let document = try parse(xml, what: "snapshot definition")
        guard let root = document.rootElement(), root.name == "domainsnapshot" else {
            throw .permanent("libvirt returned a snapshot definition without <domainsnapshot>")
        }
        let created = root.child("creationTime")?.stringValue.flatMap { Double($0.trimmed) }
        var overlays: [SnapshotRecord.Overlay] = []
        // Only the snapshot's own <disks>: the <domain> copy inside it has <disk> elements of its own.
        for case let disk as XMLElement in root.child("disks")?.children ?? [] where disk.name == "disk" {
            guard disk.attribute("snapshot") == "external", let name = disk.attribute("name"),
                let file = disk.child("source").flatMap(Self.sourcePath)
            else { continue }
            overlays.append(SnapshotRecord.Overlay(disk: name, file: file))
        }
        return SnapshotRecord(
            name: root.child("name")?.stringValue?.trimmed ?? "",
            description: root.child("description")?.stringValue ?? "",
            createdAt: created.map { Date(timeIntervalSince1970: $0) }, overlays: overlays)
    }

    /// How one disk takes part in a snapshot.
    enum DiskPlan: Hashable {
        /// An external snapshot: a new qcow2 overlay at `overlay` on top of the disk's current file.
        case external(disk: String, overlay: String)
        /// Left out of the snapshot.
        case excluded(disk: String)
    }

    /// A `<domainsnapshot>` definition; `disks` nil leaves every disk to libvirt (internal snapshots).
    static func snapshotDefinition(name: String, description: String, disks: [DiskPlan]?) -> String {
        var xml = "<domainsnapshot>\n  <name>\(escape(name))</name>\n"
        xml += "  <description>\(escape(description))</description>\n"
        if let disks {
            xml += "  <memory snapshot='no'/>\n  <disks>\n"
            for disk in disks {
                switch disk {
                case .external(let target, let overlay):
                    xml += "    <disk name='\(escape(target))' snapshot='external' type='file'>"
                    xml += "<driver type='qcow2'/><source file='\(escape(overlay))'/></disk>\n"
                case .excluded(let target):
                    xml += "    <disk name='\(escape(target))' snapshot='no'/>\n"
                }
            }
            xml += "  </disks>\n"
        }
        return xml + "</domainsnapshot>\n"
    }

    /// `text` with XML's five special characters escaped, for element text and quoted attributes alike.
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "'": escaped += "&apos;"
            case "\"": escaped += "&quot;"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    private static func parse(_ xml: String, what: String) throws(LibvirtProblem) -> XMLDocument {
        do {
            return try XMLDocument(xmlString: xml, options: [])
        } catch {
            throw .permanent("libvirt returned a \(what) that is not XML: \(error)")
        }
    }

    /// The path a `<source>` names: a file, a block device, or a storage volume's path when libvirt gives one.
    private static func sourcePath(_ source: XMLElement) -> String? {
        source.attribute("file") ?? source.attribute("dev")
    }
}

extension XMLElement {
    fileprivate func child(_ name: String) -> XMLElement? {
        elements(forName: name).first
    }

    fileprivate func attribute(_ name: String) -> String? {
        attribute(forName: name)?.stringValue
    }
}

extension String {
    fileprivate var trimmed: String { trimmingCharacters(in: .whitespacesAndNewlines) }
}

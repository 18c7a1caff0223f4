public import BackendTypes

/// The `libvirt` backend type: snapshots of libvirt guests (KVM/QEMU) through libvirt's own API. Its backend,
/// `LibvirtBackend`, builds from these settings (`LibvirtBackend+Factory.swift`).
public enum LibvirtBackendDescriptor: BackendDescriptor {
    public static let name = "libvirt"
    public static let settingKeys = ["uri", "mode", "quiesce", "overlay_dir"]
    public static let exampleTarget = "web01"

    public static func readSettings(_ reader: inout SettingsReader, stateDirectory: String) -> (any BackendSettings)? {
        var settings = LibvirtBackendSettings()
        var valid = true
        if let uri = reader.nonEmptyString("uri") {
            if let problem = problem(withURI: uri) {
                reader.error("uri", problem)
                valid = false
            }
            settings.uri = uri
        } else if reader.table["uri"] != nil {
            valid = false
        }
        func choice<Choice>(_ key: String, _ choices: [(String, Choice)]) -> Choice? {
            guard let value = reader.table[key] else { return nil }
            let names = choices.map { "\"\($0.0)\"" }.joined(separator: " or ")
            guard let text = value.string, let choice = choices.first(where: { $0.0 == text }) else {
                reader.error(key, "expected \(names), got \(value)")
                valid = false
                return nil
            }
            return choice.1
        }
        settings.mode = choice("mode", [("disk-only", .diskOnly), ("full", .full)]) ?? settings.mode
        settings.quiesce =
            choice("quiesce", [("auto", .auto), ("always", .always), ("never", .never)]) ?? settings.quiesce
        if let directory = reader.absolutePath("overlay_dir") {
            settings.overlayDirectory = directory
        } else if reader.table["overlay_dir"] != nil {
            valid = false
        }
        // Settings that could only be ignored are refused, so that a config never promises what does not happen.
        if settings.mode == .full, settings.quiesce == .always {
            reader.error(
                "quiesce", "\"always\" needs mode = \"disk-only\"",
                note: "full snapshots save the guest's memory too and never ask its agent to quiesce")
            valid = false
        }
        if settings.mode == .full, settings.overlayDirectory != nil {
            reader.error(
                "overlay_dir", "is used only by mode = \"disk-only\"",
                note: "full snapshots are internal: they live inside the guest's qcow2 disks")
            valid = false
        }
        return valid ? settings : nil
    }

    public static func targetRule(for backend: BackendConfig, stateDirectory: String) -> TargetRule { .libvirt }

    /// Why `uri` cannot be a libvirt connection URI (`driver[+transport]://[host]/path`), or nil when it may be.
    public static func problem(withURI uri: String) -> String? {
        guard let separator = uri.range(of: "://"), !uri[..<separator.lowerBound].isEmpty,
            uri[..<separator.lowerBound].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "+") })
        else {
            return "'\(uri)' is not a libvirt connection URI such as \"qemu:///system\""
        }
        if uri.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
            return "'\(uri)' contains a control character"
        }
        return nil
    }
}

/// The settings of a `libvirt` backend (`[backends.NAME] type = "libvirt"`), checked when the config is read.
public struct LibvirtBackendSettings: BackendSettings {
    /// What a snapshot holds.
    public enum Mode: String, Sendable, Hashable {
        /// External snapshots of the disks only: each disk gets a qcow2 overlay, any disk format works.
        case diskOnly = "disk-only"
        /// Internal snapshots of the disks and, for a running guest, its memory; every disk must be qcow2.
        case full
    }

    /// Whether the guest agent is asked to freeze the guest's filesystems during a disk-only snapshot.
    public enum Quiesce: String, Sendable, Hashable {
        /// Quiesce when the agent answers, else take a crash-consistent snapshot (and log it).
        case auto
        /// Quiesce or fail the run.
        case always
        /// Never ask the agent.
        case never
    }

    /// The connection URI (`uri`, default `qemu:///system`).
    public var uri: String
    public var mode: Mode
    public var quiesce: Quiesce
    /// Where disk-only overlays go (`overlay_dir`); nil places each beside its disk.
    public var overlayDirectory: String?

    public static let defaultURI = "qemu:///system"

    public init(
        uri: String = defaultURI, mode: Mode = .diskOnly, quiesce: Quiesce = .auto, overlayDirectory: String? = nil
    ) {
        self.uri = uri
        self.mode = mode
        self.quiesce = quiesce
        self.overlayDirectory = overlayDirectory
    }
}

extension BackendType {
    /// Snapshots of libvirt guests through libvirt's API.
    public static let libvirt = BackendType(LibvirtBackendDescriptor.self)
}

extension BackendConfig {
    /// The settings of a `libvirt` backend; nil for other types (or when they could not be read).
    public var libvirt: LibvirtBackendSettings? {
        get { typedSettings as? LibvirtBackendSettings }
        set { typedSettings = newValue }
    }
}

extension TargetRule {
    /// `libvirt`: a domain name or UUID: not empty, at most 255 characters, no `/` (libvirt refuses it in names)
    /// and no control character.
    public static let libvirt = TargetRule { target in
        guard !target.isEmpty else { return "empty target (expected a libvirt domain name or UUID)" }
        guard target.utf8.count <= 255 else { return "'\(target.prefix(40))...' is longer than 255 bytes" }
        guard !target.contains("/") else { return "'\(target)' contains '/', which no libvirt domain name has" }
        guard !target.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
            return "target contains a control character"
        }
        return nil
    }
}

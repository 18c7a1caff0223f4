public import BackendTypes

/// The `local` backend type: copies of disk images or directories into an image store on this machine (the embedded
/// default). Its backend, `LocalBackend`, builds from these settings (`LocalBackend+Factory.swift`).
public enum LocalBackendDescriptor: BackendDescriptor {
    public static let name = "local"
    public static let settingKeys = ["images_dir", "reflink"]
    public static let exampleTarget = "/var/lib/libvirt/images/web.qcow2"
    public static let targetsAreAbsolutePaths = true

    public static func readSettings(_ reader: inout SettingsReader, stateDirectory: String) -> (any BackendSettings)? {
        let directory = reader.absolutePath("images_dir") ?? defaultImagesDirectory(stateDirectory: stateDirectory)
        return LocalBackendSettings(imagesDirectory: directory, reflink: reader.boolean("reflink") ?? true)
    }

    public static func targetRule(for backend: BackendConfig, stateDirectory: String) -> TargetRule {
        .local(imagesDirectory: settings(of: backend, stateDirectory: stateDirectory).imagesDirectory)
    }

    /// The settings of a `local` backend; without its own, images go to `<state_dir>/images`.
    public static func settings(of backend: BackendConfig, stateDirectory: String) -> LocalBackendSettings {
        backend.local ?? LocalBackendSettings(imagesDirectory: defaultImagesDirectory(stateDirectory: stateDirectory))
    }

    /// `<state_dir>/images`.
    public static func defaultImagesDirectory(stateDirectory: String) -> String {
        stateDirectory.hasSuffix("/") ? stateDirectory + "images" : stateDirectory + "/images"
    }

    /// The built-in backend `local` of a daemon without a config file: images under `<state_dir>/images`.
    public static func builtIn(stateDirectory: String) -> BackendConfig {
        let settings = LocalBackendSettings(imagesDirectory: defaultImagesDirectory(stateDirectory: stateDirectory))
        return BackendConfig(name: "local", type: .local, typedSettings: settings)
    }
}

/// The settings of a `local` backend.
public struct LocalBackendSettings: BackendSettings {
    /// Where images are stored; defaults to `<state_dir>/images`.
    public var imagesDirectory: String
    /// Clone with a reflink where the filesystem can; false copies the data so images share no extents with
    /// the disk.
    public var reflink: Bool

    public init(imagesDirectory: String, reflink: Bool = true) {
        self.imagesDirectory = imagesDirectory
        self.reflink = reflink
    }
}

extension BackendType {
    /// Copies files or directories into the image store under the state dir.
    public static let local = BackendType(LocalBackendDescriptor.self)
}

extension BackendConfig {
    /// The settings of a `local` backend; nil for other types.
    public var local: LocalBackendSettings? {
        get { typedSettings as? LocalBackendSettings }
        set { typedSettings = newValue }
    }
}

extension TargetRule {
    /// `local`: an absolute path without `.` or `..` components that is neither inside the image store nor
    /// contains it.
    public static func local(imagesDirectory: String) -> TargetRule {
        var store = imagesDirectory
        while store.count > 1 && store.hasSuffix("/") { store.removeLast() }
        return TargetRule { [store] target in
            guard !target.isEmpty else { return "target is empty; expected an absolute path" }
            guard target.hasPrefix("/") else { return "target must be an absolute path" }
            guard !target.utf8.contains(0), !target.utf8.contains(UInt8(ascii: "\n")) else {
                return "target contains a NUL or newline character"
            }
            let components = target.split(separator: "/", omittingEmptySubsequences: true)
            if components.contains("..") || components.contains(".") {
                return "target must not contain '.' or '..' components"
            }
            let path = "/" + components.joined(separator: "/")
            if path == store || path.hasPrefix(store + "/") { return "target lies inside the image store \(store)" }
            if path == "/" || store.hasPrefix(path + "/") { return "target contains the image store \(store)" }
            return nil
        }
    }
}

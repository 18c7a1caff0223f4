public import BackendTypes
import Foundation
public import LocalDescriptor
public import SnapshotBackend

extension LocalBackendDescriptor: BackendFactory {
    /// A local backend on its image store, which it makes (mode 0750) if missing.
    public static func makeBackend(_ backend: BackendConfig, context: BackendContext) throws -> any SnapshotBackend {
        // The same settings as its target rule in `snapcronctl check`.
        let settings = settings(of: backend, stateDirectory: context.stateDirectory)
        let directory = settings.imagesDirectory
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o750])
        } catch {
            throw BackendSetupError("cannot create \(directory): \(error.localizedDescription)")
        }
        var copyHook: LocalBackend.CopyHook?
        if let copyPoint = context.copyPoint { copyHook = { _ in copyPoint() } }
        return LocalBackend(
            configuration: LocalBackend.Configuration(
                name: backend.name, imagesDirectory: directory, allowReflink: settings.reflink, copyHook: copyHook))
    }
}

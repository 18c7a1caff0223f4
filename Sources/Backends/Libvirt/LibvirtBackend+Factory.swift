public import BackendTypes
public import LibvirtDescriptor
public import SnapshotBackend

extension LibvirtBackendDescriptor: BackendFactory {
    /// A libvirt backend; its connection opens at the first call, so snapcrond starts while libvirtd is down.
    public static func makeBackend(_ backend: BackendConfig, context: BackendContext) throws -> any SnapshotBackend {
        guard let settings = backend.libvirt else {
            throw BackendSetupError("its settings could not be read")  // the config reader reported why
        }
        return LibvirtBackend(name: backend.name, settings: settings)
    }
}

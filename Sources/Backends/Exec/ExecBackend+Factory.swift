public import BackendTypes
public import ExecDescriptor
public import SnapshotBackend

extension ExecBackendDescriptor: BackendFactory {
    /// An exec backend from its checked settings; its secret, if any, reaches the commands only as a file path in
    /// `SNAPCRON_API_KEY_FILE`, never as a value.
    public static func makeBackend(_ backend: BackendConfig, context: BackendContext) throws -> any SnapshotBackend {
        guard let settings = backend.exec else {
            throw BackendSetupError("its settings could not be read")  // the config reader reported why
        }
        var environment = settings.environment
        if let credential = backend.settings["api_key_credential"]?.string {
            guard let directory = context.environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty else {
                throw BackendSetupError(
                    "api_key_credential '\(credential)' needs $CREDENTIALS_DIRECTORY "
                        + "(LoadCredential=\(credential):PATH in the systemd unit)")
            }
            environment["SNAPCRON_API_KEY_FILE"] = directory + "/" + credential
        } else if let file = backend.settings["api_key_file"]?.string {
            environment["SNAPCRON_API_KEY_FILE"] = file
        }
        let configuration = ExecBackend.Configuration(
            name: backend.name, create: settings.create, status: settings.status, list: settings.list,
            delete: settings.delete, imageID: settings.imageID, timeout: settings.timeout,
            transientExitCodes: Set(settings.transientExitCodes.map { Int32($0) }), environment: environment,
            targetPattern: settings.targetPattern)
        return try ExecBackend(configuration: configuration)
    }
}

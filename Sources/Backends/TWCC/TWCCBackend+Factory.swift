public import BackendTypes
public import SnapshotBackend
public import TWCCDescriptor

extension TWCCBackendDescriptor: BackendFactory {
    /// A TWCC backend; its API key comes from `$CREDENTIALS_DIRECTORY` (LoadCredential=) or a private file.
    public static func makeBackend(_ backend: BackendConfig, context: BackendContext) throws -> any SnapshotBackend {
        let key = try APIKey.load(settings: backend.settings, environment: context.environment)
        let configuration = try TWCCBackend.Configuration(
            backend: backend.name, settings: backend.settings, apiKey: key)
        return TWCCBackend(name: backend.name, configuration: configuration)
    }
}

/// The config's values are what this backend reads its settings from.
extension ConfigValue: TWCCSettingValue {}

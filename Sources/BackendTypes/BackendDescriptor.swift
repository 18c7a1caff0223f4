public import SnapshotBackend

/// What the config reader, `snapcronctl check` and the daemon know about one backend type (`type = "local"`): its
/// settings keys and how to read them, and the targets it accepts.
///
/// Each backend type declares its descriptor in its own folder (`Sources/Backends/<Type>/Descriptor`, a module of
/// its own that imports only this one) and adds its factory (``BackendFactory``) in its backend module. The
/// descriptor is pure, no backend code and no network stack: `snapcronctl check` links every descriptor and no
/// backend, and still validates settings and targets exactly as the daemon does. The one list of backend types is
/// `BackendType.all` in the `SnapcronConfig` module.
public protocol BackendDescriptor: Sendable {
    /// The `type = "..."` of its `[backends.NAME]` tables.
    static var name: String { get }
    /// Its own keys, besides `type`, `max_concurrent` and `max_concurrent_creates`, which every type has.
    static var settingKeys: [String] { get }
    /// A target ID of this type for examples in messages (the part after `NAME:`).
    static var exampleTarget: String { get }
    /// Whether every target is an absolute path: the schedule parser then refuses a relative one at once.
    static var targetsAreAbsolutePaths: Bool { get }

    /// Reads and checks the type's keys of one `[backends.NAME]` table (unknown keys are refused before), reporting
    /// every problem to `reader`. Returns the typed settings: nil when they cannot work (the reader says why) or
    /// when the type keeps none (its backend reads ``BackendConfig/settings`` itself).
    static func readSettings(_ reader: inout SettingsReader, stateDirectory: String) -> (any BackendSettings)?

    /// The rule for the targets of `backend`, from its settings alone; its backend applies the same rule.
    static func targetRule(for backend: BackendConfig, stateDirectory: String) -> TargetRule
}

extension BackendDescriptor {
    public static var targetsAreAbsolutePaths: Bool { false }
}

/// A backend type whose backend module is linked into this program: it builds live backends.
///
/// Each backend module declares this conformance of its own descriptor (`extension LocalBackendDescriptor:
/// BackendFactory` in `Sources/Backends/Local`), so the daemon, which links the backends, finds the factory
/// through ``BackendType/factory``, and `snapcronctl`, which does not, reads and checks the same config without it.
public protocol BackendFactory: BackendDescriptor {
    /// Builds the backend that `backend` configures; throws what is wrong, worded for the operator (the caller
    /// adds `backend NAME: `).
    static func makeBackend(_ backend: BackendConfig, context: BackendContext) throws -> any SnapshotBackend
}

/// What building a backend may need besides its own config.
public struct BackendContext: Sendable {
    /// The daemon's state directory (default places, such as the local image store, are under it).
    public var stateDirectory: String
    /// The daemon's environment: `$CREDENTIALS_DIRECTORY` for secrets handed over by systemd.
    public var environment: [String: String]
    /// Crash tests freeze a local copy here, on its thread, before each extent it copies (nil in production).
    public var copyPoint: (@Sendable () -> Void)?

    public init(
        stateDirectory: String, environment: [String: String], copyPoint: (@Sendable () -> Void)? = nil
    ) {
        self.stateDirectory = stateDirectory
        self.environment = environment
        self.copyPoint = copyPoint
    }
}

/// A failure to build a backend, worded for the operator.
public struct BackendSetupError: Error, CustomStringConvertible {
    public var description: String

    public init(_ description: String) { self.description = description }
}

/// The typed settings of one backend, as its type's descriptor read them.
public protocol BackendSettings: Sendable, Hashable {}

/// A backend type as a value: `.local`, `.exec`, `.twcc` (each declared beside its descriptor), equal by name.
public struct BackendType: Sendable, Hashable, CustomStringConvertible {
    public let descriptor: any BackendDescriptor.Type

    public init(_ descriptor: any BackendDescriptor.Type) {
        self.descriptor = descriptor
    }

    /// The `type = "..."` name.
    public var name: String { descriptor.name }

    /// The factory of this type, when its backend module is linked into this program (the daemon), else nil.
    public var factory: (any BackendFactory.Type)? { descriptor as? any BackendFactory.Type }

    public var description: String { name }

    public static func == (lhs: BackendType, rhs: BackendType) -> Bool { lhs.name == rhs.name }

    public func hash(into hasher: inout Hasher) { hasher.combine(name) }
}

/// One `[backends.NAME]` table, checked by its type's descriptor.
public struct BackendConfig: Sendable, Hashable {
    /// The name targets use: `NAME:ID`.
    public var name: String
    public var type: BackendType
    /// At most this many images created and not yet final at once on this backend (a provider's quota), if set.
    public var maxConcurrent: Int?
    /// At most this many create calls at once on this backend, if set (else the daemon's `max_concurrent_creates`).
    public var maxConcurrentCreates: Int?
    /// The settings its type's descriptor read (see the accessors beside each descriptor, such as `local`); nil
    /// when the type keeps none or they could not be read.
    public var typedSettings: (any BackendSettings)?
    /// Every key of the table except `type`, typed as written, for the backend to read
    /// (e.g. `requests_per_second`, `api_key_credential`, `api_key_file`, `create`).
    public var settings: [String: ConfigValue]

    public init(
        name: String, type: BackendType, maxConcurrent: Int? = nil, typedSettings: (any BackendSettings)? = nil,
        settings: [String: ConfigValue] = [:]
    ) {
        self.name = name
        self.type = type
        self.maxConcurrent = maxConcurrent
        self.typedSettings = typedSettings
        self.settings = settings
    }

    /// The rule for this backend's targets, by its type.
    public func targetRule(stateDirectory: String) -> TargetRule {
        type.descriptor.targetRule(for: self, stateDirectory: stateDirectory)
    }

    public static func == (lhs: BackendConfig, rhs: BackendConfig) -> Bool {
        lhs.name == rhs.name && lhs.type == rhs.type && lhs.maxConcurrent == rhs.maxConcurrent
            && lhs.maxConcurrentCreates == rhs.maxConcurrentCreates
            && lhs.settings == rhs.settings
            && lhs.typedSettings.map { AnyHashable($0) } == rhs.typedSettings.map { AnyHashable($0) }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(type)
        hasher.combine(maxConcurrent)
        hasher.combine(maxConcurrentCreates)
        hasher.combine(settings)
        hasher.combine(typedSettings.map { AnyHashable($0) })
    }
}

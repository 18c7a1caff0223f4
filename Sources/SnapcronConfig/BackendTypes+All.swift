public import BackendTypes
import ExecDescriptor
import LibvirtDescriptor
import LocalDescriptor
import TWCCDescriptor

extension BackendType {
    /// Every backend type, the one list: `type = "..."` of a `[backends.NAME]` table names one of these. A new
    /// backend type brings its folder under `Sources/Backends` (descriptor and backend module, see
    /// docs/architecture.md) and one entry here.
    public static let all: [BackendType] = [.local, .exec, .twcc, .libvirt]

    /// The type named `name`, if any.
    public init?(named name: String) {
        guard let type = Self.all.first(where: { $0.name == name }) else { return nil }
        self = type
    }
}

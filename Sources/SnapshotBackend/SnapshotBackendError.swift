/// A failed backend call: what failed on what, and whether trying again may help.
///
/// Messages are lowercase without a final period and never contain secrets. The description reads like
/// `local create failed for /var/lib/lab.qcow2: target does not exist (permanent)`.
public struct SnapshotBackendError: Error, Sendable, CustomStringConvertible {
    /// The backend call that failed. A struct of static lets so backends may add their own.
    public struct Operation: Hashable, Sendable, CustomStringConvertible {
        public var name: String

        public init(_ name: String) {
            self.name = name
        }

        public static let create = Operation("create")
        public static let status = Operation("status")
        public static let list = Operation("list")
        public static let delete = Operation("delete")
        public static let validate = Operation("validate")

        public var description: String { name }
    }

    /// The configured name of the backend that failed, e.g. `local`.
    public var backend: String
    /// The call that failed.
    public var operation: Operation
    /// The target the call was about, if any.
    public var target: String?
    /// The image the call was about, if any.
    public var image: ImageRef?
    /// What went wrong, lowercase, no final period, no secrets.
    public var message: String
    /// `true` when the same call may succeed later (network, timeouts, 429, 5xx, busy);
    /// `false` when retrying cannot help (bad target, permission, not supported).
    public var isTransient: Bool
    /// Where the error was made, for debugging.
    public var file: String
    public var line: Int

    public init(
        backend: String,
        operation: Operation,
        target: String? = nil,
        image: ImageRef? = nil,
        message: String,
        isTransient: Bool,
        file: String = #fileID,
        line: Int = #line
    ) {
        self.backend = backend
        self.operation = operation
        self.target = target
        self.image = image
        self.message = message
        self.isTransient = isTransient
        self.file = file
        self.line = line
    }

    /// A failure that retrying cannot fix.
    public static func permanent(
        backend: String,
        _ operation: Operation,
        target: String? = nil,
        image: ImageRef? = nil,
        _ message: String,
        file: String = #fileID,
        line: Int = #line
    ) -> SnapshotBackendError {
        SnapshotBackendError(
            backend: backend, operation: operation, target: target, image: image, message: message,
            isTransient: false, file: file, line: line)
    }

    /// A failure that may go away when the call is retried later.
    public static func transient(
        backend: String,
        _ operation: Operation,
        target: String? = nil,
        image: ImageRef? = nil,
        _ message: String,
        file: String = #fileID,
        line: Int = #line
    ) -> SnapshotBackendError {
        SnapshotBackendError(
            backend: backend, operation: operation, target: target, image: image, message: message,
            isTransient: true, file: file, line: line)
    }

    public var description: String {
        var subject = ""
        if let image {
            subject = " for image \(image.id)"
            if let target { subject += " of \(target)" }
        } else if let target {
            subject = " for \(target)"
        }
        return "\(backend) \(operation) failed\(subject): \(message) (\(isTransient ? "transient" : "permanent"))"
    }
}

import Foundation

/// A backend's identifier for one image, opaque to everyone but that backend.
public struct ImageRef: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The backend's image id (a cloud image UUID, a local image name, ...).
    public var id: String

    public init(id: String) {
        self.id = id
    }

    public var description: String { id }
}

/// Where an image is in its life, as a backend reports it.
public enum ImageState: Hashable, Sendable, CustomStringConvertible {
    /// Accepted, work not started yet.
    case queued
    /// Data is being written.
    case saving
    /// Complete and usable.
    case active
    /// Failed for good; the reason is for people and logs.
    case error(String)
    /// Deleted, or never known to the backend.
    case gone

    /// Whether the image can no longer change state by itself (polling may stop).
    public var isFinal: Bool {
        switch self {
        case .queued, .saving: false
        case .active, .error, .gone: true
        }
    }

    /// The stable lowercase name used in storage and JSON: `queued`, `saving`, `active`, `error`, `gone`.
    ///
    /// The error reason is not part of it; store it beside the name (see ``errorReason``).
    public var stringValue: String {
        switch self {
        case .queued: "queued"
        case .saving: "saving"
        case .active: "active"
        case .error: "error"
        case .gone: "gone"
        }
    }

    /// The reason of an `.error` state, `nil` for every other state.
    public var errorReason: String? {
        if case .error(let reason) = self { return reason }
        return nil
    }

    /// Rebuilds a state from its ``stringValue``; `reason` is used only for `error`.
    ///
    /// Returns `nil` for a name that is not one of the five stable names.
    public init?(stringValue: String, reason: String? = nil) {
        switch stringValue {
        case "queued": self = .queued
        case "saving": self = .saving
        case "active": self = .active
        case "error": self = .error(reason ?? "unknown error")
        case "gone": self = .gone
        default: return nil
        }
    }

    public var description: String {
        if case .error(let reason) = self { return "error(\(reason))" }
        return stringValue
    }
}

/// What a backend knows about one image of a target.
public struct ImageInfo: Hashable, Sendable, Identifiable {
    /// The backend's id of the image.
    public var id: ImageRef
    /// The name given at create time.
    public var name: String
    /// The description given at create time.
    public var description: String
    /// The target the image was taken of, as given to `create`.
    public var target: String
    /// When the backend started the image, if it says.
    public var createdAt: Date?
    /// The state at the time of listing.
    public var state: ImageState
    /// The logical size of the image in bytes, if known.
    public var sizeBytes: Int64?

    public init(
        id: ImageRef,
        name: String,
        description: String,
        target: String,
        createdAt: Date?,
        state: ImageState,
        sizeBytes: Int64?
    ) {
        self.id = id
        self.name = name
        self.description = description
        self.target = target
        self.createdAt = createdAt
        self.state = state
        self.sizeBytes = sizeBytes
    }
}

/// What a create returned: the image's id and, when the backend knows it already, its state.
public struct CreatedImage: Hashable, Sendable {
    public var ref: ImageRef
    /// `active` when the image was complete on return; nil when only a status call can tell.
    public var state: ImageState?

    public init(ref: ImageRef, state: ImageState? = nil) {
        self.ref = ref
        self.state = state
    }
}

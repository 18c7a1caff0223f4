/// An error from the snapcron state database.
///
/// Errors are equal when their ``code`` is equal; ``message`` says what failed on what.
public struct SnapcronStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The kind of failure; a struct of static lets so kinds can be added without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case cannotOpen = "cannot open"
            case notASnapcronDatabase = "not a snapcron database"
            case corruptDatabase = "corrupt database"
            case newerSchema = "newer schema"
            case runNotFound = "run not found"
            case imageNotFound = "image not found"
            case illegalTransition = "illegal transition"
            case invalidArgument = "invalid argument"
            case conflict = "conflict"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The file or its directory cannot be opened or created.
        public static let cannotOpen = Code(.cannotOpen)
        /// The file exists but is not SQLite, or is SQLite owned by another program.
        public static let notASnapcronDatabase = Code(.notASnapcronDatabase)
        /// SQLite reports damage (failed integrity check, malformed pages, undecodable rows).
        public static let corruptDatabase = Code(.corruptDatabase)
        /// The file was migrated by a newer snapcron; this one must not touch it.
        public static let newerSchema = Code(.newerSchema)
        /// No run has the given id.
        public static let runNotFound = Code(.runNotFound)
        /// No image has the given id and backend.
        public static let imageNotFound = Code(.imageNotFound)
        /// The requested run or image state change is not allowed from the current state.
        public static let illegalTransition = Code(.illegalTransition)
        /// An argument is out of its domain (e.g. a non-terminal state given to `finishRun`).
        public static let invalidArgument = Code(.invalidArgument)
        /// A row with the same key already exists (e.g. an image recorded by another run).
        public static let conflict = Code(.conflict)

        public var description: String { base.rawValue }
    }

    /// What kind of failure this is.
    public let code: Code
    /// A lowercase sentence naming what failed on what.
    public let message: String
    /// Where the error was created (`#fileID`).
    public let file: String
    /// Where the error was created (`#line`).
    public let line: Int

    /// Creates an error of `code` with a human-readable `message`.
    public init(_ code: Code, _ message: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }

    public var description: String { message }
}

/// An error from the PostgreSQL state store.
///
/// Errors are equal when their ``code`` is equal; ``message`` says what failed on what, never with a password.
public struct PostgresStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The kind of failure; a struct of static lets so kinds can be added without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case invalidURL = "invalid url"
            case cannotConnect = "cannot connect"
            case notASnapcronDatabase = "not a snapcron database"
            case newerSchema = "newer schema"
            case corruptDatabase = "corrupt database"
            case runNotFound = "run not found"
            case imageNotFound = "image not found"
            case illegalTransition = "illegal transition"
            case invalidArgument = "invalid argument"
            case conflict = "conflict"
            case queryFailed = "query failed"
            case nodeNameInUse = "node name in use"
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The store URL cannot be used (wrong scheme, a password in it, no database).
        public static let invalidURL = Code(.invalidURL)
        /// The server is unreachable or refused the role, its password or the database.
        public static let cannotConnect = Code(.cannotConnect)
        /// The database has tables but no snapcron schema: it belongs to something else.
        public static let notASnapcronDatabase = Code(.notASnapcronDatabase)
        /// A newer snapcron migrated the database; this one must not touch it.
        public static let newerSchema = Code(.newerSchema)
        /// A row holds a value no snapcron writes (an unknown state, say).
        public static let corruptDatabase = Code(.corruptDatabase)
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
        /// The server refused a statement for another reason (a broken constraint, a lost connection).
        public static let queryFailed = Code(.queryFailed)
        /// Another host runs a node of this name, with a live lease.
        public static let nodeNameInUse = Code(.nodeNameInUse)

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

    public init(_ code: Code, _ message: String, file: String = #fileID, line: Int = #line) {
        self.code = code
        self.message = message
        self.file = file
        self.line = line
    }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }

    public var description: String { message }
}

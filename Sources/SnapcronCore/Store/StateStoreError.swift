/// An error from a state store (SQLite or PostgreSQL): one type, so that callers and tests judge both alike.
///
/// Errors are equal when their ``code`` is equal; ``message`` says what failed on what, never with a password.
public struct StateStoreError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The kind of failure; a struct of static lets so kinds can be added without breaking callers.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case cannotOpen = "cannot open"
            case invalidURL = "invalid url"
            case cannotConnect = "cannot connect"
            case notASnapcronDatabase = "not a snapcron database"
            case corruptDatabase = "corrupt database"
            case newerSchema = "newer schema"
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

        /// SQLite: the file or its directory cannot be opened or created.
        public static let cannotOpen = Code(.cannotOpen)
        /// PostgreSQL: the store URL cannot be used (wrong scheme, a password in it, no database).
        public static let invalidURL = Code(.invalidURL)
        /// PostgreSQL: the server is unreachable or refused the role, its password or the database.
        public static let cannotConnect = Code(.cannotConnect)
        /// The file or database holds something else (not SQLite, or tables but no snapcron schema).
        public static let notASnapcronDatabase = Code(.notASnapcronDatabase)
        /// The store reports damage, or a row holds a value no snapcron writes.
        public static let corruptDatabase = Code(.corruptDatabase)
        /// A newer snapcron migrated the store; this one must not touch it.
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
        /// PostgreSQL: the server refused a statement for another reason (a broken constraint, a lost connection).
        public static let queryFailed = Code(.queryFailed)
        /// PostgreSQL: another machine runs a node of this name, with a live lease.
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

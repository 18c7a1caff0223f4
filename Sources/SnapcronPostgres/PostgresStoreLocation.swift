import Foundation

/// Where the store lives: `postgresql://USER@HOST[:PORT]/DATABASE`, read from `[store] url`.
///
/// The password is never part of the URL (a URL ends up in logs, `ps` output and status pages): it comes from a
/// credential or a file, given separately to ``PostgresStateStore/open(location:password:logger:)``.
public struct PostgresStoreLocation: Sendable, Hashable, CustomStringConvertible {
    public var user: String
    public var host: String
    public var port: Int
    public var database: String

    public init(user: String, host: String, port: Int = 5432, database: String) {
        self.user = user
        self.host = host
        self.port = port
        self.database = database
    }

    /// Reads a `postgresql://` (or `postgres://`) URL; throws `.invalidURL` naming what is wrong.
    public init(url: String) throws {
        func invalid(_ reason: String) -> PostgresStoreError {
            PostgresStoreError(.invalidURL, "store url \(Self.redacted(url)): \(reason)")
        }
        guard let components = URLComponents(string: url) else { throw invalid("not a url") }
        guard components.scheme == "postgresql" || components.scheme == "postgres" else {
            throw invalid("the scheme must be postgresql://")
        }
        guard components.password == nil else {
            throw invalid("a password must not be in the url; give it as a credential or a file")
        }
        guard let user = components.user, !user.isEmpty else { throw invalid("no user (postgresql://USER@HOST/DB)") }
        guard let host = components.host, !host.isEmpty else { throw invalid("no host") }
        let database = String(components.path.drop { $0 == "/" })
        guard !database.isEmpty, !database.contains("/") else {
            throw invalid("no database (postgresql://USER@HOST/DB)")
        }
        guard components.query == nil, components.fragment == nil else {
            throw invalid("options after ? or # are not supported yet")
        }
        self.init(user: user, host: host, port: components.port ?? 5432, database: database)
    }

    /// The URL, which never holds a password.
    public var description: String { "postgresql://\(user)@\(host):\(port)/\(database)" }

    /// A URL for an error message, with any password replaced.
    static func redacted(_ url: String) -> String {
        guard var components = URLComponents(string: url), components.password != nil else { return url }
        components.password = "REDACTED"
        return components.string ?? "(unreadable url)"
    }
}

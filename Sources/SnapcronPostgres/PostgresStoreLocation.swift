import Foundation
import SnapcronCore

/// Where the store lives: `postgresql://USER@HOST[:PORT]/DATABASE`, read from `[store] url`.
///
/// The password is never part of the URL (a URL ends up in logs, `ps` output and status pages): it comes from a
/// credential or a file, given separately to ``PostgresStateStore/open(location:password:logger:)``.
public struct PostgresStoreLocation: Sendable, Hashable, CustomStringConvertible {
    public var user: String
    public var host: String
    public var port: Int
    public var database: String
    /// How the connection is encrypted (`?sslmode=`, as libpq spells it).
    public var tls: TLSMode
    /// The CA certificates (PEM) that `verify-full` trusts (`&sslrootcert=`); nil: the system's.
    public var rootCertificates: String?

    /// `sslmode`: libpq's names, of which snapcron takes three.
    public enum TLSMode: String, Sendable, Hashable, CaseIterable {
        /// Plain TCP (the default: a loopback or private-network database).
        case disable
        /// Encrypted; the server's certificate is not checked.
        case require
        /// Encrypted, the certificate checked against the CAs and the host name.
        case verifyFull = "verify-full"
    }

    public init(
        user: String, host: String, port: Int = 5432, database: String, tls: TLSMode = .disable,
        rootCertificates: String? = nil
    ) {
        self.user = user
        self.host = host
        self.port = port
        self.database = database
        self.tls = tls
        self.rootCertificates = rootCertificates
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
        guard components.fragment == nil else { throw invalid("a # part is not allowed") }
        var tls = TLSMode.disable
        var rootCertificates: String?
        for item in components.queryItems ?? [] {
            switch item.name {
            case "sslmode":
                guard let mode = item.value.flatMap(TLSMode.init(rawValue:)) else {
                    let modes = TLSMode.allCases.map(\.rawValue).joined(separator: ", ")
                    throw invalid("sslmode '\(item.value ?? "")' is not one of \(modes)")
                }
                tls = mode
            case "sslrootcert":
                guard let path = item.value, path.hasPrefix("/") else {
                    throw invalid("sslrootcert must be an absolute path to a PEM file")
                }
                rootCertificates = path
            default:
                throw invalid("unknown option '\(item.name)' (known: sslmode, sslrootcert)")
            }
        }
        if rootCertificates != nil && tls != .verifyFull {
            throw invalid("sslrootcert goes with sslmode=verify-full")
        }
        self.init(
            user: user, host: host, port: components.port ?? 5432, database: database, tls: tls,
            rootCertificates: rootCertificates)
    }

    /// The URL, which never holds a password.
    public var description: String {
        var text = "postgresql://\(user)@\(host):\(port)/\(database)"
        if tls != .disable { text += "?sslmode=\(tls.rawValue)" }
        if let rootCertificates { text += "&sslrootcert=\(rootCertificates)" }
        return text
    }

    /// A URL for an error message, without its user and password (parsed or not).
    static func redacted(_ url: String) -> String { SharedStoreSettings.redacted(url) }
}

import ControlProtocol
import Foundation
import Logging
import SnapcronCore
import SnapcronPostgres

#if canImport(Glibc)
    import Glibc
#endif

/// Opens the `[store]` PostgreSQL for a daemon of a cluster: reads the password, names the node, connects,
/// migrates and registers. Every failure is a ``DaemonStartError`` naming the store and why.
enum SharedStoreOpener {
    static func open(
        _ settings: SharedStoreSettings, environment: [String: String], logger: Logger
    ) async throws -> PostgresStateStore {
        let password = try readPassword(settings, environment: environment)
        let host = hostName()
        let node = ClusterNode(
            name: settings.nodeName ?? host, lease: settings.lease, host: host, pid: getpid(),
            version: SnapcronVersion.current)
        do {
            let store = try await PostgresStateStore.open(
                url: settings.url, password: password, logger: logger, node: node)
            logger.info(
                "Cluster store open",
                metadata: [
                    "event": "cluster.joined", "store": "\(store.location)", "node": "\(node.name)",
                    "lease_s": "\(node.lease.components.seconds)",
                ])
            return store
        } catch let error as PostgresStoreError {
            throw DaemonStartError("cannot open the store: \(error.message)")
        } catch {
            throw DaemonStartError("cannot open the store \(settings.url): \(error)")
        }
    }

    /// The password from the credential or the file; nil when neither is given (trust or peer authentication).
    static func readPassword(_ settings: SharedStoreSettings, environment: [String: String]) throws -> String? {
        let path: String
        if let credential = settings.passwordCredential {
            guard let directory = environment["CREDENTIALS_DIRECTORY"], !directory.isEmpty else {
                throw DaemonStartError(
                    "[store] password_credential '\(credential)' needs $CREDENTIALS_DIRECTORY (run under systemd "
                        + "with LoadCredential=\(credential):...)")
            }
            path = directory + "/" + credential
        } else if let file = settings.passwordFile {
            var info = stat()
            if stat(file, &info) == 0, info.st_mode & 0o004 != 0 {
                throw DaemonStartError("[store] password_file '\(file)' is readable by everyone; chmod o-rwx it")
            }
            path = file
        } else {
            return nil
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DaemonStartError("[store] cannot read the password from '\(path)'")
        }
        let password = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .newlines)
        guard !password.isEmpty else { throw DaemonStartError("[store] the password in '\(path)' is empty") }
        return password
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "localhost" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

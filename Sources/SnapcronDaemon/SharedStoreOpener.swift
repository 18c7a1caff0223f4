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
        _ settings: SharedStoreSettings, backends: Set<String>, environment: [String: String], logger: Logger
    ) async throws -> PostgresStateStore {
        let password: String?
        do {
            password = try StorePassword.read(settings, environment: environment)
        } catch {
            throw DaemonStartError(error.description)
        }
        let host = hostName()
        let node = ClusterNode(
            name: settings.nodeName ?? host, lease: settings.lease, host: host, instance: machineID() ?? host,
            pid: getpid(), version: SnapcronVersion.current, backends: backends)
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

    /// This machine's id (systemd's `/etc/machine-id`), nil where there is none.
    static func machineID() -> String? {
        guard let data = FileManager.default.contents(atPath: "/etc/machine-id") else { return nil }
        let id = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        return id.isEmpty ? nil : id
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count) == 0 else { return "localhost" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

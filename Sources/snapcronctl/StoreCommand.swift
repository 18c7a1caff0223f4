import ArgumentParser
import Foundation
import Logging
import SnapcronConfig
import SnapcronCore
import SnapcronPostgres
import SnapcronStore

#if canImport(Glibc)
    import Glibc
#endif

/// `snapcronctl store`: the shared store of a cluster.
struct StoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store", abstract: "Manage the shared PostgreSQL store of a cluster ([store] in the config).",
        subcommands: [StoreMigrateCommand.self, StoreCopyCommand.self])
}

/// `snapcronctl store migrate`: applies the schema steps this snapcron knows, before a rolling upgrade of the nodes
/// (each node also migrates at start). Needs no daemon.
struct StoreMigrateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate", abstract: "Bring the shared store's schema to this snapcron's version.",
        discussion: """
            Reads [store] of the config and its password (password_credential from $CREDENTIALS_DIRECTORY, or \
            password_file), connects and applies the pending schema steps, one transaction each; nodes starting \
            meanwhile wait for it. A store at a newer version than this snapcron knows is refused.
            """)

    @Option(help: "The daemon config (default: \(SnapcronConfig.defaultPath)).")
    var config: String = SnapcronConfig.defaultPath

    @Option(
        help: "A file holding the password, instead of [store]'s source (a password_credential exists only under systemd).")
    var passwordFile: String?

    func run() throws {
        let settings: SnapcronConfig
        do {
            settings = try SnapcronConfig.load(path: config)
        } catch {
            throw StoreCommandFailure("\(error.description)")
        }
        guard let store = settings.store else {
            throw StoreCommandFailure(
                "\(config): no [store] table: this daemon keeps its state in SQLite, which migrates itself at start")
        }
        let location: PostgresStoreLocation
        let password: String?
        do {
            location = try PostgresStoreLocation(url: store.url)
            var source = store
            if let passwordFile {
                source.passwordCredential = nil
                source.passwordFile = passwordFile
            }
            password = try StorePassword.read(source, environment: ProcessInfo.processInfo.environment)
        } catch {
            throw StoreCommandFailure("\(error)")
        }
        var logger = Logger(label: "snapcronctl")
        logger.logLevel = .warning
        let outcome = waitFor { [logger] in
            try await PostgresStateStore.migrate(location: location, password: password, logger: logger)
        }
        switch outcome {
        case .success(let versions) where versions.before == versions.after:
            print("\(location): schema version \(versions.after), nothing to do")
        case .success(let versions):
            print("\(location): schema version \(versions.before) -> \(versions.after)")
        case .failure(let error as PostgresStoreError):
            throw StoreCommandFailure(error.message)
        case .failure(let error):
            throw StoreCommandFailure("\(location): \(error)")
        }
    }


}

/// Runs `body` to its end from a synchronous command.
private func waitFor<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> Result<T, any Error> {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task.detached {
        do {
            box.result = .success(try await body())
        } catch {
            box.result = .failure(error)
        }
        done.signal()
    }
    done.wait()
    return box.result!
}

/// `snapcronctl store copy --from sqlite:PATH --to postgresql://...`: moves a node's history into a new cluster
/// store. The daemon must be stopped (its state directory lock is checked).
struct StoreCopyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy", abstract: "Copy a SQLite state database into a new, empty PostgreSQL store.",
        discussion: """
            Copies every run, image, job state and hook result in one transaction, keeping run ids and the \
            installation id (image markers carry it). Unfinished runs go over without an owner: the first node to \
            start takes them over. Stop snapcrond first; the target store must be empty (it is migrated first).
            """)

    @Option(name: .customLong("from"), help: "sqlite:PATH of the state database, e.g. sqlite:/var/lib/snapcron/state.db")
    var source: String

    @Option(name: .customLong("to"), help: "The PostgreSQL store: postgresql://USER@HOST[:PORT]/DATABASE[?sslmode=...]")
    var target: String

    @Option(help: "A file holding the PostgreSQL password (not world-readable).")
    var passwordFile: String?

    func run() throws {
        guard source.hasPrefix("sqlite:"), source.count > "sqlite:".count else {
            throw StoreCommandFailure("--from must be sqlite:PATH, got '\(source)'")
        }
        let path = String(source.dropFirst("sqlite:".count))
        guard FileManager.default.fileExists(atPath: path) else {
            throw StoreCommandFailure("no such file '\(path)'")
        }
        try Self.checkDaemonStopped(stateDirectory: (path as NSString).deletingLastPathComponent)
        let export: StoreExport
        do {
            let database = try SnapcronDatabase(path: path)
            export = try database.exportAll()
            try database.close()
        } catch {
            throw StoreCommandFailure("cannot read \(path): \(error)")
        }
        let location: PostgresStoreLocation
        let password: String?
        do {
            location = try PostgresStoreLocation(url: target)
            var settings = SharedStoreSettings(url: target)
            settings.passwordFile = passwordFile
            password = try StorePassword.read(settings, environment: [:])
        } catch {
            throw StoreCommandFailure("\(error)")
        }
        var logger = Logger(label: "snapcronctl")
        logger.logLevel = .warning
        let outcome = waitFor { [logger] in
            let store = try await PostgresStateStore.open(location: location, password: password, logger: logger)
            do {
                try await store.importAll(export)
            } catch {
                await store.close()
                throw error
            }
            await store.close()
        }
        switch outcome {
        case .success:
            print(
                "copied \(export.runs.count) runs, \(export.images.count) images, \(export.jobs.count) job states and "
                    + "\(export.hookResults.count) hook results from \(path) to \(location)")
        case .failure(let error as PostgresStoreError):
            throw StoreCommandFailure(error.message)
        case .failure(let error):
            throw StoreCommandFailure("\(location): \(error)")
        }
    }

    /// Refuses while a daemon holds the state directory's lock (it would go on writing what is being copied).
    static func checkDaemonStopped(stateDirectory: String) throws {
        let lockPath = stateDirectory + "/snapcrond.lock"
        let descriptor = open(lockPath, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return }  // no lock file: no daemon ever ran here
        defer { close(descriptor) }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let holder = (try? String(contentsOfFile: lockPath, encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            throw StoreCommandFailure(
                "snapcrond is running on \(stateDirectory) (pid \(holder)): stop it first (systemctl stop snapcron)")
        }
        flock(descriptor, LOCK_UN)
    }
}

/// The answer of a task, handed to the waiting thread (written once, before the semaphore is signalled).
private final class ResultBox<T: Sendable>: @unchecked Sendable {
    var result: Result<T, any Error>?
}

/// A store command's failure: the message, and exit status 1.
struct StoreCommandFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = "snapcronctl store: \(description)" }
}
